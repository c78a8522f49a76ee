package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mqgate/mqgate/internal/mqtttest"
	"github.com/mqgate/mqgate/mqtt"
)

// MQTT 3.1.1 control packet first bytes the load generator writes or expects.
// CONNECT, CONNACK and DISCONNECT come from the project's codec; the few
// packets below are simple enough to write by hand.
const (
	typePublish   = 0x3 // high nibble of a PUBLISH first byte
	firstPublish0 = 0x30
	firstSubscr   = 0x82 // SUBSCRIBE has fixed flags 0010 [MQTT-3.8.1-1]
	firstSuback   = 0x90
	firstPingreq  = 0xc0
	firstPingresp = 0xd0

	protocolLevel = mqtt.Level311
)

func appendRemainingLength(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

// appendPublish appends a QoS 0 PUBLISH of payload to topic.
func appendPublish(dst []byte, topic string, payload []byte) []byte {
	dst = append(dst, firstPublish0)
	dst = appendRemainingLength(dst, 2+len(topic)+len(payload))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	return append(dst, payload...)
}

// appendSubscribe appends a SUBSCRIBE to one topic filter at QoS 0.
func appendSubscribe(dst []byte, packetID uint16, filter string) []byte {
	dst = append(dst, firstSubscr)
	dst = appendRemainingLength(dst, 2+2+len(filter)+1)
	dst = binary.BigEndian.AppendUint16(dst, packetID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(filter)))
	dst = append(dst, filter...)
	return append(dst, 0) // requested QoS 0
}

// publishPayload returns the application message of a PUBLISH packet without
// a packet identifier (QoS 0), or false if pkt is not one.
func publishPayload(pkt []byte) ([]byte, bool) {
	if pkt[0]>>4 != typePublish || pkt[0]&0x06 != 0 {
		return nil, false
	}
	i := 1
	for pkt[i]&0x80 != 0 {
		i++
	}
	i++
	if len(pkt) < i+2 {
		return nil, false
	}
	topicLen := int(binary.BigEndian.Uint16(pkt[i:]))
	i += 2 + topicLen
	if len(pkt) < i {
		return nil, false
	}
	return pkt[i:], true
}

// frameReader splits the bytes of one connection into MQTT control packets.
type frameReader struct {
	conn net.Conn
	buf  []byte
	r, w int
}

func newFrameReader(conn net.Conn, size int) *frameReader {
	return &frameReader{conn: conn, buf: make([]byte, size)}
}

func (fr *frameReader) reset(conn net.Conn) {
	fr.conn, fr.r, fr.w = conn, 0, 0
}

// next returns the next control packet. The slice is valid until the next call.
func (fr *frameReader) next() ([]byte, error) {
	for {
		avail := fr.buf[fr.r:fr.w]
		n, err := mqtt.FrameLen(avail)
		switch {
		case errors.Is(err, mqtt.ErrIncomplete):
		case err != nil:
			return nil, fmt.Errorf("reading packet: %w", err)
		default:
			if n <= len(avail) {
				fr.r += n
				return avail[:n], nil
			}
			if n > len(fr.buf) {
				grown := make([]byte, n)
				fr.w = copy(grown, avail)
				fr.buf, fr.r = grown, 0
			}
		}
		if fr.r > 0 {
			fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
			fr.r = 0
		}
		m, err := fr.conn.Read(fr.buf[fr.w:])
		fr.w += m
		if err != nil && m == 0 {
			return nil, err
		}
	}
}

// session is one MQTT connection of the load generator.
type session struct {
	conn net.Conn
	fr   *frameReader
	out  []byte
}

// transport is how a session reaches its target: plain TCP, TLS when tls
// is set, and MQTT over WebSocket to the path wsPath when it is set (wss://
// with tls).
type transport struct {
	tls    *tls.Config
	wsPath string
}

