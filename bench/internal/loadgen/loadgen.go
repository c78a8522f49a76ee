// Package loadgen is the benchmark's MQTT load generator.
//
// One Run drives one phase against one target and reports on a line
// protocol that the orchestrator reads from the process's standard output:
//
//	START          the measured window begins (warm-up is over)
//	STOP           the measured window ends
//	READY <n>      (idle phase) n clients are connected and pinging
//	RESULT <json>  the Result, last line
//
// Closing standard input (the orchestrator does, or dies) ends a phase early.
// Every loop is bounded both in time and in count.
//
// The phases:
//
//   - connect: Workers goroutines loop dial → CONNECT → CONNACK → DISCONNECT.
//   - throughput: Clients clients each subscribe to their own topic and
//     publish QoS 0 messages to it in bursts of Window, waiting for the burst
//     to come back before sending the next; latency is send to receive.
//   - latency: LatencyClients clients each publish to themselves at Rate
//     messages per second, one message at a time, their sends spread evenly
//     over the period; latency is send to receive.
//   - idle: Clients clients connect and send PINGREQ every PingEvery until
//     standard input closes or Hold has passed.
package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/bench/internal/hist"
	"github.com/mqgate/mqgate/mqtt"
)

// Config describes one phase.
type Config struct {
	Phase string
	// Addrs are the addresses clients connect to. With more than one (no
	// proxy), a client id picks its broker by a hash of the id.
	Addrs    []string
	IDPrefix string

	Warmup   time.Duration
	Duration time.Duration
	// MaxOps bounds the operations (connects or messages) of the phase.
	MaxOps int64

	Workers int // connect: looping workers; idle: concurrent dials while ramping
	Clients int // throughput, idle

	Payload int // bytes per PUBLISH payload, at least 8 (the send timestamp)
	Window  int // throughput: messages per burst
	Rate    int // latency: messages per second, each client
	// LatencyClients is how many clients the latency phase paces; more
	// clients, more samples in the same window, at the same low rate each.
	LatencyClients int

	Hold        time.Duration // idle: longest hold after the ramp
	PingEvery   time.Duration // idle
	RampTimeout time.Duration // idle: longest ramp

	Timeout time.Duration // per network operation

	// TLS: clients connect with TLS 1.3, X25519 (the key exchange every
	// target has), trusting the CA in CAFile, for ServerName.
	TLS        bool
	CAFile     string
	ServerName string
	// TLSResume: connect workers keep a session cache, so every handshake
	// after a worker's first resumes its session.
	TLSResume bool
	// WSPath: clients speak MQTT over WebSocket to this path (wss:// with
	// TLS), subprotocol "mqtt"; the upgrade counts in the CONNECT's time.
	WSPath string
}

// Result is what one phase measured, as seen by the load generator.
type Result struct {
	Phase string `json:"phase"`
	// Ops counts completed operations inside the measured window: connects
	// for connect, messages received for throughput and latency.
	Ops     uint64  `json:"ops"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
	// Latencies, in microseconds: CONNECT (dial to CONNACK) or end to end.
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	P999us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`

	Sent uint64 `json:"sent,omitempty"`
	Lost uint64 `json:"lost,omitempty"`

	Connected   int     `json:"connected,omitempty"`
	RampSeconds float64 `json:"ramp_seconds,omitempty"`
	PingsOK     uint64  `json:"pings_ok,omitempty"`
	PingsFailed uint64  `json:"pings_failed,omitempty"`

	// Errors counts failures by kind; Sample is one message of each kind.
	Errors map[string]uint64 `json:"errors,omitempty"`
	Sample map[string]string `json:"error_samples,omitempty"`
}

// phase states shared between the clock and the clients.
const (
	warming int32 = iota
	measuring
	finished
)

// generator holds the state of one Run.
type generator struct {
	cfg   Config
	out   io.Writer
	base  time.Time // send timestamps are nanoseconds since base
	state atomic.Int32
	tr    transport // TCP, TLS, WebSocket

	mu     sync.Mutex
	errs   map[string]uint64
	sample map[string]string
}

