package loadgen

import (
	"bytes"
	"fmt"
	"time"
)

// OrderResult is what OrderProbe saw.
type OrderResult struct {
	Rounds int `json:"rounds"`
	// Misses counts rounds in which the subscriber did not get the message
	// published right after its SUBSCRIBE was sent.
	Misses int `json:"misses"`
	// Tries is how many subscriber client ids were tried before one landed
	// on the publisher's broker.
	Tries int `json:"tries"`
}

// OrderProbe measures how often a proxy reorders events of two connections
// that arrive microseconds apart. Two clients on one broker, B and A: each
// round, B writes a SUBSCRIBE to a fresh topic and A at once publishes
// (QoS 0) to it on its own connection. After B's SUBACK, A publishes a
// marker to the same topic; B reads up to the marker and the round is a miss
// when the first message did not come before it. TCP promises no order
// across connections, but a proxy that forwards each as soon as it is read
// keeps the order of arrival nearly always. addrs are the target's
// addresses, picked per client id as the load generator does (the brokers
// themselves, for no proxy).
func OrderProbe(addrs []string, prefix string, rounds int, timeout time.Duration) (OrderResult, error) {
	res := OrderResult{Rounds: rounds}
	idA := prefix + "a"
	a, err := dialSession(PickAddr(addrs, idA), idA, 60, timeout, 4096, transport{})
	if err != nil {
		return res, fmt.Errorf("publisher: %w", err)
	}
	defer a.disconnect()
	var b *session
	// The balancer places each client id: find one for B on A's broker.
	for try := 0; b == nil; try++ {
		if try == 24 {
			return res, fmt.Errorf("no subscriber client id of %d tried landed on the publisher's broker", try)
		}
		res.Tries++
		idB := fmt.Sprintf("%sb%d", prefix, try)
		s, err := dialSession(PickAddr(addrs, idB), idB, 60, timeout, 4096, transport{})
		if err != nil {
			return res, fmt.Errorf("subscriber: %w", err)
		}
		if sameBroker(a, s, fmt.Sprintf("order/%s/same/%d", prefix, try)) {
			b = s
		} else {
			s.disconnect()
		}
	}
	defer b.disconnect()
	for r := range rounds {
		got, err := orderRound(a, b, fmt.Sprintf("order/%s/%d", prefix, r), uint16(r%60000+2), timeout)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", r+1, err)
		}
		if !got {
			res.Misses++
		}
	}
	return res, nil
}

var (
	orderFirst  = []byte("first")
	orderMarker = []byte("marker")
)

// sameBroker reports whether a message a publishes after b's subscription
// to topic reaches b within half a second.
func sameBroker(a, b *session, topic string) bool {
	if err := b.subscribe(topic, 5*time.Second); err != nil {
		return false
	}
	a.out = appendPublish(a.out[:0], topic, orderMarker)
	if _, err := a.conn.Write(a.out); err != nil {
		return false
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	defer b.conn.SetReadDeadline(time.Time{})
	pkt, err := b.fr.next()
	return err == nil && bytes.HasSuffix(pkt, orderMarker)
}

// orderRound is one round of OrderProbe; it reports whether b got the first
// message.
func orderRound(a, b *session, topic string, packetID uint16, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	_ = a.conn.SetDeadline(deadline)
	_ = b.conn.SetDeadline(deadline)
	b.out = appendSubscribe(b.out[:0], packetID, topic)
	a.out = appendPublish(a.out[:0], topic, orderFirst)
	if _, err := b.conn.Write(b.out); err != nil {
		return false, fmt.Errorf("writing SUBSCRIBE: %w", err)
	}
	if _, err := a.conn.Write(a.out); err != nil {
		return false, fmt.Errorf("writing PUBLISH: %w", err)
	}
	got, acked := false, false
	for {
		pkt, err := b.fr.next()
		if err != nil {
			return false, fmt.Errorf("subscriber: %w", err)
		}
		switch payload, ok := publishPayload(pkt); {
		case pkt[0] == firstSuback:
			acked = true
			a.out = appendPublish(a.out[:0], topic, orderMarker)
			if _, err := a.conn.Write(a.out); err != nil {
				return false, fmt.Errorf("writing marker: %w", err)
			}
		case ok && bytes.Equal(payload, orderFirst):
			got = true
		case ok && bytes.Equal(payload, orderMarker) && acked:
			return got, nil
		}
	}
}
