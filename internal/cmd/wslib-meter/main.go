// Command wslib-meter measures what an idle server-side WebSocket costs
// in three Go libraries, to choose mqgate's: each connection parks in a
// read of its next message, as a proxy's client-side direction does, and
// the figure is the growth of goroutine stacks and live heap per
// connection over 2,000 connections (the client side, gobwas without
// buffers or goroutines, is in the heap figure, the same for all three).
//
//	cd internal/cmd/wslib-meter && for l in gobwas gorilla coder; do go run . $l; done
//
// It is a module of its own so that mqgate's go.mod names only the library
// chosen.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gws "github.com/gorilla/websocket"
)

func mem() (stacks, heap uint64) {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func main() {
	lib := os.Args[1]
	n := 2000
	var h http.Handler
	switch lib {
	case "gobwas":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, _, err := ws.HTTPUpgrader{Protocol: func(p string) bool { return p == "mqtt" }}.Upgrade(r, w)
			if err != nil {
				return
			}
			go func() {
				rd := wsutil.Reader{Source: c, State: ws.StateServerSide}
				buf := make([]byte, 512)
				for {
					if _, err := rd.NextFrame(); err != nil {
						return
					}
					rd.Read(buf)
				}
			}()
		})
	case "gorilla":
		u := gws.Upgrader{Subprotocols: []string{"mqtt"}}
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := u.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			go func() {
				for {
					if _, _, err := c.NextReader(); err != nil {
						return
					}
				}
			}()
		})
	case "coder":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := cws.Accept(w, r, &cws.AcceptOptions{Subprotocols: []string{"mqtt"}})
			if err != nil {
				return
			}
			go func() {
				for {
					if _, _, err := c.Reader(context.Background()); err != nil {
						return
					}
				}
			}()
		})
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(ln, h)
	url := "ws://" + ln.Addr().String() + "/"
	dial := func() net.Conn {
		c, _, _, err := ws.Dialer{Protocols: []string{"mqtt"}}.Dial(context.Background(), url)
		if err != nil {
			panic(err)
		}
		return c
	}
	for range 50 {
		dial().Close()
	}
	time.Sleep(200 * time.Millisecond)
	s0, h0 := mem()
	var cs []net.Conn
	for range n {
		cs = append(cs, dial())
	}
	time.Sleep(time.Second)
	s1, h1 := mem()
	// The client side (gobwas, no buffers, no goroutine) is in the heap
	// figure too; it is the same for all three.
	fmt.Printf("%-8s stacks %5d B/conn  heap %5d B/conn  total %5d B/conn  goroutines %d\n", lib, (s1-s0)/uint64(n), (h1-h0)/uint64(n), (s1-s0+h1-h0)/uint64(n), runtime.NumGoroutine())
	_ = cs
}
