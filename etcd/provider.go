// Package etcd is mqgate's etcd configuration provider: APISIX's key layout
// (<prefix>/stream_routes/<id>, <prefix>/upstreams/<id>, <prefix>/ssls/<id>,
// <prefix>/routes/<id>) read once, then watched from that revision, as
// APISIX's data planes do.
// A burst of changes becomes one Snapshot; a compaction or a lost watch is
// followed by a new read. The same watch carries the fleet: every instance
// registers itself under <prefix>/mqgate/instances/ with a lease, and a
// client kick sent to one instance reaches all of them.
//
//	p, err := etcd.New(etcd.Options{
//		Settings: cfg.Deployment.Etcd,
//		Kinds:    []string{"stream_routes", "upstreams", "ssls", "routes"},
//		Name:     "mqgate-1",
//		Apply:    func(s etcd.Snapshot) { ... validate s.Objects, swap the snapshot ... },
//	})
//	snap, err := p.Load(ctx) // the first read; on error, start from a cache
//	go p.Run(ctx)            // watch, re-read, reconnect with backoff
//	rev, created, err := p.Put(ctx, "upstreams", "1", value) // the Admin API's writes
package etcd

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mqgate/mqgate/config"
)

// Object is one APISIX object as etcd holds it.
type Object struct {
	Kind, ID       string
	Key            string // <prefix>/<kind>/<id>
	Value          []byte // APISIX's JSON
	CreateRevision int64
	ModRevision    int64
}

// Snapshot is every object under the prefix as of Revision, the revision of
// the last change to them, in creation order.
type Snapshot struct {
	Revision int64
	Objects  []Object
	// Hash names the set of objects (keys and revisions): instances that
	// hold the same objects have the same hash whichever way they read them.
	Hash string
}

// Options configure a Provider.
type Options struct {
	Settings *config.Etcd
	Kinds    []string       // the object kinds to read, as the key's second part
	Name     string         // this instance's name in the fleet
	Apply    func(Snapshot) // called with each new snapshot, one at a time
	Log      *slog.Logger
	// Coalesce is how long changes are gathered into one snapshot after
	// the first of a burst; default 100ms.
	Coalesce time.Duration
	// Instance describes this instance for the fleet; nil: no registration.
	Instance func() Instance
	// Kick closes this instance's connections of a client id, for kicks
	// other instances pass on; it returns what it closed.
	Kick func(clientID string) any
}

// Provider reads and watches etcd. Its methods are safe for concurrent use.
type Provider struct {
	opts   Options
	dialMu sync.Mutex // one dial at a time
	prefix string     // with a trailing slash
	log    *slog.Logger

	mu        sync.Mutex
	cli       *clientv3.Client  // nil until the first dial succeeds
	objects   map[string]Object // by key
	revision  int64             // of the last change applied
	storeRev  int64             // the etcd revision last seen
	connected bool
	changed   time.Time // when connected last changed
	lastErr   string
	lastErrAt time.Time
	errors    uint64
	reads     uint64
	fleet     map[string]Instance
	kicks     map[string]chan kickResult // by kick id, for kicks this instance sent
	lease     clientv3.LeaseID
	applied   Snapshot // the last one handed to Apply (or returned by Load)
}

// ErrUnavailable is a write that etcd did not take: it is unreachable or
// did not answer in time. Nothing was changed.
var ErrUnavailable = errors.New("etcd is unreachable")

// New makes a provider; nothing is read until Load or Run. Its settings
// are checked here (TLS files), but etcd is dialled by Load and Run: with
// authentication the client's first call needs etcd, which may be down.
func New(opts Options) (*Provider, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	opts.Coalesce = cmp.Or(opts.Coalesce, 100*time.Millisecond)
	if _, err := clientConfig(opts.Settings); err != nil {
		return nil, err
	}
	return &Provider{
		opts: opts, prefix: opts.Settings.Prefix + "/", log: opts.Log.With("etcd", strings.Join(opts.Settings.Hosts, ",")),
		objects: map[string]Object{}, fleet: map[string]Instance{}, kicks: map[string]chan kickResult{},
	}, nil
}

// Close ends the client; Run must have returned.
func (p *Provider) Close() error {
	if cli := p.conn(); cli != nil {
		return cli.Close()
	}
	return nil
}

// conn is the client once dialled, or nil.
func (p *Provider) conn() *clientv3.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cli
}

// client dials etcd the first time; the client then reconnects by itself.
func (p *Provider) client() (*clientv3.Client, error) {
	if cli := p.conn(); cli != nil {
		return cli, nil
	}
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	if cli := p.conn(); cli != nil {
		return cli, nil
	}
	cli, err := NewClient(p.opts.Settings)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.cli = cli
	p.mu.Unlock()
	return cli, nil
}

// Load reads every object once and returns the snapshot (Apply is not
// called). Run then watches from its revision.
func (p *Provider) Load(ctx context.Context) (Snapshot, error) {
	if err := p.read(ctx); err != nil {
		return Snapshot{}, err
	}
	s := p.snapshot()
	p.mu.Lock()
	p.applied = s
	p.mu.Unlock()
	return s, nil
}

