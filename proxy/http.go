package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqttws"
)

// This file is the HTTP side of a listener on a node_listen port: APISIX's
// `routes` matched on host, path, method and client address, and each
// request sent through httputil.ReverseProxy to a node of the route's
// upstream, chosen by the same balancers and health as the stream side
// and dialled by the upstream's one dialer.

// httpRoute is a compiled HTTP route of a snapshot.
type httpRoute struct {
	cfg   *config.HTTPRoute
	up    *upstream
	proxy *httputil.ReverseProxy
}

// buildHTTPRoutes compiles cfg's routes in match order: priority, then the
// more specific URI, then file order.
func buildHTTPRoutes(cfg *config.Config, upstreamOf func(r *config.HTTPRoute) (*upstream, error)) ([]*httpRoute, error) {
	var out []*httpRoute
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		up, err := upstreamOf(r)
		if err != nil {
			return nil, err
		}
		hr := &httpRoute{cfg: r, up: up}
		hr.proxy = &httputil.ReverseProxy{
			Rewrite:      hr.rewrite,
			Transport:    &balancedTransport{up: up, tr: httpTransport(up, routeTimeout(r, up.cfg))},
			ErrorHandler: hr.failed,
		}
		out = append(out, hr)
	}
	slices.SortStableFunc(out, func(a, b *httpRoute) int {
		return cmp.Or(cmp.Compare(b.cfg.Priority, a.cfg.Priority), cmp.Compare(specificity(b.cfg), specificity(a.cfg)))
	})
	return out, nil
}

// specificity ranks a route's most specific URI: an exact one above any
// prefix, a longer prefix above a shorter one, no URI last.
func specificity(r *config.HTTPRoute) int {
	best := 0
	for _, u := range r.URIs {
		score := 1 << 20
		if p, ok := strings.CutSuffix(u, "*"); ok {
			score = len(p)
		}
		best = max(best, score)
	}
	return best
}

// routeTimeout is the route's connect, send and read timeouts, each one
// the upstream's where the route sets none.
func routeTimeout(r *config.HTTPRoute, u *config.Upstream) config.Timeout {
	t := u.Timeout
	t.Connect = cmp.Or(r.Timeout.Connect, t.Connect)
	t.Send = cmp.Or(r.Timeout.Send, t.Send)
	t.Read = cmp.Or(r.Timeout.Read, t.Read)
	return t
}

// httpTransport keeps connections to the upstream's nodes; dials go
// through the upstream's dialer (TLS for scheme https, a PROXY header when
// the upstream sends one, from its first source address if it has some),
// bounded by the connect timeout, and each connection bounds its reads and
// writes by the read and send timeouts (timedConn).
func httpTransport(up *upstream, t config.Timeout) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, t.Connect)
			defer cancel()
			host, _, _ := net.SplitHostPort(addr)
			c, err := up.dialer.dial(ctx, addr, host, nil, up.dialer.firstSource)
			if err != nil || t.Send == 0 && t.Read == 0 {
				return c, err
			}
			return &timedConn{Conn: c, send: t.Send, read: t.Read}, nil
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
}

// timedConn is a connection to an HTTP node with NGINX's proxy_send_timeout
// and proxy_read_timeout, as APISIX's timeout.send and timeout.read are:
// each write must be done within send of its start and each read within
// read, so they bound the time between two successive operations, not the
// whole request (a long download that keeps coming goes on). An idle
// keep-alive connection's read ends the same way, closing it; and an
// upgraded WebSocket passed through is closed after read without a frame
// from the node, as NGINX closes it.
type timedConn struct {
	net.Conn
	send, read time.Duration
}

func (c *timedConn) Read(p []byte) (int, error) {
	if c.read > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.read))
	}
	return c.Conn.Read(p)
}

func (c *timedConn) Write(p []byte) (int, error) {
	if c.send > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.send))
	}
	return c.Conn.Write(p)
}

