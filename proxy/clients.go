package proxy

import (
	"sync"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/pipe"
)

// EndTakenOver: the connection was closed because its client id connected
// again (on_duplicate_client_id: keep_newest).
const EndTakenOver pipe.End = "taken_over"

// clientKey is a client id as a broker cluster sees it: ids are unique per
// upstream, not across them.
type clientKey struct{ upstream, clientID string }

// clientRegistry maps client ids to their live connection for
// on_duplicate_client_id.
type clientRegistry struct {
	mu sync.Mutex
	m  map[clientKey]*liveConn
}

// claim registers lc for k under mode. It returns the connection to close
// (keep_newest), or ok false when lc must be refused (keep_oldest).
func (r *clientRegistry) claim(k clientKey, lc *liveConn, mode string) (older *liveConn, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[clientKey]*liveConn)
	}
	older = r.m[k]
	if older != nil && mode == config.DuplicateKeepOldest {
		return nil, false
	}
	r.m[k] = lc
	return older, true
}

// release forgets lc, unless a newer connection took its place.
func (r *clientRegistry) release(k clientKey, lc *liveConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[k] == lc {
		delete(r.m, k)
	}
}