// Run runs the phase cfg describes, writing the line protocol to out. It
// ends when the phase is done or ctx is cancelled.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if len(cfg.Addrs) == 0 {
		return errors.New("loadgen: no address to connect to")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	g := &generator{cfg: cfg, out: out, base: time.Now(), errs: map[string]uint64{}, sample: map[string]string{}}
	g.tr.wsPath = cfg.WSPath
	if cfg.TLS {
		var err error
		if g.tr.tls, err = ClientTLS(cfg.CAFile, cfg.ServerName); err != nil {
			return err
		}
	}
	var (
		res Result
		err error
	)
	switch cfg.Phase {
	case "connect":
		res, err = g.runConnect(ctx)
	case "throughput":
		res, err = g.runThroughput(ctx)
	case "latency":
		res, err = g.runLatency(ctx)
	case "idle":
		res, err = g.runIdle(ctx)
	default:
		return fmt.Errorf("loadgen: unknown phase %q", cfg.Phase)
	}
	if err != nil {
		return err
	}
	res.Phase = cfg.Phase
	if len(g.errs) > 0 {
		res.Errors, res.Sample = g.errs, g.sample
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("loadgen: encoding result: %w", err)
	}
	_, err = fmt.Fprintf(out, "RESULT %s\n", b)
	return err
}

// StopOnEOF returns a context cancelled when r reaches end of file, which is
// how the orchestrator ends a phase early.
func StopOnEOF(parent context.Context, r io.Reader) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		_, _ = io.Copy(io.Discard, r)
		cancel()
	}()
	return ctx, cancel
}

func (g *generator) addr(clientID string) string {
	return PickAddr(g.cfg.Addrs, clientID)
}

// PickAddr returns the address a client connects to: the only one, or with
// several (brokers without a proxy) the one a hash of the client id picks.
func PickAddr(addrs []string, clientID string) string {
	if len(addrs) == 1 {
		return addrs[0]
	}
	h := fnv.New32a()
	h.Write([]byte(clientID))
	return addrs[h.Sum32()%uint32(len(addrs))]
}

func (g *generator) fail(err error) {
	kind := errorKind(err)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs[kind]++
	if _, ok := g.sample[kind]; !ok {
		g.sample[kind] = err.Error()
	}
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF):
		return "closed by peer"
	case errors.As(err, new(*mqtt.ProtocolError)):
		return "MQTT protocol error"
	}
	msg := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "too many open files", "refused with code", "broken pipe", "cannot assign requested address"} {
		if strings.Contains(msg, k) {
			return k
		}
	}
	return "other"
}

func (g *generator) emit(line string) {
	fmt.Fprintln(g.out, line)
}

// clock runs the warm-up and the measured window, then marks the phase
// finished. It returns the length of the measured window; a cancelled ctx
// cuts it short.
func (g *generator) clock(ctx context.Context) time.Duration {
	defer g.state.Store(finished)
	select {
	case <-time.After(g.cfg.Warmup):
	case <-ctx.Done():
		return 0
	}
	start := time.Now()
	g.state.Store(measuring)
	g.emit("START")
	select {
	case <-time.After(g.cfg.Duration):
	case <-ctx.Done():
	}
	g.state.Store(finished)
	window := time.Since(start)
	g.emit("STOP")
	return window
}

func fillLatency(res *Result, h *hist.Histogram, window time.Duration) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res.Ops = h.Count()
	res.Seconds = window.Seconds()
	if res.Seconds > 0 {
		res.PerSec = float64(res.Ops) / res.Seconds
	}
	res.P50us = us(h.Quantile(0.50))
	res.P99us = us(h.Quantile(0.99))
	res.P999us = us(h.Quantile(0.999))
	res.MaxUs = us(h.Max())
}

// runConnect loops connect → CONNECT → CONNACK → DISCONNECT on Workers
// goroutines, each with a fresh client id per iteration.
func (g *generator) runConnect(ctx context.Context) (Result, error) {
	workers := max(g.cfg.Workers, 1)
	perWorker := g.cfg.MaxOps / int64(workers)
	hists := make([]hist.Histogram, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			h := &hists[w]
			tr := g.tr
			if tr.tls != nil && g.cfg.TLSResume {
				tr.tls = tr.tls.Clone()
				tr.tls.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			for i := int64(0); i < perWorker && g.state.Load() != finished; i++ {
				id := fmt.Sprintf("%s-%d-%d", g.cfg.IDPrefix, w, i)
				start := time.Now()
				s, err := dialSession(g.addr(id), id, 60, g.cfg.Timeout, 64, tr)
				if err != nil {
					g.fail(err)
					// Back off a little so a refusing target is not spun on.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if g.state.Load() == measuring {
					h.Record(time.Since(start))
				}
				s.disconnect()
			}
		})
	}
	window := g.clock(ctx)
	wg.Wait()
	var all hist.Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	var res Result
	fillLatency(&res, &all, window)
	return res, nil
}

