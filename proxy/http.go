package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"time"

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
			Transport:    &balancedTransport{up: up, tr: httpTransport(up)},
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

// httpTransport keeps connections to the upstream's nodes; dials go
// through the upstream's dialer (TLS for scheme https, a PROXY header when
// the upstream sends one, from its first source address if it has some),
// bounded by its connect timeout.
func httpTransport(up *upstream) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, up.cfg.Timeout.Connect)
			defer cancel()
			host, _, _ := net.SplitHostPort(addr)
			return up.dialer.dial(ctx, addr, host, nil, up.dialer.firstSource)
		},
		ResponseHeaderTimeout: up.cfg.Timeout.Read,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
	}
}

// match returns the first route that takes r from client, or nil.
func matchHTTP(routes []*httpRoute, r *http.Request, client netip.Addr) *httpRoute {
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
		return hr
	}
	return nil
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
	if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
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
	for i := range up.bal.Order(ex.key) {
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

// proxyHTTP sends r through hr, and logs one line for it in the process
// log (the access log's records are connections).
func (s *Server) proxyHTTP(w http.ResponseWriter, r *http.Request, hr *httpRoute, wc *webConn, client netip.Addr) {
	if !hr.cfg.EnableWebSocket && mqttws.IsUpgrade(r) {
		http.Error(w, fmt.Sprintf("route %s does not pass WebSocket upgrades (enable_websocket: false)", hr.cfg.ID), http.StatusBadRequest)
		return
	}
	ex := &httpExchange{route: hr, client: client, proto: "http"}
	if wc.id.tls != nil {
		ex.proto = "https"
	}
	ex.key = hr.up.hashKey(&wc.id.vars, client)
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	hr.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpExchangeKey{}, ex)))
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		s.log.LogAttrs(context.Background(), slog.LevelInfo, "http_request",
			slog.String("listener", wc.listener.Addr),
			slog.String("client", client.String()),
			slog.String("route", hr.cfg.ID),
			slog.String("method", r.Method),
			slog.String("host", r.Host),
			slog.String("uri", r.URL.RequestURI()),
			slog.Int("status", sw.status),
			slog.String("node", ex.node),
			slog.Float64("duration_s", time.Since(start).Seconds()))
	}
}

// statusWriter notes the status written; Unwrap lets the reverse proxy
// reach the connection for WebSocket upgrades.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
