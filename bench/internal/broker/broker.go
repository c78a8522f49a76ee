// Package broker is the benchmark's broker for the WebSocket phases: one
// mochi-mqtt server with a plain MQTT (TCP) listener and an MQTT over
// WebSocket listener, both in front of the same sessions.
//
// Debian's Mosquitto 2.0.11 cannot open a websockets listener, and the two
// proxies reach a broker differently: NGINX (seed 004's `location /mqtt`)
// passes the WebSocket through to the broker's WebSocket port, mqgate ends
// the WebSocket and speaks plain MQTT to the broker's TCP port. Both reach
// this one process, so what differs is the proxy (and the framing the
// broker itself does for NGINX's clients, which is in the broker's CPU).
//
//	b, err := broker.Start("127.0.0.1:1884", "127.0.0.1:8083")
//	defer b.Close()
package broker

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// writesPending bounds each client's queue of outgoing packets. Mochi's
// default (8,192) is a 64 KiB channel per client, which would make the
// idle phases' thousands of clients a memory test of the broker; the
// throughput phases keep at most a burst of 16 in flight per client.
const writesPending = 256

// Broker is a running mochi-mqtt server.
type Broker struct{ srv *mochi.Server }

// Start listens for MQTT on tcpAddr and MQTT over WebSocket (subprotocol
// "mqtt", any path) on wsAddr, and serves until Close.
func Start(tcpAddr, wsAddr string) (*Broker, error) {
	opts := &mochi.Options{
		Logger:       slog.New(slog.DiscardHandler),
		InlineClient: false,
	}
	opts.Capabilities = mochi.NewDefaultServerCapabilities()
	opts.Capabilities.MaximumClientWritesPending = writesPending
	srv := mochi.New(opts)
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("broker: allowing every client: %w", err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: tcpAddr})); err != nil {
		return nil, fmt.Errorf("broker: MQTT listener on %s: %w", tcpAddr, err)
	}
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr})); err != nil {
		return nil, fmt.Errorf("broker: WebSocket listener on %s: %w", wsAddr, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	// Mochi's WebSocket listener binds its port on a goroutine of its own
	// (http.Server.ListenAndServe), so Serve returns before it listens: a
	// client dialling at once was refused (TestOneBrokerTwoListeners, in
	// go test -race -p 2 ./... at load 12).
	if err := accepting(wsAddr, 10*time.Second); err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker: WebSocket listener on %s: %w", wsAddr, err)
	}
	return &Broker{srv: srv}, nil
}

// accepting waits until addr accepts a TCP connection, for at most wait.
func accepting(addr string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting after %v: %w", wait, err)
		}
		time.Sleep(10 * time.Millisecond) // a poll with a deadline, not a wait for a signal: none is given
	}
}

// Close stops the listeners and disconnects every client.
func (b *Broker) Close() error { return b.srv.Close() }
