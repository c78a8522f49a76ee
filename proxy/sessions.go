package proxy

import (
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// Why a connection was closed on a change of its node's health.
const (
	EndNodeDown  pipe.End = "node_down"  // checks.on_marked_down: close
	EndMovedBack pipe.End = "moved_back" // checks.on_marked_up: move_back
)

// closeCodes is the MQTT 5.0 DISCONNECT reason code each close mqgate
// decides sends the client (the README's table of closes). The idle limit
// (0x8D) and max_packet_size (0x95) are the pipe's own (pipe.Goodbye).
var closeCodes = map[pipe.End]mqtt.ReasonCode{
	EndClosedByAdmin: mqtt.AdministrativeAction, // 0x98
	EndTakenOver:     mqtt.SessionTakenOver,     // 0x8E, as a broker does [MQTT-3.1.4-3]
	EndDrained:       mqtt.UseAnotherServer,     // 0x9C: its node is gone; mqgate sends it to another
	EndNodeDown:      mqtt.UseAnotherServer,     // 0x9C
	EndMovedBack:     mqtt.UseAnotherServer,     // 0x9C
	EndRebalanced:    mqtt.UseAnotherServer,     // 0x9C
	EndRouteRemoved:  mqtt.ServerMoved,          // 0x9D: its route is gone for good
	EndShutdown:      mqtt.ServerShuttingDown,   // 0x8B
}

// goodbye is what a close for reason sends a client of the given level
// before its connection is closed at a packet boundary: a 5.0 DISCONNECT
// with the reason's code (and, for 0x9C and 0x9D, the configured
// stream_proxy.server_reference); nothing before 5.0, where only clients
// send DISCONNECT.
func (s *Server) goodbye(reason pipe.End, level byte) []byte {
	if level != mqtt.Level5 {
		return nil
	}
	code, ok := closeCodes[reason]
	if !ok {
		code = mqtt.AdministrativeAction
	}
	var ref string
	if code == mqtt.UseAnotherServer || code == mqtt.ServerMoved {
		ref = s.snap.Load().cfg.StreamProxy.ServerReference
	}
	return mqtt.AppendServerDisconnect(nil, code, ref)
}

// nodeChanged acts on a change of a node's health as its upstream's checks
// ask: on_marked_down closes the node's connections, on_marked_up
// move_back moves back the connections that belong on it. The health
// checker calls it in a goroutine of its own.
func (s *Server) nodeChanged(st health.Status) {
	up, node := s.snap.Load().node(st.Upstream, st.Addr)
	if up == nil || up.cfg.Checks == nil || up.health[node].Healthy() != st.Healthy {
		return // gone, unchecked, or changed again since
	}
	switch checks := up.cfg.Checks; {
	case !st.Healthy && checks.OnMarkedDown == config.MarkedDownClose:
		victims := s.matching(ConnFilter{Upstream: st.Upstream, Node: st.Addr})
		for _, lc := range victims {
			lc.close(EndNodeDown)
		}
		if len(victims) > 0 {
			s.log.Info("closed the connections of an unhealthy node", "upstream", st.Upstream, "node", st.Addr, "count", len(victims))
		}
	case st.Healthy && !st.OnTrial && checks.OnMarkedUp == config.MarkedUpMoveBack:
		// A node on trial has not proven itself yet: moving clients
		// back to it could close working connections for nothing.
		// A paced rebalance at rebalance.rate (or the upstream's own
		// checks.move_back_rate): the Admin API and /status.json see
		// it and can pause or cancel it.
		rate := s.snap.Load().cfg.RebalanceSettings().Rate
		if checks.MoveBackRate > 0 {
			rate = checks.MoveBackRate
		}
		_, _ = s.rebalance(st.Upstream, ReasonMoveBack, rate, EndMovedBack)
	}
}

// node finds the upstream with id and the index of its node addr.
func (snap *snapshot) node(id, addr string) (*upstream, int) {
	for _, up := range snap.upstreams {
		if up.cfg.ID != id {
			continue
		}
		for i, a := range up.addrs {
			if a == addr {
				return up, i
			}
		}
	}
	return nil, 0
}
