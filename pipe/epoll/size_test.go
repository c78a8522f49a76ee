package epoll

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps the state of an idle pair within its size class.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(Conn{}); got > 128 {
		t.Errorf("Conn is %d bytes, want at most 128: it is the cost of every idle pair", got)
	}
}
