package config

import (
	"errors"
	"io/fs"
	"os"
)

// overlayKeys are the sections an Overlay document may hold.
var overlayKeys = map[string]bool{"stream_routes": true, "upstreams": true, "ssls": true, "routes": true}

// ReadFiles reads configuration files into documents for Parse, reporting
// every file that cannot be read. Parse(ReadFiles(paths)...) is Load(paths...).
func ReadFiles(paths ...string) ([]Document, error) {
	docs, errs := readDocuments(paths)
	if len(errs) > 0 {
		return nil, ErrorList(errs)
	}
	return docs, nil
}

func readDocuments(paths []string) (docs []Document, errs []*Error) {
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			msg := err.Error()
			if pe, ok := errors.AsType[*fs.PathError](err); ok {
				msg = pe.Err.Error()
			}
			errs = append(errs, &Error{File: path, Msg: "cannot read: " + msg, Err: err})
			continue
		}
		docs = append(docs, Document{Name: path, Data: data})
	}
	return docs, errs
}

// applyOverlay puts each route, upstream and ssl of an Overlay document in the
// place of the file's object with the same id; the others are added after
// the files' own, in the overlay's order. Route order matters: the first
// match wins.
func (b *builder) applyOverlay() {
	overRoutes := make(map[string]*routeDecl)
	for i := range b.routes {
		r := &b.routes[i]
		if !r.overlay {
			continue
		}
		if r.idLine == 0 {
			b.p.errorf(r.File, r.Line, r.path+".id", "required in Admin API state")
			continue
		}
		if _, dup := overRoutes[r.ID]; !dup {
			overRoutes[r.ID] = r
		}
	}
	if len(overRoutes) > 0 {
		b.routes = overlaid(b.routes, overRoutes, func(r *routeDecl) (string, bool) { return r.ID, r.overlay })
	}
	overUpstreams := make(map[string]*upstreamDecl)
	for i := range b.upstreams {
		if u := &b.upstreams[i]; u.overlay && u.ID != "" {
			if _, dup := overUpstreams[u.ID]; !dup {
				overUpstreams[u.ID] = u
			}
		}
	}
	if len(overUpstreams) > 0 {
		b.upstreams = overlaid(b.upstreams, overUpstreams, func(u *upstreamDecl) (string, bool) { return u.ID, u.overlay })
	}
	overHTTP := make(map[string]*httpRouteDecl)
	for i := range b.httpRoutes {
		r := &b.httpRoutes[i]
		if !r.overlay {
			continue
		}
		if r.ID == "" {
			b.p.errorf(r.File, r.Line, r.path+".id", "required in Admin API state")
			continue
		}
		if _, dup := overHTTP[r.ID]; !dup {
			overHTTP[r.ID] = r
		}
	}
	if len(overHTTP) > 0 {
		b.httpRoutes = overlaid(b.httpRoutes, overHTTP, func(r *httpRouteDecl) (string, bool) { return r.ID, r.overlay })
	}
	overSSLs := make(map[string]*sslDecl)
	for i := range b.ssls {
		if s := &b.ssls[i]; s.overlay && s.ID != "" {
			if _, dup := overSSLs[s.ID]; !dup {
				overSSLs[s.ID] = s
			}
		}
	}
	if len(overSSLs) > 0 {
		b.ssls = overlaid(b.ssls, overSSLs, func(s *sslDecl) (string, bool) { return s.ID, s.overlay })
	}
}

// overlaid returns list with each non-overlay item whose id is in over
// replaced by that overlay item, and the overlay items not placed so
// appended in order.
func overlaid[T any](list []T, over map[string]*T, key func(*T) (id string, overlay bool)) []T {
	out := make([]T, 0, len(list))
	placed := make(map[*T]bool)
	for i := range list {
		id, isOverlay := key(&list[i])
		if isOverlay {
			continue
		}
		if o, ok := over[id]; ok {
			if !placed[o] {
				out = append(out, *o)
				placed[o] = true
			}
			continue
		}
		out = append(out, list[i])
	}
	for i := range list {
		if _, isOverlay := key(&list[i]); isOverlay && !placed[&list[i]] {
			out = append(out, list[i])
		}
	}
	return out
}
