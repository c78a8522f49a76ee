package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/config"
)

// Remote is where the objects live with deployment.config_provider etcd:
// *etcd.Provider. Writes go there; the Manager applies what its watch
// brings back (ApplyRemote), on every instance alike.
type Remote interface {
	Put(ctx context.Context, kind, id string, value []byte) (rev int64, created bool, err error)
	Delete(ctx context.Context, refs [][2]string) (rev int64, err error) // kind/id pairs, in one transaction
}

// RemoteObject is one object as the remote store holds it.
type RemoteObject struct {
	Kind, ID, Key  string
	Value          []byte // APISIX's JSON
	CreateRevision int64
	ModRevision    int64
}

// Refusal is a remote object left out of the configuration, and why.
type Refusal struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"`
	Reason   string `json:"reason"`
}

// ErrUnavailable is a write the remote store did not take.
var ErrUnavailable = errors.New("the configuration store is unavailable")

// ErrReadOnly is a write to a data plane, which only reads etcd.
var ErrReadOnly = errors.New("this instance is a data_plane: it reads its configuration from etcd and takes no Admin API writes; write through a control_plane or traditional instance")

// remoteState is the Manager's part for an etcd provider.
type remoteState struct {
	remote    Remote
	objects   []RemoteObject // the last snapshot, before validation
	loaded    bool           // objects came from the store, not the cache
	revision  int64          // of the last snapshot applied
	applied   chan struct{}  // closed and replaced when revision moves
	refused   []Refusal
	fromCache bool // the running objects came from the cache file at start
}

// maxApplyWait bounds how long a write waits for its own change to come
// back through the watch before it answers anyway.
const maxApplyWait = 5 * time.Second

// SetRemote makes the Manager write to r and take its objects from
// ApplyRemote. Call it before the Admin API starts.
func (m *Manager) SetRemote(r Remote) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.etcd.remote = r
	if m.etcd.applied == nil {
		m.etcd.applied = make(chan struct{})
	}
}

func (m *Manager) remoteStore() Remote {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd.remote
}

// buildCached is build for an etcd provider: the files, with the objects of
// the cache file laid over them. A cache that no longer fits the files is
// left out: etcd's objects replace it as soon as they are read.
func buildCached(docs []config.Document, fileCfg *config.Config, path string) (*config.Config, *State, string, error) {
	st, err := LoadState(path)
	if err != nil || st.count() == 0 {
		return fileCfg, &State{Version: stateVersion, Objects: map[string][]Object{}}, path, nil
	}
	cfg, err := config.Parse(append(slices.Clip(docs), st.overlay(path))...)
	if err != nil {
		return fileCfg, &State{Version: stateVersion, Objects: map[string][]Object{}}, path, nil
	}
	return cfg, st, path, nil
}

// openCache notes, at start, whether the objects came from the cache.
func (m *Manager) openCache(st *State) {
	prefix := m.cfg.Deployment.Etcd.Prefix + "/"
	if st.count() > 0 {
		m.etcd.fromCache, m.etcd.revision = true, st.Revision
		for _, kind := range Kinds {
			for _, o := range st.Objects[kind] {
				m.etcd.objects = append(m.etcd.objects, RemoteObject{Kind: kind, ID: o.ID, Key: prefix + kind + "/" + o.ID, Value: o.Value,
					CreateRevision: int64(o.CreatedIndex), ModRevision: int64(o.ModifiedIndex)})
			}
		}
	}
}

// StartedFromCache reports whether the running objects are the cache file's
// (etcd was not read yet), and its path and revision.
func (m *Manager) StartedFromCache() (bool, string, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd.fromCache && !m.etcd.loaded, m.statePath, m.etcd.revision
}

// rebuild is build for a reload: with an etcd provider, the last objects
// from etcd are validated again over the new files.
func (m *Manager) rebuild(docs []config.Document) (*config.Config, *State, string, error) {
	if m.etcd.remote == nil {
		cfg, st, path, err := build(docs)
		if err == nil && cfg.DeploymentSettings().UsesEtcd() != m.cfg.DeploymentSettings().UsesEtcd() {
			return nil, nil, "", errors.New("deployment.config_provider changed: restart mqgate to change where its configuration comes from")
		}
		return cfg, st, path, err
	}
	fileCfg, err := config.Parse(docs...)
	if err != nil {
		return nil, nil, "", err
	}
	if !fileCfg.DeploymentSettings().UsesEtcd() {
		return nil, nil, "", errors.New("deployment.config_provider changed from etcd: restart mqgate to change where its configuration comes from")
	}
	cfg, st, refused, err := m.validateRemote(docs, m.etcd.objects, m.etcd.revision)
	if err != nil {
		return nil, nil, "", err
	}
	m.etcd.refused = refused
	return cfg, st, m.statePath, nil
}