// dialSession connects to addr over tr (a TLS handshake and a WebSocket
// upgrade then count in the CONNECT's time) and completes the
// CONNECT/CONNACK exchange within timeout. readBuf sizes the receive buffer.
func dialSession(addr, clientID string, keepAlive uint16, timeout time.Duration, readBuf int, tr transport) (*session, error) {
	conn, err := tr.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	s := &session{conn: conn, fr: newFrameReader(conn, readBuf)}
	if err := s.handshake(clientID, keepAlive, timeout); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (tr transport) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if tr.wsPath != "" {
		scheme := "ws://"
		if tr.tls != nil {
			scheme = "wss://"
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := mqtttest.DialWS(ctx, scheme+addr+tr.wsPath, mqtttest.WSOptions{TLS: tr.tls})
		if err != nil {
			return nil, fmt.Errorf("WebSocket to %s: %w", addr, err)
		}
		return c, nil
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if tr.tls != nil {
		tc := tls.Client(conn, tr.tls)
		_ = tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
	return conn, nil
}

func (s *session) handshake(clientID string, keepAlive uint16, timeout time.Duration) error {
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	s.out = mqtt.AppendConnect(s.out[:0], &mqtt.Connect{
		ProtocolName: "MQTT",
		Level:        protocolLevel,
		CleanStart:   true,
		KeepAlive:    keepAlive,
		ClientID:     clientID,
	})
	if _, err := s.conn.Write(s.out); err != nil {
		return fmt.Errorf("writing CONNECT: %w", err)
	}
	pkt, err := s.fr.next()
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	_, code, err := mqtt.ParseConnack(pkt, protocolLevel)
	if err != nil {
		return fmt.Errorf("parsing CONNACK: %w", err)
	}
	if code != mqtt.Success {
		return fmt.Errorf("CONNECT refused with code %v", code)
	}
	return s.conn.SetDeadline(time.Time{})
}

// subscribe subscribes to filter at QoS 0 and waits for the SUBACK.
func (s *session) subscribe(filter string, timeout time.Duration) error {
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	s.out = appendSubscribe(s.out[:0], 1, filter)
	if _, err := s.conn.Write(s.out); err != nil {
		return fmt.Errorf("writing SUBSCRIBE: %w", err)
	}
	pkt, err := s.fr.next()
	if err != nil {
		return fmt.Errorf("reading SUBACK: %w", err)
	}
	if pkt[0] != firstSuback || len(pkt) < 5 || pkt[4] >= 0x80 {
		return fmt.Errorf("subscription to %q refused: % x", filter, pkt)
	}
	return s.conn.SetDeadline(time.Time{})
}

// disconnect sends DISCONNECT and closes the connection.
func (s *session) disconnect() {
	s.out = mqtt.AppendDisconnect(s.out[:0], protocolLevel, 0, "")
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.conn.Write(s.out)
	s.conn.Close()
}

// ConnectOnce connects to addr as clientID, waits for the CONNACK and
// disconnects cleanly: one complete MQTT session with nothing in between.
func ConnectOnce(addr, clientID string, timeout time.Duration) error {
	s, err := dialSession(addr, clientID, 60, timeout, 64, transport{})
	if err != nil {
		return err
	}
	s.disconnect()
	return nil
}

// ConnectOnceOver is ConnectOnce over MQTT over WebSocket to wsPath ("":
// plain MQTT), with TLS when overTLS (trusting caFile, for serverName).
func ConnectOnceOver(addr, clientID, wsPath string, overTLS bool, caFile, serverName string, timeout time.Duration) error {
	tr := transport{wsPath: wsPath}
	if overTLS {
		var err error
		if tr.tls, err = ClientTLS(caFile, serverName); err != nil {
			return err
		}
	}
	s, err := dialSession(addr, clientID, 60, timeout, 64, tr)
	if err != nil {
		return err
	}
	s.disconnect()
	return nil
}

// ClientTLS is the clients' TLS configuration: TLS 1.3, X25519 only (HAProxy
// 2.6 with OpenSSL 3.0 has no post-quantum hybrid, so every target gets the
// same key exchange), trusting the CA certificates in caFile.
func ClientTLS(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("loadgen: reading the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("loadgen: no certificate in %s", caFile)
	}
	return &tls.Config{
		RootCAs:          pool,
		ServerName:       serverName,
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519},
	}, nil
}