// match returns the first route that takes r from client, or nil; scheme
// is "http" or "https", as the client spoke.
func matchHTTP(routes []*httpRoute, r *http.Request, client netip.Addr, scheme string) *httpRoute {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, hr := range routes {
		c := hr.cfg
		if len(c.Methods) > 0 && !slices.Contains(c.Methods, r.Method) {
			continue
		}
		if len(c.Hosts) > 0 && !slices.ContainsFunc(c.Hosts, func(p string) bool { return hostMatches(p, host) }) {
			continue
		}
		if len(c.URIs) > 0 && !slices.ContainsFunc(c.URIs, func(u string) bool { return uriMatches(u, r.URL.Path) }) {
			continue
		}
		if len(c.RemoteAddrs) > 0 && !allowed(c.RemoteAddrs, client) {
			continue
		}
		if !varsHold(c.Vars, r, client, scheme) {
			continue
		}
		return hr
	}
	return nil
}

// varsHold reports whether every one of a route's vars holds for r.
func varsHold(exprs []config.VarExpr, r *http.Request, client netip.Addr, scheme string) bool {
	for i := range exprs {
		e := &exprs[i]
		v, ok := httpVar(r, e.Var, client, scheme)
		if !e.Match(v, ok) {
			return false
		}
	}
	return true
}

// httpVar is the value of one of the variables route vars may name
// (config.VarExpr), as APISIX (NGINX) has it: ok is false when the request
// has none.
func httpVar(r *http.Request, name string, client netip.Addr, scheme string) (string, bool) {
	if arg, ok := strings.CutPrefix(name, "arg_"); ok {
		vs, ok := r.URL.Query()[arg]
		if !ok || len(vs) == 0 {
			return "", false
		}
		return vs[0], true
	}
	if h, ok := strings.CutPrefix(name, "http_"); ok {
		vs := r.Header.Values(strings.ReplaceAll(h, "_", "-"))
		if len(vs) == 0 {
			return "", false
		}
		return strings.Join(vs, ", "), true // NGINX joins repeated headers too
	}
	if name, ok := strings.CutPrefix(name, "cookie_"); ok {
		c, err := r.Cookie(name)
		if err != nil {
			return "", false
		}
		return c.Value, true
	}
	switch name {
	case "uri":
		return r.URL.Path, true
	case "host":
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		return host, true
	case "request_method":
		return r.Method, true
	case "remote_addr":
		return client.String(), true
	case "scheme":
		return scheme, true
	}
	return "", false
}

func hostMatches(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

func uriMatches(pattern, path string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(path, prefix)
	}
	return pattern == path
}

// httpExchange is what one proxied request carries through the reverse
// proxy: who the client is, the balancer key, and the node it went to.
type httpExchange struct {
	route  *httpRoute
	client netip.Addr
	proto  string // "http" or "https", as the client spoke
	key    string
	node   string
	detail string // why the proxy failed, for the access record
}

type httpExchangeKey struct{}

// rewrite sets what the upstream sees: the node (filled in by the
// transport), Host as pass_host says, and the client in X-Forwarded-For,
// X-Forwarded-Proto, X-Forwarded-Host and X-Real-IP, as seed 004's NGINX
// sets them.
func (hr *httpRoute) rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(httpExchangeKey{}).(*httpExchange)
	pr.Out.URL.Scheme = "http" // the upstream's dialer does TLS for https
	pr.Out.URL.Host = hr.up.cfg.ID
	switch hr.cfg.PassHost {
	case config.PassHostNode:
		pr.Out.Host = "" // the node's address, set by the transport
	case config.PassHostRewrite:
		pr.Out.Host = hr.cfg.UpstreamHost
	default:
		pr.Out.Host = pr.In.Host
	}
	client := ex.client.String()
	if prior := pr.In.Header.Values("X-Forwarded-For"); len(prior) > 0 {
		pr.Out.Header.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+client)
	} else {
		pr.Out.Header.Set("X-Forwarded-For", client)
	}
	pr.Out.Header.Set("X-Real-IP", client)
	pr.Out.Header.Set("X-Forwarded-Proto", ex.proto)
	pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
}

func (hr *httpRoute) failed(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		status = http.StatusGatewayTimeout // connect, send or read timeout, as NGINX answers them
	}
	if ex, ok := r.Context().Value(httpExchangeKey{}).(*httpExchange); ok {
		ex.detail = err.Error()
	}
	http.Error(w, fmt.Sprintf("route %s: upstream %s: %v", hr.cfg.ID, hr.up.cfg.ID, err), status)
}