// publisher is one client that publishes to its own topic.
type publisher struct {
	*session
	topic   string
	payload []byte
	hist    hist.Histogram
	sent    uint64
	lost    uint64
}

func (g *generator) newPublisher(id string) (*publisher, error) {
	s, err := dialSession(g.addr(id), id, 60, g.cfg.Timeout, 64<<10, g.tr)
	if err != nil {
		return nil, err
	}
	p := &publisher{session: s, topic: "mqbench/" + id, payload: make([]byte, max(g.cfg.Payload, 8))}
	if err := s.subscribe(p.topic, g.cfg.Timeout); err != nil {
		s.conn.Close()
		return nil, err
	}
	return p, nil
}

// burst publishes n messages in one write and reads them back, recording
// their latency while the window is open. It returns false when the
// connection failed.
func (g *generator) burst(p *publisher, n int) bool {
	p.out = p.out[:0]
	for range n {
		binary.LittleEndian.PutUint64(p.payload, uint64(time.Since(g.base)))
		p.out = appendPublish(p.out, p.topic, p.payload)
	}
	if err := p.conn.SetDeadline(time.Now().Add(g.cfg.Timeout)); err != nil {
		g.fail(err)
		return false
	}
	if _, err := p.conn.Write(p.out); err != nil {
		g.fail(fmt.Errorf("writing PUBLISH: %w", err))
		return false
	}
	p.sent += uint64(n)
	for got := 0; got < n; {
		pkt, err := p.fr.next()
		if err != nil {
			p.lost += uint64(n - got)
			g.fail(fmt.Errorf("reading PUBLISH: %w", err))
			return false
		}
		payload, ok := publishPayload(pkt)
		if !ok || len(payload) < 8 {
			continue
		}
		got++
		if g.state.Load() == measuring {
			sentAt := time.Duration(binary.LittleEndian.Uint64(payload))
			p.hist.Record(time.Since(g.base) - sentAt)
		}
	}
	return true
}

// connectAll connects n publishers concurrently and returns those that made it.
func (g *generator) connectAll(n int) []*publisher {
	pubs := make([]*publisher, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p, err := g.newPublisher(fmt.Sprintf("%s-%d", g.cfg.IDPrefix, i))
			if err != nil {
				g.fail(err)
				return
			}
			pubs[i] = p
		})
	}
	wg.Wait()
	var ok []*publisher
	for _, p := range pubs {
		if p != nil {
			ok = append(ok, p)
		}
	}
	return ok
}

func (g *generator) runThroughput(ctx context.Context) (Result, error) {
	pubs := g.connectAll(max(g.cfg.Clients, 1))
	if len(pubs) == 0 {
		return Result{}, fmt.Errorf("throughput: no client could connect and subscribe (%v)", g.sample)
	}
	window := max(g.cfg.Window, 1)
	maxBursts := g.cfg.MaxOps / int64(len(pubs)*window)
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() {
			defer p.disconnect()
			for i := int64(0); i < maxBursts && g.state.Load() != finished; i++ {
				if !g.burst(p, window) {
					return
				}
			}
		})
	}
	elapsed := g.clock(ctx)
	wg.Wait()
	return publishersResult(pubs, elapsed), nil
}

// publishersResult folds the publishers' counts and round trips into one
// Result over elapsed.
func publishersResult(pubs []*publisher, elapsed time.Duration) Result {
	var (
		all hist.Histogram
		res Result
	)
	for _, p := range pubs {
		all.Merge(&p.hist)
		res.Sent += p.sent
		res.Lost += p.lost
	}
	fillLatency(&res, &all, elapsed)
	res.Connected = len(pubs)
	return res
}

