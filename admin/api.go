// Package admin is mqgate's Admin API, compatible with APISIX's for stream
// routes, upstreams and ssls, with the status page, Prometheus metrics and
// the live connection table on the same listener. Admin changes are
// validated by the configuration decoder, kept in a state file next to the
// configuration and applied to new connections at once.
//
//	m, err := admin.Open([]string{"mqgate.yaml"}, log) // files + state file, validated
//	srv, err := proxy.New(m.Config(), proxy.Options{Log: log})
//	m.Attach(srv, nil)
//	api := admin.New(admin.Options{Manager: m, Proxy: srv, Log: log})
//	err = api.Start(ctx) // listens on admin.listen
//	...
//	m.Reload("sighup") // files changed
//
//	curl -H "X-API-KEY: $KEY" -X PUT 127.0.0.1:9180/apisix/admin/stream_routes/1 -d '{"upstream_id": 1}'
package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/etcd"
	"github.com/mqgate/mqgate/proxy"
)

// ProxyView is what the status and connection pages read: *proxy.Server.
type ProxyView interface {
	Stats() proxy.StatsSnapshot
	Connections(f proxy.ConnFilter, limit int) ([]proxy.ConnInfo, int)
	CloseClient(clientID string) []proxy.ConnInfo
	Rebalance(upstream string) (proxy.RebalanceStatus, error)
	PauseRebalance() (proxy.RebalanceStatus, error)
	ResumeRebalance() (proxy.RebalanceStatus, error)
	CancelRebalance() (proxy.RebalanceStatus, error)
}

// Options configure the Admin API server.
type Options struct {
	Manager *Manager
	Proxy   ProxyView
	Metrics http.Handler // served at /metrics; nil: 404
	Log     *slog.Logger
	// Etcd is the etcd provider with deployment.config_provider etcd:
	// /status shows it and the fleet, and kicks reach every instance.
	Etcd *etcd.Provider
}

// Server is the Admin API: an http.Handler, and a listener (Start).
type Server struct {
	m       *Manager
	proxy   ProxyView
	metrics http.Handler
	log     *slog.Logger
	etcd    *etcd.Provider
	mux     *http.ServeMux
	fails   failures
	run     listenerState
}

// maxBody bounds a request body; a certificate chain fits many times.
const maxBody = 1 << 20

// maxBodyDepth bounds how deeply a body's arrays and objects nest: the
// deepest object mqgate reads (an upstream's checks.active.healthy.
// http_statuses) is 5 levels down.
const maxBodyDepth = 32

// maxBodyValues bounds how many values (strings, numbers, objects, ...) a
// body holds: an upstream of 10,000 nodes is 20,000.
const maxBodyValues = 100_000

// defaultConnLimit bounds a /connections answer unless ?limit= says otherwise.
const defaultConnLimit = 1000

// New returns the Admin API for opts.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{m: opts.Manager, proxy: opts.Proxy, metrics: opts.Metrics, log: opts.Log, etcd: opts.Etcd, mux: http.NewServeMux()}
	const read, write, status = 0, 1, 2
	handle := func(pattern string, access int, h http.HandlerFunc) {
		s.mux.HandleFunc(pattern, s.guard(access == write, access == status, h))
	}
	handle("GET /apisix/admin/{kind}", read, s.list)
	handle("POST /apisix/admin/{kind}", write, s.create)
	handle("PUT /apisix/admin/{kind}", write, s.put)
	handle("GET /apisix/admin/{kind}/{id}", read, s.get)
	handle("PUT /apisix/admin/{kind}/{id}", write, s.put)
	handle("DELETE /apisix/admin/{kind}/{id}", write, s.delete)
	handle("GET /connections", read, s.connections)
	handle("DELETE /connections/{client_id...}", write, s.closeConnection)
	handle("POST /rebalance/{upstream}", write, s.rebalance)
	handle("POST /rebalance/pause", write, s.rebalanceStep(ProxyView.PauseRebalance))
	handle("POST /rebalance/resume", write, s.rebalanceStep(ProxyView.ResumeRebalance))
	handle("DELETE /rebalance", write, s.rebalanceStep(ProxyView.CancelRebalance))
	handle("POST /drain", write, s.drainRemoved)
	handle("GET /status", status, s.status)
	handle("GET /status.json", status, s.statusJSON)
	handle("GET /stub_status", status, s.stubStatus)
	handle("POST /reload", write, s.reload)
	handle("GET /metrics", status, s.serveMetrics)
	// The dashboard checks keys itself: without one it shows a sign-in form.
	s.mux.HandleFunc("GET /dashboard", s.dashboard)
	s.mux.HandleFunc("POST /dashboard/login", s.login)
	s.mux.HandleFunc("POST /dashboard/logout", s.logout)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// AuthFailures counts refused requests by reason, for metrics.