// ApplyRemote validates a snapshot of the store over the files and applies
// it: each object that does not validate is left out and logged with its
// key and why, and the others apply; the result is one new configuration,
// and the cache file keeps it for a start while etcd is down.
func (m *Manager) ApplyRemote(rev int64, objs []RemoteObject) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg, st, refused, err := m.validateRemote(m.fileDocs, objs, rev)
	if err != nil {
		m.count("etcd", ResultRefused)
		m.setError(err)
		m.log.Error("etcd snapshot refused, keeping the running configuration", "revision", rev, "err", err.Error())
		return err
	}
	m.logRefusals(refused)
	if err := m.apply(cfg); err != nil {
		m.count("etcd", ResultFailed)
		m.setError(err)
		m.log.Error("etcd snapshot not applied, keeping the running configuration", "revision", rev, "err", err)
		return err
	}
	m.cfg, m.state = cfg, st
	wasCache := m.etcd.fromCache && !m.etcd.loaded
	m.etcd.objects, m.etcd.loaded, m.etcd.refused = objs, true, refused
	if rev != m.etcd.revision || wasCache {
		m.etcd.revision = rev
		if m.etcd.applied != nil {
			close(m.etcd.applied)
		}
		m.etcd.applied = make(chan struct{})
	}
	m.count("etcd", ResultOK)
	m.log.Info("etcd configuration applied", "revision", rev, "objects", len(objs)-len(refused), "refused", len(refused), "config", cfg.Summary())
	if err := st.Save(m.statePath); err != nil {
		m.log.Error("cannot write the etcd cache file: a start while etcd is down will not have this configuration", "file", m.statePath, "err", err)
	}
	if r := cfg.ReloadSettings(); r.DrainRemoved {
		m.drain(r.DrainWindow)
	}
	return nil
}

// logRefusals logs each refused object once per revision of it.
func (m *Manager) logRefusals(refused []Refusal) {
	for _, r := range refused {
		if slices.Contains(m.etcd.refused, r) {
			continue
		}
		m.log.Error("etcd object refused", "key", r.Key, "revision", r.Revision, "err", r.Reason)
	}
}

// validateRemote lays objs over the files, leaving out, one round at a
// time, every object the decoder blames, until the rest validates: an
// upstream left out takes the routes that use it along, each with its own
// reason. A problem no object can be blamed for refuses the snapshot.
func (m *Manager) validateRemote(docs []config.Document, objs []RemoteObject, rev int64) (*config.Config, *State, []Refusal, error) {
	var refused []Refusal
	var kept []RemoteObject
	for _, o := range objs {
		value, err := remoteValue(o)
		if err != nil {
			refused = append(refused, Refusal{Key: o.Key, Revision: o.ModRevision, Reason: err.Error()})
			continue
		}
		o.Value = value
		kept = append(kept, o)
	}
	for {
		st := &State{Version: stateVersion, Index: uint64(rev), Revision: rev, Objects: map[string][]Object{}}
		for _, o := range kept {
			st.Objects[o.Kind] = append(st.Objects[o.Kind], Object{ID: o.ID, CreatedIndex: uint64(o.CreateRevision), ModifiedIndex: uint64(o.ModRevision), Value: o.Value})
		}
		overlay := st.overlay(m.statePath)
		cfg, err := config.Parse(append(slices.Clip(docs), overlay)...)
		if err == nil {
			return cfg, st, refused, nil
		}
		var list config.ErrorList
		if !errors.As(err, &list) {
			return nil, nil, nil, err
		}
		starts := objectLines(overlay.Data)
		blamed := map[int]string{} // index in kept -> reasons
		for _, e := range list {
			i, field := m.blame(st, kept, starts, e)
			if i < 0 {
				return nil, nil, nil, fmt.Errorf("the objects from etcd do not fit the files:\n%w", err)
			}
			reason := e.Msg
			if field != "" {
				reason = field + ": " + e.Msg
			}
			if blamed[i] != "" {
				reason = blamed[i] + "; " + reason
			}
			blamed[i] = reason
		}
		var next []RemoteObject
		for i, o := range kept {
			if reason, bad := blamed[i]; bad {
				refused = append(refused, Refusal{Key: o.Key, Revision: o.ModRevision, Reason: reason})
				continue
			}
			next = append(next, o)
		}
		kept = next
	}
}

// blame finds the object of kept an error of the overlay is about, and the
// field within it; -1 when the error is not about one object. An error
// with the object's path names the field; one without (a check across
// objects: a stream route naming an HTTP upstream) is the object's whose
// lines of the overlay hold the error's line.
func (m *Manager) blame(st *State, kept []RemoteObject, starts []objectStart, e *config.Error) (int, string) {
	if e.File != m.statePath {
		return -1, ""
	}
	find := func(kind, id string) int {
		return slices.IndexFunc(kept, func(k RemoteObject) bool { return k.Kind == kind && k.ID == id })
	}
	for _, kind := range Kinds {
		for i, o := range st.Objects[kind] {
			prefix := fmt.Sprintf("%s[%d]", kind, i)
			if e.Path != prefix && !strings.HasPrefix(e.Path, prefix+".") && !strings.HasPrefix(e.Path, prefix+"[") {
				continue
			}
			field := strings.TrimPrefix(strings.TrimPrefix(e.Path, prefix), ".")
			return find(kind, o.ID), field
		}
	}
	if e.Path != "" || e.Line == 0 {
		return -1, ""
	}
	// The last object that starts at or before the line holds it.
	at := -1
	for j, s := range starts {
		if s.line <= e.Line {
			at = j
		}
	}
	if at < 0 || starts[at].i >= len(st.Objects[starts[at].kind]) {
		return -1, ""
	}
	return find(starts[at].kind, st.Objects[starts[at].kind][starts[at].i].ID), ""
}

