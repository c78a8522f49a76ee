package mqtttest

import (
	"bufio"
	"strings"
	"sync"
	"testing"
)

// Owners maps each client id to the index of the broker that saw it,
// failing the test when an id reached two brokers or, for the ids given, was
// not seen exactly `times` times in all.
func Owners(t testing.TB, brokers []Broker, ids []string, times int) map[string]int {
	t.Helper()
	where := make(map[string]int)
	count := make(map[string]int)
	for bi, b := range brokers {
		for _, id := range b.Seen() {
			if prev, ok := where[id]; ok && prev != bi {
				t.Errorf("client id %s reached broker %d and broker %d", id, prev, bi)
			}
			where[id] = bi
			count[id]++
		}
	}
	for _, id := range ids {
		if count[id] != times {
			t.Errorf("client id %s: brokers saw %d connects, want %d", id, count[id], times)
		}
	}
	return where
}

// SeenTotal returns a condition for WaitFor: the brokers together have seen
// at least n connects.
func SeenTotal(brokers []Broker, n int) func() bool {
	return func() bool {
		total := 0
		for _, b := range brokers {
			total += len(b.Seen())
		}
		return total >= n
	}
}

// LogBuffer collects log output written from many goroutines (or a child
// process) while the test reads it.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the complete lines written so far.
func (b *LogBuffer) Lines() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
