package proxy

import (
	"testing"
	"unsafe"

	"github.com/mqgate/mqgate/internal/sizeclass"
)

// TestLiveConnSize keeps the one heap object of an idle connection in an
// event loop (besides the loop's own pair, pipe/epoll's TestConnSize) in
// the 416-byte size class, where main had it at 704: the variables
// (vars.Set) live in connPath for the stages up to the dial, the record's
// start is 8 bytes, its route a pointer and its node liveConn's, and what
// only some connections have is behind one pointer each (goPair for the
// goroutine path, moreIdentity for a PROXY header, a proxy in front or a
// rewritten client id). More than its 16 spare bytes moves every idle
// connection to 448 bytes: make room first.
func TestLiveConnSize(t *testing.T) {
	const budget = 416
	if got := sizeclass.Of[liveConn](); got > budget {
		t.Errorf("a liveConn of %d bytes takes a %d-byte slot, want at most %d: it is the cost of every idle connection",
			unsafe.Sizeof(liveConn{}), got, budget)
	}
}
