package harness

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mqgate/mqgate/bench/internal/loadgen"
	"github.com/mqgate/mqgate/bench/internal/results"
)

// connectedLine matches Mosquitto's notice for each accepted client:
// "New client connected from 127.0.0.1:40000 as <client id> (p2, c1, k60)."
var connectedLine = regexp.MustCompile(`New client connected from \S+ as (\S+) \(`)

// verifyAll checks every target's hashing while the brokers log connections.
func (r *runner) verifyAll() {
	for i, t := range r.targets {
		if t.skip != "" {
			continue
		}
		v := r.verify(t, uint64(i+1))
		r.result(t).Verify = v
		if v.OK {
			r.logf("%s hashes by client id: %d ids, twice each, per broker %v", t.name, v.IDs, v.PerBroker)
		} else {
			r.problem("%s does NOT hash by client id (from the brokers' logs): %s", t.name, strings.Join(v.Problems, "; "))
		}
	}
}

// verify connects VerifyIDs client ids through t, then the same ids again in
// another order, and reads from the brokers' logs where each landed. Every id
// must land on the same broker both times, and every broker must get some.
func (r *runner) verify(t *target, seed uint64) *results.Verify {
	n := r.plan.VerifyIDs
	v := &results.Verify{IDs: n, PerBroker: make([]int, len(r.brokers.logs))}
	prefix := fmt.Sprintf("verify-%s-", t.name)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	failures := 0
	for _, pass := range [][]string{ids, shuffled(ids, seed)} {
		for _, id := range pass {
			if err := loadgen.ConnectOnce(loadgen.PickAddr(t.addrs, id), id, 5*time.Second); err != nil {
				if failures++; failures <= 3 {
					v.Problems = append(v.Problems, fmt.Sprintf("client %s: %v", id, err))
				}
			}
		}
	}
	if failures > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("%d of %d sessions failed", failures, 2*n))
	}

	// The brokers log asynchronously: wait until every session is logged.
	var seen map[string][]int
	for deadline := time.Now().Add(5 * time.Second); ; {
		seen = r.connectionsLogged(prefix)
		total := 0
		for _, b := range seen {
			total += len(b)
		}
		if total >= 2*n-failures || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	split, missing := 0, 0
	for _, id := range ids {
		b := seen[id]
		if len(b) < 2 {
			missing++
			continue
		}
		if slices.Min(b) != slices.Max(b) {
			if split++; split <= 3 {
				v.Problems = append(v.Problems, fmt.Sprintf("client id %s went to brokers %v", id, plusOne(b)))
			}
			continue
		}
		v.PerBroker[b[0]]++
	}
	if split > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("%d of %d client ids landed on different brokers", split, n))
	}
	if missing > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("%d of %d client ids were not logged twice by the brokers", missing, n))
	}
	for i, c := range v.PerBroker {
		if c == 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("broker %d got no client", i+1))
		}
	}
	v.OK = len(v.Problems) == 0
	return v
}

// connectionsLogged returns, for each client id with prefix, the brokers
// (0-based) that logged it, once per connection.
func (r *runner) connectionsLogged(prefix string) map[string][]int {
	seen := map[string][]int{}
	for i, path := range r.brokers.logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, m := range connectedLine.FindAllStringSubmatch(string(b), -1) {
			if strings.HasPrefix(m[1], prefix) {
				seen[m[1]] = append(seen[m[1]], i)
			}
		}
	}
	return seen
}

func plusOne(b []int) []int {
	out := make([]int, len(b))
	for i, v := range b {
		out[i] = v + 1
	}
	return out
}
