package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys of the fleet under the prefix. APISIX reads only its own kinds, so
// an APISIX pointed at the same etcd ignores them.
const (
	instancesDir = "mqgate/instances/" // <prefix>/mqgate/instances/<name>: Instance, with a lease
	kicksDir     = "mqgate/kicks/"     // <prefix>/mqgate/kicks/<kick id>[/<name>]: a kick and its answers
)

// leaseTTL is how long an instance that stopped renewing stays listed.
const leaseTTL = 10 // seconds

// registerEvery is how often an instance's record is refreshed when it changed.
const registerEvery = 2 * time.Second

// Instance is one mqgate of the fleet, as it registers itself.
type Instance struct {
	Name        string    `json:"name"`
	Admin       string    `json:"admin,omitempty"`  // the Admin API address, if any
	Listen      []string  `json:"listen,omitempty"` // the MQTT listeners
	Role        string    `json:"role"`
	Version     string    `json:"version"`
	Revision    int64     `json:"revision"` // of the configuration it applied
	Config      string    `json:"config"`   // Snapshot.Hash of it
	Connections int64     `json:"connections"`
	Started     time.Time `json:"started"`
}

func (p *Provider) instance(kv *mvccpb.KeyValue) (Instance, bool) {
	rest := strings.TrimPrefix(string(kv.Key), p.prefix)
	name, ok := strings.CutPrefix(rest, instancesDir)
	if !ok || name == "" || strings.Contains(name, "/") {
		return Instance{}, false
	}
	var in Instance
	if json.Unmarshal(kv.Value, &in) != nil {
		return Instance{}, false
	}
	in.Name = name
	return in, true
}

// register keeps this instance's record under the lease until ctx ends,
// granting a new lease whenever the old one is lost (etcd was away longer
// than the TTL).
func (p *Provider) register(ctx context.Context) {
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	key := p.prefix + instancesDir + p.opts.Name
	for ctx.Err() == nil {
		cli := p.conn()
		if cli == nil {
			b.wait(ctx) // Run dials
			continue
		}
		lease, err := cli.Grant(ctx, leaseTTL)
		if err != nil {
			b.wait(ctx)
			continue
		}
		alive, err := cli.KeepAlive(ctx, lease.ID)
		if err != nil {
			b.wait(ctx)
			continue
		}
		b.reset()
		p.mu.Lock()
		p.lease = lease.ID
		p.mu.Unlock()
		p.keepRecord(ctx, cli, key, lease.ID, alive)
	}
	// Leave the fleet at once on a clean stop rather than after the TTL.
	p.mu.Lock()
	id := p.lease
	p.mu.Unlock()
	if cli := p.conn(); id != 0 && cli != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = cli.Revoke(rctx, id)
		cancel()
	}
}

