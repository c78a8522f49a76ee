package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/metrics"
)

// Proxy is what the Manager configures: *proxy.Server.
type Proxy interface {
	Apply(*config.Config) error
	DrainRemoved(window time.Duration) int
}

// Manager owns the running configuration: the files, the Admin API state
// and the proxy they configure. Every change (a reload on SIGHUP or a file
// change, an Admin API write) goes through it one at a time and is
// validated as a whole, by the same decoder as `mqgate check`, before
// anything is written or applied.
//
// The files must be valid on their own. Admin API objects are laid over
// them by id: an object replaces the file's object with the same id, in
// place, and the others are added after the files' own.
type Manager struct {
	files []string
	log   *slog.Logger

	mu        sync.Mutex // serializes changes
	proxy     Proxy
	onApply   func(*config.Config)
	fileDocs  []config.Document // as last applied
	read      []byte            // fingerprint of the files as last read, valid or not (Watch)
	statePath string            // "" without an admin block
	state     *State
	cfg       *config.Config
	started   *config.Config // at Open: what the restart-only keys still run with
	lastRead  *config.Config // the last configuration applied, as its files said it (restart-only keys included)

	etcd remoteState // with deployment.config_provider etcd (remote.go)

	statsMu     sync.Mutex
	reloads     map[[2]string]uint64 // by source, result
	lastSuccess time.Time
	lastError   string
}

// Reload results, as counted in mqgate_config_reloads_total.
const (
	ResultOK      = "ok"
	ResultRefused = "refused" // invalid: the running configuration stays
	ResultFailed  = "failed"  // valid, but could not be applied or stored
)

// ReloadAdminAPI is the source of a reload asked for with POST /reload
// (`mqgate reload`), as counted in mqgate_config_reloads_total.
const ReloadAdminAPI = "admin_api"

// Open reads and validates the files and the state file, without applying
// anything: hand Config to proxy.New, then Attach the proxy.
func Open(files []string, log *slog.Logger) (*Manager, error) {
	m := &Manager{files: files, log: log, reloads: make(map[[2]string]uint64)}
	docs, err := config.ReadFiles(files...)
	if err != nil {
		return nil, err
	}
	cfg, st, path, err := build(docs)
	if err != nil {
		return nil, err
	}
	m.fileDocs, m.cfg, m.state, m.statePath = docs, cfg, st, path
	m.read = docsFingerprint(docs)
	m.started, m.lastRead = cfg, cfg
	if cfg.DeploymentSettings().UsesEtcd() {
		m.openCache(st)
	}
	m.count("start", ResultOK)
	return m, nil
}

// Attach sets the proxy that later changes are applied to, and a function
// called with every configuration applied (to set the log level, say).
func (m *Manager) Attach(p Proxy, onApply func(*config.Config)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.proxy, m.onApply = p, onApply
}

// KeyPrefix is the prefix of the objects' keys in Admin API answers:
// deployment.etcd.prefix, under which the objects live in etcd, or
// APISIX's default /apisix.
func (m *Manager) KeyPrefix() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.cfg.DeploymentSettings().Etcd; e != nil {
		return e.Prefix
	}
	return config.DefaultEtcdPrefix
}

// Config returns the running configuration.
func (m *Manager) Config() *config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// build validates the files alone, as `mqgate check` does, then with the
// Admin API state laid over them.
func build(docs []config.Document) (*config.Config, *State, string, error) {
	fileCfg, err := config.Parse(docs...)
	if err != nil {
		return nil, nil, "", err
	}
	if dep := fileCfg.DeploymentSettings(); dep.UsesEtcd() {
		return buildCached(docs, fileCfg, dep.Etcd.CacheFile)
	}
	if fileCfg.Admin == nil {
		return fileCfg, nil, "", nil
	}
	path := fileCfg.Admin.StateFile
	st, err := LoadState(path)
	if err != nil {
		return nil, nil, "", err
	}
	if st.count() == 0 {
		return fileCfg, st, path, nil
	}
	cfg, err := config.Parse(append(slices.Clip(docs), st.overlay(path))...)
	if err != nil {
		return nil, nil, "", fmt.Errorf("the Admin API objects in %s do not fit the files:\n%w", path, err)
	}
	return cfg, st, path, nil
}