func (s *Server) AuthFailures() map[string]uint64 { return s.fails.snapshot() }

// guard checks the client address and the key before h runs.
func (s *Server) guard(write, status bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ref := s.authorize(r, write, status); ref != nil {
			s.refuse(r, ref)
			writeError(w, ref.code, ref.msg)
			return
		}
		h(w, r)
	}
}

// kindOf returns the path's kind, or answers 404.
func kindOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	kind := r.PathValue("kind")
	if !slices.Contains(Kinds, kind) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown resource %q (mqgate serves stream_routes, upstreams, ssls and routes)", kind))
		return "", false
	}
	return kind, true
}

// item is one object in APISIX's response shape.
type item struct {
	Key           string         `json:"key"`
	Value         map[string]any `json:"value"`
	CreatedIndex  uint64         `json:"createdIndex"`
	ModifiedIndex uint64         `json:"modifiedIndex"`
	Source        string         `json:"source,omitempty"` // file:line for objects of the files
}

func adminItem(prefix, kind string, o Object) item {
	var v map[string]any
	_ = json.Unmarshal(o.Value, &v) // stored by us from a JSON object
	v["create_time"], v["update_time"] = o.CreateTime, o.UpdateTime
	return item{Key: prefix + "/" + kind + "/" + o.ID, Value: redact(kind, v), CreatedIndex: o.CreatedIndex, ModifiedIndex: o.ModifiedIndex}
}

func fileItem(prefix, kind string, fo FileObject) item {
	v, _ := fo.Value.(map[string]any)
	if v == nil {
		v = map[string]any{}
	}
	v["id"] = fo.ID
	return item{Key: prefix + "/" + kind + "/" + fo.ID, Value: redact(kind, v), Source: fo.Source}
}

// redact hides private keys of ssls objects in answers; the state file
// keeps them, readable by its owner only.
func redact(kind string, v map[string]any) map[string]any {
	if kind != "ssls" {
		return v
	}
	for _, k := range []string{"key", "keys"} {
		if _, ok := v[k]; ok {
			v[k] = "(redacted)"
		}
	}
	return v
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	objs, prefix := s.m.List(kind), s.m.KeyPrefix()
	list := []item{}
	for _, fo := range s.m.FileObjects(kind) {
		if !slices.ContainsFunc(objs, func(o Object) bool { return o.ID == fo.ID }) {
			list = append(list, fileItem(prefix, kind, fo))
		}
	}
	for _, o := range objs {
		list = append(list, adminItem(prefix, kind, o))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": len(list), "list": list})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if o, ok := s.m.Get(kind, id); ok {
		writeJSON(w, http.StatusOK, adminItem(s.m.KeyPrefix(), kind, o))
		return
	}
	for _, fo := range s.m.FileObjects(kind) {
		if fo.ID == id {
			writeJSON(w, http.StatusOK, fileItem(s.m.KeyPrefix(), kind, fo))
			return
		}
	}
	writeError(w, http.StatusNotFound, kind+"/"+id+" not found")
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	s.write(w, r, kind, s.m.NextID(), true)
}

func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	s.write(w, r, kind, r.PathValue("id"), false)
}

