package proxy

import (
	"testing"
	"unsafe"
)

// TestLiveConnSize keeps the one heap object of an idle connection in an
// event loop (besides the loop's own pair) within its size class: 704
// bytes, as main had it before the connection index.
func TestLiveConnSize(t *testing.T) {
	if got := unsafe.Sizeof(liveConn{}); got > 704 {
		t.Errorf("liveConn is %d bytes, want at most 704: it is the cost of every idle connection", got)
	}
}