// Reload re-reads the files and the state file and applies them when they
// are valid; otherwise the running configuration stays and the errors are
// logged and returned. source names the trigger in logs and metrics.
func (m *Manager) Reload(source string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	docs, err := config.ReadFiles(m.files...)
	var (
		cfg  *config.Config
		st   *State
		path string
	)
	if err == nil {
		m.read = docsFingerprint(docs) // seen, even if refused: no retry until it changes
		cfg, st, path, err = m.rebuild(docs)
	}
	if err != nil {
		m.count(source, ResultRefused)
		m.setError(err)
		m.log.Error("reload refused, keeping the running configuration", "source", source, "err", err.Error())
		return err
	}
	if err := m.apply(cfg); err != nil {
		m.count(source, ResultFailed)
		m.setError(err)
		m.log.Error("reload failed, keeping the running configuration", "source", source, "err", err)
		return err
	}
	// Said once per change: a later reload that leaves a waiting key as
	// it was says nothing more of it.
	read := *cfg
	if keys := config.RestartOnlyNews(m.started, m.lastRead, &read); len(keys) > 0 {
		m.log.Warn("reloaded, but these settings apply only when mqgate restarts: "+strings.Join(keys, ", "), "keys", keys)
	}
	m.lastRead = &read
	// The role, the config provider and the etcd settings stay as they
	// are until restart.
	cfg.Deployment = m.started.Deployment
	m.fileDocs, m.cfg, m.state, m.statePath = docs, cfg, st, path
	m.count(source, ResultOK)
	m.log.Info("reloaded", "source", source, "config", cfg.Summary())
	for _, w := range cfg.Warnings {
		m.log.Warn("configuration warning", "warning", w.Error())
	}
	if r := cfg.ReloadSettings(); r.DrainRemoved {
		m.drain(r.DrainWindow)
	}
	return nil
}

func (m *Manager) apply(cfg *config.Config) error {
	if m.proxy != nil {
		if err := m.proxy.Apply(cfg); err != nil {
			return err
		}
	}
	if m.onApply != nil {
		m.onApply(cfg)
	}
	return nil
}

// Drain closes, spread over window, the connections of routes and nodes
// the running configuration no longer has; it returns how many.
func (m *Manager) Drain(window time.Duration) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drain(window)
}

func (m *Manager) drain(window time.Duration) int {
	if m.proxy == nil {
		return 0
	}
	return m.proxy.DrainRemoved(window)
}

func (m *Manager) count(source, result string) {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	m.reloads[[2]string{source, result}]++
	if result == ResultOK {
		m.lastSuccess, m.lastError = time.Now(), ""
	}
}

func (m *Manager) setError(err error) {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	m.lastError = err.Error()
}

// ReloadStats reports the reloads by source and result and when the last
// one succeeded, for metrics.
func (m *Manager) ReloadStats() ([]metrics.Reload, float64) {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	var out []metrics.Reload
	for k, n := range m.reloads {
		out = append(out, metrics.Reload{Source: k[0], Result: k[1], Count: n})
	}
	slices.SortFunc(out, func(a, b metrics.Reload) int {
		return strings.Compare(a.Source+"/"+a.Result, b.Source+"/"+b.Result)
	})
	var last float64
	if !m.lastSuccess.IsZero() {
		last = float64(m.lastSuccess.UnixNano()) / 1e9
	}
	return out, last
}

func (m *Manager) lastReload() (time.Time, string) {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	return m.lastSuccess, m.lastError
}

// Errors of Admin API writes; the handlers turn them into HTTP statuses.
var (
	ErrNotFound    = errors.New("not found")
	ErrNoAdmin     = errors.New("the configuration has no admin block")
	ErrInFile      = errors.New("declared in a configuration file")
	ErrInUse       = errors.New("in use")
	ErrStateFailed = errors.New("cannot store the change")
)

// FieldError is one reason a write is invalid: the field of the request
// body (empty for the object as a whole) and why.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError is a write the configuration decoder refused.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		if fe.Field == "" {
			parts[i] = fe.Message
			continue
		}
		parts[i] = fe.Field + ": " + fe.Message
	}
	return strings.Join(parts, "; ")
}