// publish hands s to Apply and remembers it for the fleet record.
func (p *Provider) publish(s Snapshot) {
	p.opts.Apply(s)
	p.mu.Lock()
	p.applied = s
	p.mu.Unlock()
}

// read replaces the objects and the fleet with one range read.
func (p *Provider) read(ctx context.Context) error {
	cli, err := p.client()
	if err != nil {
		p.setError(fmt.Errorf("connect: %w", err))
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Settings.Timeout)
	defer cancel()
	resp, err := cli.Get(ctx, p.prefix, clientv3.WithPrefix())
	if err != nil {
		p.setError(fmt.Errorf("read %s: %w", p.prefix, err))
		return err
	}
	objects, fleet := map[string]Object{}, map[string]Instance{}
	var rev int64
	for _, kv := range resp.Kvs {
		if o, ok := p.object(kv); ok {
			objects[o.Key] = o
			rev = max(rev, kv.ModRevision)
		} else if in, ok := p.instance(kv); ok {
			fleet[in.Name] = in
		}
	}
	p.mu.Lock()
	p.objects, p.fleet, p.storeRev = objects, fleet, resp.Header.Revision
	// A delete leaves no key: the store's revision covers it too.
	p.revision = max(rev, p.revision)
	p.reads++
	p.mu.Unlock()
	p.setConnected(true)
	return nil
}

// object parses a key of a configured kind: <prefix><kind>/<id>.
func (p *Provider) object(kv *mvccpb.KeyValue) (Object, bool) {
	kind, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), p.prefix), "/")
	if !ok || id == "" || strings.Contains(id, "/") || !slices.Contains(p.opts.Kinds, kind) {
		return Object{}, false
	}
	return Object{Kind: kind, ID: id, Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}, true
}

func (p *Provider) snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{Revision: p.revision, Objects: make([]Object, 0, len(p.objects))}
	for _, o := range p.objects {
		s.Objects = append(s.Objects, o)
	}
	slices.SortFunc(s.Objects, func(a, b Object) int {
		return cmp.Or(cmp.Compare(a.CreateRevision, b.CreateRevision), strings.Compare(a.Key, b.Key))
	})
	h := sha256.New()
	for _, o := range s.Objects {
		fmt.Fprintf(h, "%s %d\n", o.Key, o.ModRevision)
	}
	s.Hash = hex.EncodeToString(h.Sum(nil))[:12]
	return s
}

// Run watches etcd until ctx ends: it re-reads after a compaction or a lost
// watch, retries with backoff while etcd is unreachable, and calls Apply
// with each new snapshot. Call Load first, or Run starts with a read.
func (p *Provider) Run(ctx context.Context) {
	go p.probe(ctx)
	if p.opts.Instance != nil {
		go p.register(ctx)
	}
	p.mu.Lock()
	loaded := p.reads > 0
	p.mu.Unlock()
	b := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		if !loaded {
			if err := p.read(ctx); err != nil {
				if ctx.Err() == nil {
					p.log.Warn("etcd read failed, retrying", "err", err, "retry_in", b.next())
				}
				b.wait(ctx)
				continue
			}
			p.publish(p.snapshot())
			loaded = true
		}
		b.reset()
		p.mu.Lock()
		from := p.storeRev + 1
		p.mu.Unlock()
		err := p.watch(ctx, from)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			p.log.Warn("etcd compacted past this instance's revision: reading everything again", "from", from, "err", err)
		} else {
			p.log.Warn("etcd watch lost: reading everything again", "err", err)
		}
		p.setError(err)
		loaded = false
		b.wait(ctx)
	}
}

var errWatchClosed = errors.New("watch closed")

// watch follows the prefix from revision from until it fails.
func (p *Provider) watch(ctx context.Context, from int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := p.conn().Watch(ctx, p.prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	var flush <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return errWatchClosed
			}
			if err := resp.Err(); err != nil {
				return err
			}
			if resp.Canceled {
				return errWatchClosed
			}
			if p.events(resp) && flush == nil {
				timer = time.NewTimer(p.opts.Coalesce)
				flush = timer.C
			}
		case <-flush:
			flush, timer = nil, nil
			p.publish(p.snapshot())
		}
	}
}

// events applies one watch response to the objects and the fleet and
// reports whether an object changed.
func (p *Provider) events(resp clientv3.WatchResponse) (changed bool) {
	var kicks []*clientv3.Event
	p.mu.Lock()
	p.storeRev = max(p.storeRev, resp.Header.Revision)
	for _, ev := range resp.Events {
		kv := ev.Kv
		if o, ok := p.object(kv); ok {
			if ev.Type == clientv3.EventTypeDelete {
				delete(p.objects, o.Key)
			} else {
				p.objects[o.Key] = o
			}
			p.revision = max(p.revision, kv.ModRevision)
			changed = true
			continue
		}
		rest := strings.TrimPrefix(string(kv.Key), p.prefix)
		switch {
		case strings.HasPrefix(rest, instancesDir):
			name := strings.TrimPrefix(rest, instancesDir)
			if ev.Type == clientv3.EventTypeDelete {
				delete(p.fleet, name)
			} else if in, ok := p.instance(kv); ok {
				p.fleet[in.Name] = in
			}
		case strings.HasPrefix(rest, kicksDir) && ev.Type == clientv3.EventTypePut:
			kicks = append(kicks, ev)
		}
	}
	p.mu.Unlock()
	for _, ev := range kicks {
		p.kickEvent(ev.Kv)
	}
	return changed
}