func (g *generator) runLatency(ctx context.Context) (Result, error) {
	n := max(g.cfg.LatencyClients, 1)
	pubs := g.connectAll(n)
	if len(pubs) < n {
		return Result{}, fmt.Errorf("latency: %d of %d clients could connect and subscribe (%v)", len(pubs), n, g.sample)
	}
	period := time.Second / time.Duration(max(g.cfg.Rate, 1))
	perClient := max(g.cfg.MaxOps/int64(n), 1)
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Go(func() {
			defer p.disconnect()
			// Client i sends i/n of a period after client 0, so that the
			// clients' messages do not queue behind each other in the
			// proxy: each one measures a round trip through an idle path.
			stagger := time.NewTimer(period * time.Duration(i) / time.Duration(n))
			select {
			case <-stagger.C:
			case <-ctx.Done():
				stagger.Stop()
				return
			}
			tick := time.NewTicker(period)
			defer tick.Stop()
			for k := int64(0); k < perClient && g.state.Load() != finished; k++ {
				if !g.burst(p, 1) {
					return
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	elapsed := g.clock(ctx)
	wg.Wait()
	return publishersResult(pubs, elapsed), nil
}

// runIdle connects Clients clients, reports READY, keeps them pinging until
// ctx ends or Hold passes, then closes them all.
func (g *generator) runIdle(ctx context.Context) (Result, error) {
	var (
		mu      sync.Mutex
		conns   []*session
		pingsOK atomic.Uint64
		pingsKO atomic.Uint64
		holders sync.WaitGroup
		failed  atomic.Int64
	)
	stop := make(chan struct{})
	keepAlive := uint16(max(3*int(g.cfg.PingEvery/time.Second), 60))
	hold := func(s *session) {
		defer holders.Done()
		pingreq := []byte{firstPingreq, 0}
		var resp [2]byte
		timer := time.NewTimer(rand.N(g.cfg.PingEvery))
		defer timer.Stop()
		for {
			select {
			case <-stop:
				return
			case <-timer.C:
			}
			err := s.conn.SetDeadline(time.Now().Add(g.cfg.Timeout))
			if err == nil {
				_, err = s.conn.Write(pingreq)
			}
			if err == nil {
				_, err = io.ReadFull(s.conn, resp[:])
			}
			if err == nil && (resp[0] != firstPingresp || resp[1] != 0) {
				err = fmt.Errorf("expected PINGRESP, got % x", resp)
			}
			if err != nil {
				pingsKO.Add(1)
				g.fail(fmt.Errorf("ping: %w", err))
				return
			}
			pingsOK.Add(1)
			timer.Reset(g.cfg.PingEvery)
		}
	}

	rampStart := time.Now()
	rampCtx, cancelRamp := context.WithTimeout(ctx, g.cfg.RampTimeout)
	sem := make(chan struct{}, max(g.cfg.Workers, 1))
	var dialers sync.WaitGroup
	// Give up on ramping once failures clearly dominate: a target out of file
	// descriptors would otherwise cost a timeout per remaining client.
	maxFailures := int64(max(g.cfg.Clients/20, 50))
	for i := 0; i < g.cfg.Clients && rampCtx.Err() == nil && failed.Load() < maxFailures; i++ {
		select {
		case sem <- struct{}{}:
		case <-rampCtx.Done():
			continue
		}
		dialers.Go(func() {
			defer func() { <-sem }()
			id := fmt.Sprintf("%s-%d", g.cfg.IDPrefix, i)
			s, err := dialSession(g.addr(id), id, keepAlive, g.cfg.Timeout, 16, g.tr)
			if err != nil {
				failed.Add(1)
				g.fail(err)
				return
			}
			mu.Lock()
			conns = append(conns, s)
			mu.Unlock()
			holders.Add(1)
			go hold(s)
		})
	}
	dialers.Wait()
	cancelRamp()
	ramp := time.Since(rampStart)
	g.emit(fmt.Sprintf("READY %d", len(conns)))

	select {
	case <-ctx.Done():
	case <-time.After(g.cfg.Hold):
	}
	close(stop)
	holders.Wait()
	for _, s := range conns {
		s.conn.Close()
	}
	return Result{
		Connected:   len(conns),
		RampSeconds: ramp.Seconds(),
		PingsOK:     pingsOK.Load(),
		PingsFailed: pingsKO.Load(),
	}, nil
}

// ParseAddrs splits a comma-separated address list.
func ParseAddrs(s string) []string {
	var addrs []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// Main is the entry point of a load generator process: it runs cfg, stopping
// early when standard input closes, and writes the line protocol to stdout.
// After the RESULT line it waits (at most ten seconds) for standard input to
// close, so that the orchestrator can read this process's CPU time in /proc
// before it exits.
func Main(cfg Config) error {
	stdinOpen, cancel := StopOnEOF(context.Background(), os.Stdin)
	defer cancel()
	// A hard bound whatever the phase: warm-up, window, ramp and hold, plus slack.
	ctx, cancelT := context.WithTimeout(stdinOpen, cfg.Warmup+cfg.Duration+cfg.RampTimeout+cfg.Hold+time.Minute)
	defer cancelT()
	err := Run(ctx, cfg, os.Stdout)
	select {
	case <-stdinOpen.Done():
	case <-time.After(10 * time.Second):
	}
	return err
}
