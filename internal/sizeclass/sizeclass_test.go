package sizeclass

import "testing"

type (
	scalars512  struct{ b [512]byte }
	scalars513  struct{ b [513]byte }
	pointers512 struct {
		p *int
		b [504]byte
	}
	pointers656 struct {
		p *int
		b [648]byte
	}
	pointers696 struct {
		p *int
		b [688]byte
	}
	pointers697 struct {
		p *int
		b [689]byte
	}
)

// TestOf checks the slots against Go's size classes (runtime/sizeclasses.go)
// and its malloc header (8 bytes, objects over 512 bytes with pointers).
func TestOf(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"24 bytes", Of[[3]int64](), 24},
		{"128 bytes", Of[[16]int64](), 128},
		{"129 bytes", Of[[129]byte](), 144},
		{"512 bytes, no pointers", Of[scalars512](), 512},
		{"513 bytes, no pointers", Of[scalars513](), 576},
		{"512 bytes with pointers (no header)", Of[pointers512](), 512},
		{"656 bytes with pointers", Of[pointers656](), 704},
		{"696 bytes with pointers (header fits)", Of[pointers696](), 704},
		{"697 bytes with pointers (header does not)", Of[pointers697](), 768},
	} {
		if c.got != c.want {
			t.Errorf("%s: slot %d, want %d", c.name, c.got, c.want)
		}
	}
}
