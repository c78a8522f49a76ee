package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/mqgate/mqgate/mqtt"
)

// maxConnackSize bounds what mqgate reads of a broker's first packet: a
// CONNACK with its properties is far smaller.
const maxConnackSize = 64 << 10

// nodeTry is the outcome of dial: the broker that accepted the CONNECT,
// or why there is none.
type nodeTry struct {
	broker   net.Conn
	node     *nodeState
	ack      []byte   // its CONNACK and the bytes after it, for the client
	answered bool     // some broker answered, with a refusal worth the next node
	closed   bool     // the connection was closed from outside meanwhile
	tried    []string // the nodes that failed before, and why
}

// dial tries the nodes the balancer offers, up to 1 + retries of them: it
// dials one, sends it the CONNECT and waits for its CONNACK. A broker that
// closes, sends nothing within timeout.connack, or answers 3.x 0x03 /
// 5.0 0x88 Server unavailable, 0x89 Server busy, 0x9C Use another server
// or 0x9D Server moved is a failure of that node (passive health counts
// it) and the next node gets the same CONNECT; a 0x9C or 0x9D that names
// another node of the upstream as Server Reference sends it there next.
// Any other answer, a success or the broker's own refusal (bad password,
// say), goes to the client: the broker decided.
func (s *Server) dial(up *upstream, key string, connect []byte, lc *liveConn) nodeTry {
	rec := &lc.rec
	from := &proxySource{remote: rec.remote, local: rec.id.local, tls: rec.id.tls}
	order := slices.Collect(up.bal.Order(key))
	var res nodeTry
	for tries := 0; tries <= up.cfg.Retries && len(order) > 0; tries++ {
		i := order[0]
		order = order[1:]
		start := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, up.cfg.Timeout.Connect)
		c, src, err := s.dialFrom(ctx, up, i, &rec.id.vars, from)
		cancel()
		if err == nil {
			s.stats.observeDial(time.Since(start))
			if !lc.setBroker(c) {
				c.Close()
				return nodeTry{closed: true}
			}
			var ref string
			var ack []byte
			ack, ref, err = awaitConnack(c, connect, up, rec.level)
			if err == nil {
				up.health[i].ReportDial(nil)
				if src != nil { // source_addresses: the source's live count
					src.active.Add(1)
					src.total.Add(1)
					rec.source = src
				}
				res.broker, res.node, res.ack = c, up.nodes[i], ack
				return res
			}
			c.Close()
			res.answered = res.answered || ref != "" || isRefusal(err)
			if j := slices.Index(up.addrs, ref); ref != "" && j >= 0 {
				if k := slices.Index(order, j); k >= 0 {
					order = append([]int{j}, slices.Delete(order, k, k+1)...) // where the broker sends it
				}
			}
		}
		up.health[i].ReportDial(err)
		up.nodes[i].dialFails.Add(1)
		res.tried = append(res.tried, up.addrs[i]+": "+err.Error())
		what := "dial failed"
		if c != nil {
			what = "broker did not accept the CONNECT; trying the next node"
		}
		s.log.Warn(what, "upstream", up.cfg.ID, "node", up.addrs[i], "client_id", rec.clientID, "err", err)
	}
	if lc.closedBy() != "" {
		res.closed = true
	}
	return res
}

// refusal is a CONNACK that makes mqgate try the next node.
type refusal struct{ code mqtt.ReasonCode }

func (r refusal) Error() string {
	return fmt.Sprintf("CONNACK 0x%02X %v", byte(r.code), r.code)
}

func isRefusal(err error) bool {
	var r refusal
	return errors.As(err, &r)
}

// retryCode reports whether a CONNACK code at the client's level says
// "try another broker".
func retryCode(level byte, code mqtt.ReasonCode) bool {
	if level != mqtt.Level5 {
		return code == 0x03 // server unavailable
	}
	switch code {
	case mqtt.ServerUnavailable, mqtt.ServerBusy, mqtt.UseAnotherServer, mqtt.ServerMoved:
		return true
	}
	return false
}

// awaitConnack sends the CONNECT on c and reads the broker's first packet,
// bounded by timeout.connack. It returns that packet and the bytes that
// came after it in the same reads, for the client; or why the next node
// gets the CONNECT, with the Server Reference of a 0x9C or 0x9D.
func awaitConnack(c net.Conn, connect []byte, up *upstream, level byte) (ack []byte, ref string, err error) {
	_ = c.SetWriteDeadline(time.Now().Add(up.cfg.Timeout.Connect))
	if _, err := c.Write(connect); err != nil {
		return nil, "", fmt.Errorf("sending the CONNECT: %w", err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	_ = c.SetReadDeadline(time.Now().Add(up.cfg.Timeout.Connack))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 256)
	for {
		n, ferr := mqtt.FrameLen(buf)
		if ferr == nil && len(buf) >= n {
			break
		}
		switch {
		case ferr != nil && !errors.Is(ferr, mqtt.ErrIncomplete):
			return nil, "", fmt.Errorf("answered the CONNECT with no MQTT: %w", ferr)
		case ferr == nil && n > maxConnackSize:
			return nil, "", fmt.Errorf("answered the CONNECT with a %d-byte packet", n)
		case ferr == nil && n > cap(buf):
			buf = slices.Grow(buf, n-len(buf))
		case len(buf) == cap(buf):
			buf = slices.Grow(buf, 256)
		}
		m, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr != nil {
			if n, ferr := mqtt.FrameLen(buf); ferr == nil && len(buf) >= n {
				break
			}
			switch {
			case errors.Is(rerr, os.ErrDeadlineExceeded):
				return nil, "", fmt.Errorf("no CONNACK within %s: %w", up.cfg.Timeout.Connack, rerr)
			case errors.Is(rerr, io.EOF):
				return nil, "", errors.New("closed the connection after the CONNECT")
			}
			return nil, "", fmt.Errorf("reading the CONNACK: %w", rerr)
		}
	}
	n, _ := mqtt.FrameLen(buf)
	pkt := buf[:n]
	if mqtt.PacketType(pkt[0]>>4) != mqtt.TypeConnack {
		return buf, "", nil // AUTH (5.0 enhanced authentication): between client and broker
	}
	_, code, perr := mqtt.ParseConnack(pkt, level)
	if perr != nil {
		return nil, "", fmt.Errorf("answered with a bad CONNACK: %w", perr)
	}
	if retryCode(level, code) {
		if code == mqtt.UseAnotherServer || code == mqtt.ServerMoved {
			ref = mqtt.ConnackServerReference(pkt)
		}
		return nil, ref, refusal{code}
	}
	return buf, "", nil
}
