// Package sizeclass tells what one heap object of a type costs: not its
// unsafe.Sizeof but the slot the allocator gives it, which is its size
// rounded up to a size class (512 → 512, 513 → 576, 656 → 704), with the
// 8-byte header Go puts in front of objects over 512 bytes that hold
// pointers counted in. Tests use it to keep the state of an idle connection
// within the class it was measured in:
//
//	if got := sizeclass.Of[liveConn](); got > 512 {
//		t.Errorf("a liveConn of %d bytes takes a %d-byte slot", unsafe.Sizeof(liveConn{}), got)
//	}
//
// The slot is read off the heap itself, so it follows the runtime in use:
// objects allocated one after the other sit in consecutive slots of one
// span, and the smallest distance between two of them is the slot size.
package sizeclass

import (
	"runtime"
	"unsafe"
)

// Of returns the bytes the allocator takes for one new(T). T must not be
// empty.
func Of[T any]() uintptr {
	const n = 64
	var objs [n]*T
	for i := range objs {
		objs[i] = new(T)
	}
	slot := ^uintptr(0)
	for i := 1; i < n; i++ {
		a, b := uintptr(unsafe.Pointer(objs[i-1])), uintptr(unsafe.Pointer(objs[i]))
		if b > a && b-a < slot {
			slot = b - a
		}
	}
	runtime.KeepAlive(&objs)
	return slot
}
