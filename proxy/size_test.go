package proxy

import (
	"testing"
	"unsafe"
)

// TestLiveConnSize keeps the one heap object of an idle connection in an
// event loop (besides the loop's own pair) within its size class: 768
// bytes. (The connection index fitted in main's 704-byte class; the access
// log's listener, upstream, refusal and source-address fields took it to
// 752 bytes.)
func TestLiveConnSize(t *testing.T) {
	if got := unsafe.Sizeof(liveConn{}); got > 768 {
		t.Errorf("liveConn is %d bytes, want at most 768: it is the cost of every idle connection", got)
	}
}
