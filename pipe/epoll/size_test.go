package epoll

import (
	"testing"
	"unsafe"

	"github.com/mqgate/mqgate/internal/sizeclass"
)

// TestConnSize keeps the state of an idle pair in the 128-byte size class:
// a field more moves every idle pair to 144 bytes.
func TestConnSize(t *testing.T) {
	const budget = 128
	if got := sizeclass.Of[Conn](); got > budget {
		t.Errorf("a Conn of %d bytes takes a %d-byte slot, want at most %d: it is the cost of every idle pair",
			unsafe.Sizeof(Conn{}), got, budget)
	}
}

// TestWSInSize keeps what a WebSocket pair adds to its loop (its frame
// state, beside the 128-byte Conn) in the 160-byte size class.
func TestWSInSize(t *testing.T) {
	const budget = 160
	if got := sizeclass.Of[wsIn](); got > budget {
		t.Errorf("a wsIn of %d bytes takes a %d-byte slot, want at most %d: it is the cost of every idle ws pair",
			unsafe.Sizeof(wsIn{}), got, budget)
	}
}