// Get returns the admin object kind/id.
func (m *Manager) Get(kind, id string) (Object, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return Object{}, false
	}
	if i := m.state.find(kind, id); i >= 0 {
		return m.state.Objects[kind][i], true
	}
	return Object{}, false
}

// Put validates kind/id with value laid over the running configuration,
// stores it and applies it. It reports whether the object is new.
func (m *Manager) Put(kind, id string, value json.RawMessage) (Object, bool, error) {
	if r := m.remoteStore(); r != nil {
		return m.putRemote(r, kind, id, value)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return Object{}, false, ErrNoAdmin
	}
	cand := m.state.clone()
	obj, created := cand.put(kind, id, value, time.Now().Unix())
	if err := m.commit(cand, kind, id); err != nil {
		return Object{}, false, err
	}
	return obj, created, nil
}

// NextID is the id POST gives a new object: 20 digits, as APISIX's.
func (m *Manager) NextID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return ""
	}
	if m.etcd.remote != nil {
		// Instances write to etcd at once: a clock-based id does not
		// collide between them the way a local counter would.
		return fmt.Sprintf("%020d", time.Now().UnixNano())
	}
	return fmt.Sprintf("%020d", m.state.Index+1)
}

// Delete removes the admin object kind/id. An upstream that stream routes
// use is refused (ErrInUse) unless force is set; force also deletes the
// admin routes that use it, and returns their ids.
func (m *Manager) Delete(kind, id string, force bool) (alsoDeleted []string, err error) {
	if r := m.remoteStore(); r != nil {
		return m.deleteRemote(r, kind, id, force)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cand, alsoDeleted, err := m.deletePlan(kind, id, force)
	if err != nil {
		return nil, err
	}
	if err := m.commit(cand, "", ""); err != nil {
		return nil, err
	}
	return alsoDeleted, nil
}

// deletePlan is the state without kind/id (and, with force, the routes
// that use it), or why it cannot be deleted.
func (m *Manager) deletePlan(kind, id string, force bool) (cand *State, alsoDeleted []string, err error) {
	if m.state == nil {
		return nil, nil, ErrNoAdmin
	}
	if m.state.find(kind, id) < 0 {
		if where := m.fileObjectAt(kind, id); where != "" {
			return nil, nil, fmt.Errorf("%w at %s: change it there", ErrInFile, where)
		}
		return nil, nil, ErrNotFound
	}
	cand = m.state.clone()
	cand.remove(kind, id)
	if kind == "upstreams" && m.fileObjectAt(kind, id) == "" {
		var users, fileUsers []string
		for _, r := range m.cfg.StreamRoutes {
			if r.UpstreamID != id {
				continue
			}
			if r.File == m.statePath {
				users = append(users, r.ID)
			} else {
				fileUsers = append(fileUsers, fmt.Sprintf("%s (%s:%d)", r.ID, r.File, r.Line))
			}
		}
		switch {
		case len(fileUsers) > 0:
			return nil, nil, fmt.Errorf("%w: can not delete this upstream, stream routes declared in files use it: %s", ErrInUse, strings.Join(fileUsers, ", "))
		case len(users) > 0 && !force:
			return nil, nil, fmt.Errorf("%w: can not delete this upstream, stream_route [%s] is still using it now (add ?force=true to delete those routes too)", ErrInUse, strings.Join(users, ", "))
		}
		for _, rid := range users {
			cand.remove("stream_routes", rid)
		}
		alsoDeleted = users
	}
	return cand, alsoDeleted, nil
}

// commit validates cand over the files, stores it, then applies it. A
// failure leaves the state file and the running configuration as they were.
// kind/id name the object being written, to report errors by its fields.
func (m *Manager) commit(cand *State, kind, id string) error {
	docs := append(slices.Clip(m.fileDocs), cand.overlay(m.statePath))
	cfg, err := config.Parse(docs...)
	if err != nil {
		m.count("admin", ResultRefused)
		return m.fieldErrors(err, cand, kind, id)
	}
	if err := cand.Save(m.statePath); err != nil {
		m.count("admin", ResultFailed)
		m.log.Error("admin change not stored", "err", err)
		return fmt.Errorf("%w: %v", ErrStateFailed, err)
	}
	if err := m.apply(cfg); err != nil {
		m.count("admin", ResultFailed)
		if rerr := m.state.Save(m.statePath); rerr != nil {
			m.log.Error("cannot restore the admin state after a failed apply", "err", rerr)
		}
		return fmt.Errorf("%w: %v", ErrStateFailed, err)
	}
	m.state, m.cfg = cand, cfg
	m.count("admin", ResultOK)
	return nil
}

// fieldErrors maps the decoder's errors to the fields of the object being
// written; errors elsewhere name the object or file they are in.
func (m *Manager) fieldErrors(err error, cand *State, kind, id string) error {
	var list config.ErrorList
	if !errors.As(err, &list) {
		return &ValidationError{Errors: []FieldError{{Message: err.Error()}}}
	}
	own := ""
	if kind != "" {
		own = fmt.Sprintf("%s[%d]", kind, cand.find(kind, id))
	}
	ve := &ValidationError{}
	for _, e := range list {
		switch {
		case own != "" && e.File == m.statePath && (e.Path == own || strings.HasPrefix(e.Path, own+".") || strings.HasPrefix(e.Path, own+"[")):
			field := strings.TrimPrefix(strings.TrimPrefix(e.Path, own), ".")
			ve.Errors = append(ve.Errors, FieldError{Field: field, Message: e.Msg})
		case e.File == m.statePath:
			ve.Errors = append(ve.Errors, FieldError{Field: m.objectPath(cand, e.Path), Message: e.Msg})
		default:
			ve.Errors = append(ve.Errors, FieldError{Message: e.Error()})
		}
	}
	return ve
}

// objectPath rewrites "stream_routes[2].upstream_id" as
// "stream_routes/<id of the third>.upstream_id".
func (m *Manager) objectPath(st *State, path string) string {
	for _, kind := range Kinds {
		for i, o := range st.Objects[kind] {
			prefix := fmt.Sprintf("%s[%d]", kind, i)
			if path == prefix || strings.HasPrefix(path, prefix+".") {
				return kind + "/" + o.ID + strings.TrimPrefix(path, prefix)
			}
		}
	}
	return path
}

// fileObjectAt returns "file:line" of the file object kind/id, or "".
func (m *Manager) fileObjectAt(kind, id string) string {
	for _, fo := range m.fileObjects(kind) {
		if fo.ID == id {
			return fo.Source
		}
	}
	return ""
}

// FileObject is an object declared in a configuration file, for listing.
type FileObject struct {
	ID     string
	Source string // file:line
	Value  any    // as the YAML says
}

// FileObjects lists the objects of kind the files declare.
func (m *Manager) FileObjects(kind string) []FileObject {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fileObjects(kind)
}

func (m *Manager) fileObjects(kind string) []FileObject { return FileObjects(m.fileDocs, kind) }

// FileObjects lists the objects of kind the documents declare, with the ids
// the decoder gives them (routes without one are "route-<index>").
func FileObjects(docs []config.Document, kind string) []FileObject {
	var out []FileObject
	i := 0 // routes without an id are named by their place among all files' routes
	for _, doc := range docs {
		var root yaml.Node
		if yaml.Unmarshal(doc.Data, &root) != nil || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
			continue
		}
		top := root.Content[0]
		for k := 0; k+1 < len(top.Content); k += 2 {
			if top.Content[k].Value != kind || top.Content[k+1].Kind != yaml.SequenceNode {
				continue
			}
			for _, item := range top.Content[k+1].Content {
				var v map[string]any
				if item.Decode(&v) != nil {
					i++
					continue
				}
				id := ""
				if raw, ok := v["id"]; ok {
					id = fmt.Sprint(raw)
				} else if kind == "stream_routes" {
					id = fmt.Sprintf("route-%d", i)
				} else if kind == "routes" {
					id = fmt.Sprintf("http-route-%d", i)
				}
				i++
				if id != "" {
					out = append(out, FileObject{ID: id, Source: fmt.Sprintf("%s:%d", doc.Name, item.Line), Value: v})
				}
			}
		}
	}
	return out
}

// StatePath is where admin changes are stored, "" without an admin block.
func (m *Manager) StatePath() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statePath
}

// List returns the admin objects of kind in creation order.
func (m *Manager) List(kind string) []Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return nil
	}
	return slices.Clone(m.state.Objects[kind])
}
