package pipe

import (
	"testing"
	"unsafe"

	"github.com/mqgate/mqgate/internal/sizeclass"
)

// TestParkConnSize keeps a parked connection's socket state in the 160-byte
// size class: a TLS or WebSocket pair holds two of them while idle, so a
// field more (or one placed where it opens a gap) moves every idle parked
// pair to two 176-byte slots.
func TestParkConnSize(t *testing.T) {
	const budget = 160
	if got := sizeclass.Of[ParkConn](); got > budget {
		t.Errorf("a ParkConn of %d bytes takes a %d-byte slot, want at most %d: two are the cost of every idle TLS or WebSocket pair",
			unsafe.Sizeof(ParkConn{}), got, budget)
	}
}
