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
	"github.com/mqgate/mqgate/vars"
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
func (s *Server) dial(up *upstream, key string, connect []byte, lc *liveConn, vs *vars.Set) nodeTry {
	rec := &lc.rec
	from := &proxySource{remote: rec.remote, local: rec.id.local, tls: rec.id.tlsState()}
	d := s.nodeDial(up, key, lc)
	for i, ok := d.next(); ok; i, ok = d.next() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, up.cfg.Timeout.Connect)
		c, src, err := s.dialFrom(ctx, up, i, vs, from)
		cancel()
		var ref string
		if err == nil {
			s.stats.observeDial(time.Since(start))
			if !lc.setBroker(c) {
				c.Close()
				return nodeTry{closed: true}
			}
			var ack []byte
			ack, ref, err = awaitConnack(c, connect, up, rec.level)
			if err == nil {
				return d.accepted(i, c, src, ack)
			}
			c.Close()
		}
		d.failed(i, c != nil, ref, err)
	}
	return d.exhausted()
}

// nodeWalk is dial's walk over an upstream's nodes, one try at a time: the
// order the balancer gives, the retries, the failover to a Server
// Reference, health reports and the access record's list of failures. The
// goroutine path (dial) and the event loops (loopconn.go) both take it.
type nodeWalk struct {
	s     *Server
	up    *upstream
	lc    *liveConn
	order []int
	tries int
	res   nodeTry
	buf   [4]int // order's array for up to 4 nodes
}

func (s *Server) nodeDial(up *upstream, key string, lc *liveConn) *nodeWalk {
	w := new(nodeWalk)
	w.start(s, up, key, lc)
	return w
}

// start makes w a new walk over up's nodes in the balancer's order for key.
func (w *nodeWalk) start(s *Server, up *upstream, key string, lc *liveConn) {
	*w = nodeWalk{s: s, up: up, lc: lc}
	w.order = up.appendOrder(w.buf[:0], key)
}

// next is the node to try next, if any is left.
func (d *nodeWalk) next() (int, bool) {
	if d.tries > d.up.cfg.Retries || len(d.order) == 0 {
		return 0, false
	}
	d.tries++
	i := d.order[0]
	d.order = d.order[1:]
	return i, true
}

// accepted: node i's broker accepted the CONNECT on c (nil in an event
// loop), answering ack; from source src, if the upstream has them.
func (d *nodeWalk) accepted(i int, c net.Conn, src *sourceCounts, ack []byte) nodeTry {
	d.up.health[i].ReportDial(nil)
	if src != nil { // source_addresses: the source's live count
		src.active.Add(1)
		src.total.Add(1)
		d.lc.rec.source = src
	}
	d.res.broker, d.res.node, d.res.ack = c, d.up.nodes[i], ack
	return d.res
}

// failed: node i failed with err; reached when its broker was connected
// (and then closed, stayed silent or refused), with the Server Reference of
// a 0x9C or 0x9D.
func (d *nodeWalk) failed(i int, reached bool, ref string, err error) {
	up, res := d.up, &d.res
	if reached {
		res.answered = res.answered || ref != "" || isRefusal(err)
		if j := slices.Index(up.addrs, ref); ref != "" && j >= 0 {
			if k := slices.Index(d.order, j); k >= 0 {
				d.order = append([]int{j}, slices.Delete(d.order, k, k+1)...) // where the broker sends it
			}
		}
	}
	up.health[i].ReportDial(err)
	up.nodes[i].dialFails.Add(1)
	res.tried = append(res.tried, up.addrs[i]+": "+err.Error())
	what := "dial failed"
	if reached {
		what = "broker did not accept the CONNECT; trying the next node"
	}
	d.s.log.Warn(what, "upstream", up.cfg.ID, "node", up.addrs[i], "client_id", d.lc.rec.clientID, "err", err)
}

// exhausted is the outcome when no node accepted.
func (d *nodeWalk) exhausted() nodeTry {
	if d.lc.closedBy() != "" {
		d.res.closed = true
	}
	return d.res
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
		n, ferr := connackFrame(buf)
		if ferr != nil {
			return nil, "", ferr
		}
		if n > 0 && len(buf) >= n {
			break
		}
		switch {
		case n > cap(buf):
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
			return nil, "", connackReadError(up, rerr)
		}
	}
	return judgeConnack(buf, level)
}

// connackFrame is the size of the broker's first packet once buf holds
// enough to know it (0 until then), or why it is not one to wait for.
func connackFrame(buf []byte) (int, error) {
	n, ferr := mqtt.FrameLen(buf)
	switch {
	case errors.Is(ferr, mqtt.ErrIncomplete):
		return 0, nil
	case ferr != nil:
		return 0, fmt.Errorf("answered the CONNECT with no MQTT: %w", ferr)
	case n > maxConnackSize:
		return 0, fmt.Errorf("answered the CONNECT with a %d-byte packet", n)
	}
	return n, nil
}

// connackReadError says why the broker's answer could not be read.
func connackReadError(up *upstream, rerr error) error {
	switch {
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		return fmt.Errorf("no CONNACK within %s: %w", up.cfg.Timeout.Connack, rerr)
	case errors.Is(rerr, io.EOF):
		return errors.New("closed the connection after the CONNECT")
	}
	return fmt.Errorf("reading the CONNACK: %w", rerr)
}

// judgeConnack looks at the broker's first packet, whole in buf (with what
// followed it): it goes to the client, or the next node gets the CONNECT.
func judgeConnack(buf []byte, level byte) (ack []byte, ref string, err error) {
	n, _ := mqtt.FrameLen(buf)
	pkt := buf[:n]
	switch t := mqtt.PacketType(pkt[0] >> 4); {
	case t == mqtt.TypeAuth && level == mqtt.Level5:
		return buf, "", nil // 5.0 enhanced authentication: between client and broker
	case t != mqtt.TypeConnack:
		// [MQTT-3.2.0-1] the server's first packet is a CONNACK: any
		// other (a reserved type 0 one, 00 00, say) is not handed to a
		// client waiting for its CONNACK; the next node gets the CONNECT.
		return nil, "", fmt.Errorf("answered the CONNECT with % x, not a CONNACK", pkt[:min(len(pkt), 8)])
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
