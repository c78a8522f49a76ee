package mqtt

// Framer follows the packet boundaries of one direction of an MQTT stream
// as its bytes pass, without holding any of them: it reads each packet's
// Fixed Header (the type byte and the Remaining Length, 3.1.1 section 2.2,
// 5.0 section 2.1) and skips the rest. A proxy keeps one per direction to
// know, at any moment, whether the bytes it has passed on end between two
// packets, so that it can end a connection there and not inside a packet.
//
//	var down mqtt.Framer // broker to client
//	n, _ := down.Feed(buf, 0)
//	write(client, buf[:n])
//	if down.AtBoundary() { // the client has whole packets only
//		write(client, mqtt.AppendDisconnect(nil, mqtt.ServerShuttingDown, ""))
//	}
//
// The zero Framer is at the start of a stream. It is four bytes, because an
// idle connection's cost is what a proxy of many idle connections is made
// of. A stream whose Remaining Length takes more than four bytes is not
// MQTT any more (malformed, 3.1.1 section 2.2.3, 5.0 section 1.5.5): the
// Framer then reports [Framer.Lost] and follows nothing further.
type Framer struct{ s uint32 }

// The state packs three fields into one word:
//   - bits 0-27: in a body, the bytes of it still to come; in a Fixed
//     Header, the Remaining Length decoded so far (at most 28 bits, the
//     largest a four-byte Variable Byte Integer holds);
//   - bits 28-30: 0 between packets or in a body; k > 0 in a Fixed Header
//     of which the type byte and k-1 Remaining Length bytes were read;
//   - bit 31: the stream is lost.
const (
	framerValue = 1<<28 - 1
	framerShift = 28
	framerLost  = 1 << 31
)

// AtBoundary reports whether the bytes fed so far end exactly between two
// packets (or nothing was fed).
func (f Framer) AtBoundary() bool { return f.s == 0 }

// Lost reports whether the stream held a malformed Remaining Length, after
// which its boundaries are unknown.
func (f Framer) Lost() bool { return f.s&framerLost != 0 }

// Feed follows b, the next bytes of the stream. It returns len(b) and
// size 0, unless max > 0 and a packet whose Fixed Header completes in b is
// larger than max bytes (Fixed Header included): then it returns that
// packet's size and n, the offset in b where the packet starts (0 when its
// header began in an earlier b), and the caller is to end the stream, as
// b[n:] starts a packet too large to pass.
func (f *Framer) Feed(b []byte, max int) (n, size int) {
	n, size, _, _ = f.advance(b, max, false)
	return n, size
}

// FeedLast is Feed that also returns last, the offset in b of the first
// byte of the last packet that begins in b, or -1 when none does (b is
// all inside a packet begun earlier). Whether a client's stream ends with
// a DISCONNECT [MQTT-3.14.4-1], of any size (a 5.0 one with properties)
// and however its reads are cut (one that began inside a packet, a
// DISCONNECT split over two), is then one byte kept from read to read and
// AtBoundary at the client's FIN:
//
//	n, size, last := up.FeedLast(buf, max)
//	if last >= 0 {
//		bye = mqtt.IsDisconnect(buf[last])
//	}
//	// ... at the client's FIN:
//	if bye && up.AtBoundary() {
//		// the client has closed: close the broker's side at once
//	}
func (f *Framer) FeedLast(b []byte, max int) (n, size, last int) {
	n, size, _, last = f.advance(b, max, false)
	return n, size, last
}

// IsDisconnect reports whether first, the first byte of a packet, is a
// DISCONNECT's: type 14, flags 0 [MQTT-3.14.1-1].
func IsDisconnect(first byte) bool { return first == byte(TypeDisconnect)<<4 }

// Finish follows b only up to the end of the packet the stream is in. It
// returns how many bytes of b belong to that packet and done true when the
// packet ends within them (n is 0 and done true at a boundary); done false
// when b ends first, or the stream is lost.
func (f *Framer) Finish(b []byte) (n int, done bool) {
	n, _, done, _ = f.advance(b, 0, true)
	return n, done
}

func (f *Framer) advance(b []byte, max int, stop bool) (n, size int, boundary bool, last int) {
	s := f.s
	last = -1 // where the last packet begun in b starts
	if s&framerLost != 0 {
		return len(b), 0, false, last
	}
	start := 0 // where the packet whose Fixed Header is being read starts in b
	i := 0
	for {
		phase := s >> framerShift
		if phase == 0 {
			if left := int(s); left > 0 {
				step := min(left, len(b)-i)
				i += step
				s -= uint32(step)
				if s > 0 {
					break // b ended inside the body
				}
			}
			if stop {
				f.s = 0
				return i, 0, true, last
			}
			if i == len(b) {
				break
			}
			start, last = i, i
			s = 1 << framerShift // the type byte
			i++
			continue
		}
		if i == len(b) {
			break
		}
		c := b[i]
		i++
		k := phase - 1 // Remaining Length bytes read before c
		v := s&framerValue | uint32(c&0x7f)<<(7*k)
		if c&0x80 != 0 {
			if k == 3 {
				// A fifth byte: both specifications stop at four (3.1.1
				// section 2.2.3, 5.0 section 1.5.5).
				f.s = framerLost
				return len(b), 0, false, last
			}
			s = (phase+1)<<framerShift | v
			continue
		}
		if total := 1 + int(k) + 1 + int(v); max > 0 && total > max {
			f.s = v
			return start, total, false, last
		}
		s = v // the body; a packet without one (PINGREQ) ends here
	}
	f.s = s
	return i, 0, false, last
}
