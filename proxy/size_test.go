package proxy

import (
	"testing"
	"unsafe"

	"github.com/mqgate/mqgate/internal/sizeclass"
)

// TestLiveConnSize keeps the one heap object of an idle connection in an
// event loop (besides the loop's own pair, pipe/epoll's TestConnSize) in
// the 512-byte size class: the largest without the allocator's 8-byte
// header, and 192 bytes less than the 704 it took with the variables
// (vars.Set, now in connPath) and a time.Time start in the record. A field
// more moves every idle connection to 576 bytes: make room first.
func TestLiveConnSize(t *testing.T) {
	const budget = 512
	if got := sizeclass.Of[liveConn](); got > budget {
		t.Errorf("a liveConn of %d bytes takes a %d-byte slot, want at most %d: it is the cost of every idle connection",
			unsafe.Sizeof(liveConn{}), got, budget)
	}
}