// Put writes kind/id. It fails at once with ErrUnavailable while etcd is
// known to be unreachable, and waits at most 5 s (or the timeout) otherwise.
func (p *Provider) Put(ctx context.Context, kind, id string, value []byte) (rev int64, created bool, err error) {
	ctx, cancel, err := p.writeContext(ctx)
	if err != nil {
		return 0, false, err
	}
	defer cancel()
	resp, err := p.conn().Put(ctx, p.prefix+kind+"/"+id, string(value), clientv3.WithPrevKV())
	if err != nil {
		p.setError(err)
		return 0, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return resp.Header.Revision, resp.PrevKv == nil, nil
}

// Delete removes the objects, given as kind/id pairs, in one transaction.
func (p *Provider) Delete(ctx context.Context, refs [][2]string) (int64, error) {
	ctx, cancel, err := p.writeContext(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	ops := make([]clientv3.Op, len(refs))
	for i, r := range refs {
		ops[i] = clientv3.OpDelete(p.prefix + r[0] + "/" + r[1])
	}
	resp, err := p.conn().Txn(ctx).Then(ops...).Commit()
	if err != nil {
		p.setError(err)
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return resp.Header.Revision, nil
}

// maxWriteWait bounds an Admin API write to etcd, so a client is answered
// instead of left hanging while etcd is away.
const maxWriteWait = 5 * time.Second

func (p *Provider) writeContext(ctx context.Context) (context.Context, context.CancelFunc, error) {
	p.mu.Lock()
	connected, lastErr := p.connected && p.cli != nil, p.lastErr
	p.mu.Unlock()
	if !connected {
		return nil, nil, fmt.Errorf("%w (%s): nothing was changed; retry when /status shows etcd connected", ErrUnavailable, cmp.Or(lastErr, "not connected yet"))
	}
	ctx, cancel := context.WithTimeout(ctx, min(p.opts.Settings.Timeout, maxWriteWait))
	return ctx, cancel, nil
}

// probeEvery is how often the connection to etcd is checked.
const probeEvery = time.Second

// probe checks every second that etcd answers, which a watch alone does not
// tell: a watch on a dead endpoint just waits.
func (p *Provider) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cli := p.conn()
		if cli == nil {
			continue // not dialled yet: Run's reads dial and report
		}
		pctx, cancel := context.WithTimeout(ctx, min(p.opts.Settings.Timeout, 2*time.Second))
		_, err := cli.Get(pctx, p.prefix+instancesDir+"\x00probe", clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.setError(fmt.Errorf("probe: %w", err))
			continue
		}
		p.setConnected(true)
	}
}

func (p *Provider) setError(err error) {
	p.mu.Lock()
	was := p.connected
	p.lastErr, p.lastErrAt = err.Error(), time.Now()
	p.errors++
	if was {
		p.connected, p.changed = false, time.Now()
	}
	p.mu.Unlock()
	if was {
		p.log.Warn("etcd unreachable: serving the last good configuration", "err", err)
	}
}

func (p *Provider) setConnected(ok bool) {
	p.mu.Lock()
	was := p.connected
	if was != ok {
		p.connected, p.changed = ok, time.Now()
	}
	rev := p.revision
	p.mu.Unlock()
	if !was && ok {
		p.log.Info("etcd connected", "revision", rev)
	}
}

// Status is the provider's state for /status and metrics.
type Status struct {
	Endpoints     []string   `json:"endpoints"`
	Prefix        string     `json:"prefix"`
	Connected     bool       `json:"connected"`
	Since         *time.Time `json:"since,omitempty"`
	Revision      int64      `json:"revision"`       // of the last change this instance applied
	StoreRevision int64      `json:"store_revision"` // the etcd revision last seen
	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
	Errors        uint64     `json:"errors"`
	Reads         uint64     `json:"reads"` // full reads: 1 + compactions and lost watches
}

// Status reports the connection and revisions.
func (p *Provider) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{
		Endpoints: p.opts.Settings.Hosts, Prefix: p.opts.Settings.Prefix, Connected: p.connected,
		Revision: p.revision, StoreRevision: p.storeRev, LastError: p.lastErr, Errors: p.errors, Reads: p.reads,
	}
	if !p.changed.IsZero() {
		t := p.changed
		s.Since = &t
	}
	if !p.lastErrAt.IsZero() {
		t := p.lastErrAt
		s.LastErrorAt = &t
	}
	return s
}

// backoff doubles a wait from min to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	return b.cur
}

func (b *backoff) wait(ctx context.Context) {
	d := b.next()
	b.cur = min(2*b.cur, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (b *backoff) reset() { b.cur = 0 }