// balancedTransport sends a request to the upstream's nodes in the
// balancer's order, moving to the next node when one cannot be reached
// (at most 1 + retries), and reports each dial to the node's health.
type balancedTransport struct {
	up *upstream
	tr *http.Transport
}

var errNoNode = errors.New("no node reachable")

func (b *balancedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := req.Context().Value(httpExchangeKey{}).(*httpExchange)
	up := b.up
	err := errNoNode
	tries := 0
	for _, i := range up.order(ex.key) {
		if tries > up.cfg.Retries {
			break
		}
		if tries > 0 && req.Body != nil && req.Body != http.NoBody {
			break // the body went to the failed node
		}
		tries++
		out := req.Clone(req.Context())
		out.URL.Host = up.addrs[i]
		var resp *http.Response
		resp, err = b.tr.RoundTrip(out)
		var op *net.OpError
		if err != nil && errors.As(err, &op) && op.Op == "dial" {
			up.health[i].ReportDial(err)
			up.nodes[i].dialFails.Add(1)
			continue
		}
		up.health[i].ReportDial(nil)
		ex.node = up.addrs[i]
		up.nodes[i].total.Add(1)
		return resp, err
	}
	return nil, err
}

// proxyHTTP sends r through hr, and writes its record to the access log.
// forwarded says that client is the address a trusted proxy in front gave.
func (s *Server) proxyHTTP(w http.ResponseWriter, r *http.Request, hr *httpRoute, wc *webConn, client netip.AddrPort, forwarded bool) {
	start := time.Now()
	if !hr.cfg.EnableWebSocket && mqttws.IsUpgrade(r) {
		text := fmt.Sprintf("route %s does not pass WebSocket upgrades (enable_websocket: false)", hr.cfg.ID)
		http.Error(w, text, http.StatusBadRequest)
		s.logHTTP(r, wc, client, forwarded, start, httpOutcome{route: hr.cfg.ID, upstream: hr.up.cfg.ID, status: http.StatusBadRequest, detail: text})
		return
	}
	ex := &httpExchange{route: hr, client: client.Addr(), proto: "http"}
	if wc.id.tls != nil {
		ex.proto = "https"
	}
	ex.key = hr.up.hashKey(&wc.vars, client.Addr())
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{ReadCloser: r.Body}
		r.Body = body
	}
	hr.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpExchangeKey{}, ex)))
	out := httpOutcome{route: hr.cfg.ID, upstream: hr.up.cfg.ID, node: ex.node, status: sw.status, down: sw.bytes, detail: ex.detail}
	if body != nil {
		out.up = body.n
	}
	s.logHTTP(r, wc, client, forwarded, start, out)
}

// httpOutcome is what became of an HTTP request, for its access record.
type httpOutcome struct {
	route, upstream, node string
	status                int
	up, down              int64 // body bytes from the client and to it
	detail                string
	errorKind             string // a refused WebSocket upgrade's kind (mqttws.Refusal)
}

// logHTTP writes an HTTP request's record to the access log: the JSON
// line's msg is http_request, and a format has NGINX's HTTP variables
// ($request, $status, $body_bytes_sent, $http_user_agent, ...).
func (s *Server) logHTTP(r *http.Request, wc *webConn, client netip.AddrPort, forwarded bool, start time.Time, out httpOutcome) {
	if s.access == nil {
		return
	}
	ar := accesslog.Record{
		Listener:  wc.listener.Addr,
		Client:    client,
		Route:     out.route,
		Node:      out.node,
		Upstream:  out.upstream,
		Status:    out.status,
		BytesUp:   out.up,
		BytesDown: out.down,
		Duration:  time.Since(start),
		Detail:    out.detail,
		ErrorKind: out.errorKind,
		Server:    wc.id.local,
		Method:    r.Method,
		Host:      r.Host,
		URI:       r.RequestURI,
		Proto:     r.Proto,
		UserAgent: r.UserAgent(),
		Referer:   r.Referer(),
	}
	wc.id.fill(&ar)
	if forwarded {
		ar.ForwardedBy, ar.ProxyProtocolPeer = wc.remote, netip.AddrPort{}
	}
	s.access.Log(&ar)
}

// countingBody counts the request body's bytes as the proxy reads them.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// statusWriter notes the status and the body bytes written; Unwrap lets
// the reverse proxy reach the connection for WebSocket upgrades.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