// keepRecord writes the record when it changes, until the lease is lost.
func (p *Provider) keepRecord(ctx context.Context, cli *clientv3.Client, key string, lease clientv3.LeaseID, alive <-chan *clientv3.LeaseKeepAliveResponse) {
	var last []byte
	t := time.NewTicker(registerEvery)
	defer t.Stop()
	for {
		in := p.opts.Instance()
		p.mu.Lock()
		in.Name, in.Revision, in.Config = p.opts.Name, p.applied.Revision, p.applied.Hash
		p.mu.Unlock()
		data, _ := json.Marshal(in)
		if string(data) != string(last) {
			wctx, cancel := context.WithTimeout(ctx, min(p.opts.Settings.Timeout, maxWriteWait))
			_, err := cli.Put(wctx, key, string(data), clientv3.WithLease(lease))
			cancel()
			if err == nil {
				last = data
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-alive:
			if !ok {
				return // the lease expired or the client closed
			}
			continue // keep-alive answers come every TTL/3; do not rewrite for them
		case <-t.C:
		}
	}
}

// FleetStatus is the fleet as one instance sees it.
type FleetStatus struct {
	Instances []Instance `json:"instances"`
	Latest    int64      `json:"latest_revision"`
	// InSync: every instance holds the same objects as the one with the
	// latest revision.
	InSync bool `json:"in_sync"`
}

// FleetStatus lists the instances and whether they agree.
func (p *Provider) FleetStatus() FleetStatus {
	fs := FleetStatus{Instances: p.Fleet(), InSync: true}
	if fs.Instances == nil {
		fs.Instances = []Instance{}
	}
	var latest Instance
	for i, in := range fs.Instances {
		if i == 0 || in.Revision > latest.Revision {
			latest = in
		}
	}
	fs.Latest = latest.Revision
	for _, in := range fs.Instances {
		if in.Config != latest.Config {
			fs.InSync = false
		}
	}
	return fs
}

// Fleet lists the registered instances by name.
func (p *Provider) Fleet() []Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Collect(maps.Values(p.fleet))
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// kickRequest is the value of <prefix>/mqgate/kicks/<id>.
type kickRequest struct {
	ClientID string `json:"client_id"`
	From     string `json:"from"`
}

// kickResult is the value of <prefix>/mqgate/kicks/<id>/<name>.
type kickResult struct {
	Instance string          `json:"instance"`
	Closed   json.RawMessage `json:"closed"`
}

// kickWait bounds how long a kick waits for the other instances' answers.
const kickWait = 2 * time.Second

// Kick asks every other instance of the fleet to close its connections of
// clientID and returns their answers by instance name (those that closed
// nothing included), waiting at most 2 s for the fleet as listed now.
func (p *Provider) Kick(ctx context.Context, clientID string) (map[string]json.RawMessage, error) {
	p.mu.Lock()
	lease := p.lease
	want := 0
	for name := range p.fleet {
		if name != p.opts.Name {
			want++
		}
	}
	id := fmt.Sprintf("%s-%d", p.opts.Name, time.Now().UnixNano())
	answers := make(chan kickResult, want+1)
	p.kicks[id] = answers
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.kicks, id)
		p.mu.Unlock()
	}()
	out := map[string]json.RawMessage{}
	if want == 0 {
		return out, nil
	}
	wctx, cancel, err := p.writeContext(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	req, _ := json.Marshal(kickRequest{ClientID: clientID, From: p.opts.Name})
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease)) // gone with the lease, at the latest
	}
	cli := p.conn()
	if _, err := cli.Put(wctx, p.prefix+kicksDir+id, string(req), opts...); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = cli.Delete(dctx, p.prefix+kicksDir+id, clientv3.WithPrefix())
		cancel()
	}()
	t := time.NewTimer(kickWait)
	defer t.Stop()
	for len(out) < want {
		select {
		case r := <-answers:
			out[r.Instance] = r.Closed
		case <-t.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// kickEvent handles a put under kicks/: another instance's request, which
// this one carries out and answers, or an answer to this one's request.
func (p *Provider) kickEvent(kv *mvccpb.KeyValue) {
	rest := strings.TrimPrefix(string(kv.Key), p.prefix+kicksDir)
	id, from, isAnswer := strings.Cut(rest, "/")
	if isAnswer {
		var r kickResult
		if json.Unmarshal(kv.Value, &r) != nil {
			return
		}
		r.Instance = from
		p.mu.Lock()
		ch := p.kicks[id]
		p.mu.Unlock()
		if ch != nil {
			select {
			case ch <- r:
			default:
			}
		}
		return
	}
	var req kickRequest
	if json.Unmarshal(kv.Value, &req) != nil || req.From == p.opts.Name || p.opts.Kick == nil {
		return
	}
	closed, _ := json.Marshal(p.opts.Kick(req.ClientID))
	answer, _ := json.Marshal(kickResult{Instance: p.opts.Name, Closed: closed})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), maxWriteWait)
		defer cancel()
		var opts []clientv3.OpOption
		if kv.Lease != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(kv.Lease)))
		}
		if _, err := p.conn().Put(ctx, p.prefix+kicksDir+id+"/"+p.opts.Name, string(answer), opts...); err != nil {
			p.log.Warn("cannot answer a kick", "kick", id, "client_id", req.ClientID, "err", err)
		}
	}()
	p.log.Info("kick from another instance", "from", req.From, "client_id", req.ClientID)
}