// write stores the body as kind/id. For POST the id is generated and the
// body must not carry one.
func (s *Server) write(w http.ResponseWriter, r *http.Request, kind, id string, generated bool) {
	drain, window, err := drainParams(r, s.m.Config())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	value, id, err := decodeBody(r, id, generated)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	obj, created, err := s.m.Put(kind, id, value)
	if err != nil {
		s.writeWriteError(w, err)
		return
	}
	s.log.Info("admin change", "op", r.Method, "object", kind+"/"+id, "created", created, "client", r.RemoteAddr)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	resp := map[string]any{}
	it := adminItem(s.m.KeyPrefix(), kind, obj)
	resp["key"], resp["value"], resp["createdIndex"], resp["modifiedIndex"] = it.Key, it.Value, it.CreatedIndex, it.ModifiedIndex
	if drain {
		resp["draining"] = s.m.Drain(window)
	}
	writeJSON(w, code, resp)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	drain, window, err := drainParams(r, s.m.Config())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	force := r.URL.Query().Get("force") == "true"
	also, err := s.m.Delete(kind, id, force)
	if err != nil {
		s.writeWriteError(w, err)
		return
	}
	s.log.Info("admin change", "op", "DELETE", "object", kind+"/"+id, "also_deleted", also, "client", r.RemoteAddr)
	prefix := s.m.KeyPrefix()
	resp := map[string]any{"deleted": "1", "key": prefix + "/" + kind + "/" + id}
	if len(also) > 0 {
		keys := make([]string, len(also))
		for i, rid := range also {
			keys[i] = prefix + "/stream_routes/" + rid
		}
		resp["also_deleted"] = keys
	}
	if drain {
		resp["draining"] = s.m.Drain(window)
	}
	writeJSON(w, http.StatusOK, resp)
}

// drainParams reads ?drain=true|false and ?drain_window=30s, defaulting to
// the reload block.
func drainParams(r *http.Request, cfg *config.Config) (bool, time.Duration, error) {
	rs := cfg.ReloadSettings()
	drain, window := rs.DrainRemoved, rs.DrainWindow
	q := r.URL.Query()
	if v := q.Get("drain"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, 0, fmt.Errorf("drain: must be true or false, got %q", v)
		}
		drain = b
	}
	if v := q.Get("drain_window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return false, 0, fmt.Errorf(`drain_window: must be a duration like "30s", got %q`, v)
		}
		window = d
	}
	return drain, window, nil
}

func (s *Server) writeWriteError(w http.ResponseWriter, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		writeJSON(w, http.StatusBadRequest, map[string]any{"error_msg": "invalid configuration: " + ve.Error(), "errors": ve.Errors})
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, ErrInFile):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrInUse):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNoAdmin), errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrReadOnly):
		writeError(w, http.StatusForbidden, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// decodeBody reads a JSON object, drops the times APISIX adds to values
// (so a GET's value can be PUT back), and sets its id: the path's, which a
// body id must equal, or the body's when the path has none.
func decodeBody(r *http.Request, id string, generated bool) (json.RawMessage, string, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, "", fmt.Errorf("body larger than %d bytes", maxBody)
		}
		return nil, "", fmt.Errorf("reading the body: %w", err)
	}
	// Bounded before decoding: the decoder's, the state file's and the
	// validation's work grow with depth times size.
	if err := checkShape(body); err != nil {
		return nil, "", err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers pass through as written: 1 stays an integer
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, "", errors.New("empty body: send the object as JSON")
		}
		return nil, "", fmt.Errorf("body must be a JSON object: %v", err)
	}
	if v == nil {
		return nil, "", errors.New("body must be a JSON object, got null")
	}
	if dec.More() {
		return nil, "", errors.New("body must be one JSON object")
	}
	delete(v, "create_time")
	delete(v, "update_time")
	if raw, ok := v["id"]; ok {
		var bodyID string
		switch x := raw.(type) {
		case string:
			bodyID = x
		case json.Number:
			bodyID = x.String()
		default:
			return nil, "", errors.New("id: must be a string or an integer")
		}
		switch {
		case generated:
			return nil, "", errors.New("id: POST makes the id; use PUT to choose it")
		case id != "" && bodyID != id:
			return nil, "", fmt.Errorf("id: the body says %q, the path %q", bodyID, id)
		}
		id = bodyID
	}
	if id == "" {
		return nil, "", errors.New("id: required, in the path or the body")
	}
	v["id"] = id
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, "", err
	}
	return raw, id, nil
}

func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultConnLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: must be a number >= 0 (0: all), got %q", v))
			return
		}
		limit = n
	}
	list, total := s.proxy.Connections(proxy.ConnFilter{
		ClientID: q.Get("client_id"), Username: q.Get("username"),
		Node: q.Get("node"), Route: q.Get("route"), Upstream: q.Get("upstream"),
	}, limit)
	if list == nil {
		list = []proxy.ConnInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "list": list})
}