// objectStart is where the i-th object of a kind begins in an overlay.
type objectStart struct {
	kind string
	i    int
	line int
}

// objectLines lists where each object of an overlay document begins, in
// line order.
func objectLines(data []byte) []objectStart {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	var out []objectStart
	top := root.Content[0]
	for k := 0; k+1 < len(top.Content); k += 2 {
		for i, item := range top.Content[k+1].Content {
			out = append(out, objectStart{kind: top.Content[k].Value, i: i, line: item.Line})
		}
	}
	slices.SortFunc(out, func(a, b objectStart) int { return a.line - b.line })
	return out
}

// remoteValue turns APISIX's stored JSON into what the decoder reads: the
// times APISIX adds are dropped and the id is the key's.
func remoteValue(o RemoteObject) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(o.Value))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil || v == nil {
		return nil, fmt.Errorf("not a JSON object: %s", firstBytes(o.Value))
	}
	delete(v, "create_time")
	delete(v, "update_time")
	if raw, ok := v["id"]; ok && fmt.Sprint(raw) != o.ID {
		return nil, fmt.Errorf("id: the value says %v, the key %q", raw, o.ID)
	}
	v["id"] = o.ID
	return json.Marshal(v)
}

func firstBytes(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q...", b[:40])
	}
	return fmt.Sprintf("%q", b)
}

// putRemote validates the write over the running configuration, writes it
// to the store and waits, bounded, until the watch has applied it here.
func (m *Manager) putRemote(r Remote, kind, id string, value json.RawMessage) (Object, bool, error) {
	m.mu.Lock()
	if !m.cfg.DeploymentSettings().AdminWrites() {
		m.mu.Unlock()
		return Object{}, false, ErrReadOnly
	}
	cand := m.state.clone()
	now := time.Now().Unix()
	obj, _ := cand.put(kind, id, value, now)
	docs := append(slices.Clip(m.fileDocs), cand.overlay(m.statePath))
	if _, err := config.Parse(docs...); err != nil {
		m.count("admin", ResultRefused)
		err = m.fieldErrors(err, cand, kind, id)
		m.mu.Unlock()
		return Object{}, false, err
	}
	m.mu.Unlock()
	// APISIX's values carry their times; an APISIX reading the same etcd
	// finds what it writes itself.
	var v map[string]any
	_ = json.Unmarshal(value, &v)
	v["create_time"], v["update_time"] = obj.CreateTime, now
	stored, _ := json.Marshal(v)
	rev, created, err := r.Put(context.Background(), kind, id, stored)
	if err != nil {
		m.count("admin", ResultFailed)
		return Object{}, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	m.waitApplied(rev)
	obj.ModifiedIndex = uint64(rev)
	if created {
		obj.CreatedIndex = uint64(rev)
	}
	return obj, created, nil
}

func (m *Manager) deleteRemote(r Remote, kind, id string, force bool) ([]string, error) {
	m.mu.Lock()
	if !m.cfg.DeploymentSettings().AdminWrites() {
		m.mu.Unlock()
		return nil, ErrReadOnly
	}
	_, also, err := m.deletePlan(kind, id, force)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	refs := [][2]string{{kind, id}}
	for _, rid := range also {
		refs = append(refs, [2]string{"stream_routes", rid})
	}
	rev, err := r.Delete(context.Background(), refs)
	if err != nil {
		m.count("admin", ResultFailed)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	m.waitApplied(rev)
	return also, nil
}

// waitApplied waits until a snapshot at rev or later has been applied, at
// most maxApplyWait: the write is in etcd either way.
func (m *Manager) waitApplied(rev int64) {
	deadline := time.NewTimer(maxApplyWait)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		done, ch := m.etcd.revision >= rev && m.etcd.loaded, m.etcd.applied
		m.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			m.log.Warn("an Admin API write is in etcd but not yet applied here", "revision", rev)
			return
		}
	}
}

// RemoteStatus is the Manager's view of the store, for /status.json.
type RemoteStatus struct {
	Revision  int64     `json:"revision"` // of the last snapshot applied (or of the cache)
	FromCache bool      `json:"from_cache"`
	CacheFile string    `json:"cache_file"`
	Refused   []Refusal `json:"refused"`
}

// Remote reports the applied revision, the refused objects and whether the
// objects still are the cache's; ok is false without an etcd provider.
func (m *Manager) Remote() (RemoteStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.cfg.DeploymentSettings().UsesEtcd() {
		return RemoteStatus{}, false
	}
	refused := slices.Clone(m.etcd.refused)
	if refused == nil {
		refused = []Refusal{}
	}
	return RemoteStatus{Revision: m.etcd.revision, FromCache: m.etcd.fromCache && !m.etcd.loaded, CacheFile: m.statePath, Refused: refused}, true
}
