package proxy

import "github.com/mqgate/mqgate/health"

// Health returns the health of every node of the current configuration's
// upstreams, by upstream id and address.
func (s *Server) Health() []health.Status { return s.health.Statuses() }