// closeConnection closes the client's connections here and, with etcd, on
// every other instance of the fleet (?local=true: here only).
func (s *Server) closeConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("client_id")
	closed := s.proxy.CloseClient(id)
	if closed == nil {
		closed = []proxy.ConnInfo{}
	}
	resp := map[string]any{"closed": len(closed), "list": closed}
	total := len(closed)
	if s.etcd != nil && r.URL.Query().Get("local") != "true" {
		answers, err := s.etcd.Kick(r.Context(), id)
		if err != nil {
			resp["fleet_error"] = err.Error()
		}
		elsewhere := map[string]any{}
		for name, raw := range answers {
			var list []proxy.ConnInfo
			_ = json.Unmarshal(raw, &list)
			if list == nil {
				list = []proxy.ConnInfo{}
			}
			elsewhere[name] = map[string]any{"closed": len(list), "list": list}
			total += len(list)
		}
		resp["instances"] = elsewhere
		resp["closed"] = total
	}
	if total == 0 {
		resp["error_msg"] = fmt.Sprintf("no live connection with client id %q", id)
		writeJSON(w, http.StatusNotFound, resp)
		return
	}
	s.log.Info("admin closed a connection", "client_id", id, "count", total, "here", len(closed), "client", r.RemoteAddr)
	writeJSON(w, http.StatusOK, resp)
}

// rebalance starts a paced rebalance of the upstream: its connections not
// on the node the balancer picks for them now move at rebalance.rate.
func (s *Server) rebalance(w http.ResponseWriter, r *http.Request) {
	st, err := s.proxy.Rebalance(r.PathValue("upstream"))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.log.Info("admin started a rebalance", "upstream", st.Upstream, "count", st.Total, "client", r.RemoteAddr)
	writeJSON(w, http.StatusOK, st)
}

// drainRemoved starts a paced drain of the connections whose route or node
// the running configuration no longer has (what ?drain=true does after a
// write), at rebalance.rate or within ?drain_window=.
func (s *Server) drainRemoved(w http.ResponseWriter, r *http.Request) {
	_, window, err := drainParams(r, s.m.Config())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n := s.m.Drain(window)
	s.log.Info("admin started a drain", "count", n, "client", r.RemoteAddr)
	st := proxy.RebalanceStatus{Reason: proxy.ReasonDrain, State: proxy.RebalanceDone}
	if last := s.proxy.Stats().Rebalance; n > 0 && last != nil {
		st = *last
	}
	writeJSON(w, http.StatusOK, st)
}

// reload re-reads the configuration files and the state file, as SIGHUP
// does (`mqgate reload` asks for it): 200 with the new configuration's
// summary, or 400 with every error as file:line: path: why, the running
// configuration kept.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	s.log.Info("admin asked for a reload", "client", r.RemoteAddr)
	if err := s.m.Reload(ReloadAdminAPI); err != nil {
		errs := []string{err.Error()}
		var list config.ErrorList
		if errors.As(err, &list) {
			errs = errs[:0]
			for _, e := range list {
				errs = append(errs, e.Error())
			}
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error_msg": "reload refused, the running configuration stays", "errors": errs})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "config": s.m.Config().Summary()})
}

// rebalanceStep pauses, resumes or cancels the rebalance that runs.
func (s *Server) rebalanceStep(step func(ProxyView) (proxy.RebalanceStatus, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st, err := step(s.proxy)
		if err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, st)
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		http.NotFound(w, r)
		return
	}
	s.metrics.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error_msg": msg})
}

// checkShape refuses a body nested deeper than maxBodyDepth or holding
// more than maxBodyValues values, in one pass over its bytes that decodes
// nothing: a 54 KB body of 9,000 nested objects cost seconds and hundreds of
// MB before it was refused this way.
func checkShape(body []byte) error {
	depth, values := 0, 0
	inString, escaped := false, false
	for _, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			values++
		case '{', '[':
			depth++
			values++
			if depth > maxBodyDepth {
				return fmt.Errorf("body nested deeper than %d levels of objects and arrays", maxBodyDepth)
			}
		case '}', ']':
			depth--
		case ',':
			values++
		}
		if values > maxBodyValues {
			return fmt.Errorf("body holds more than %d keys and values", maxBodyValues)
		}
	}
	return nil
}
