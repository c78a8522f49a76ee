package proxy

import "testing"

// TestPrereadPoolFullLength: a preread buffer put back short (the loop
// path's CONNECT is a slice of what was read) comes out of the pool at its
// full length, or a later preread reads into an empty slice and spins.
func TestPrereadPoolFullLength(t *testing.T) {
	for i := range 200 {
		b := make([]byte, 1+i%7, prereadBufSize)
		putPrereadBuf(&b)
	}
	for range 200 {
		got := prereadPool.Get().(*[]byte)
		if len(*got) != prereadBufSize {
			t.Fatalf("pooled preread buffer of length %d, want %d", len(*got), prereadBufSize)
		}
	}
}
