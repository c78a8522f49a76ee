package health

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqtt"
)

// maxConnack bounds what a probe reads: a CONNACK with every property a
// broker may send is far smaller.
const maxConnack = 4096

// probeKeepAlive is the keepalive a probe announces; it disconnects long
// before it matters.
const probeKeepAlive = 10

// probeOnce runs one probe of addr: for tcp a connect, for mqtt a CONNECT
// that must get a successful CONNACK, then a DISCONNECT, for http and https
// a GET of the status endpoint. The whole probe is
// bounded by cfg.Timeout. It returns the time to the connection (tcp) or to
// the CONNACK (mqtt).
//
// Probes take care not to leave a socket in TIME_WAIT behind on mqgate's
// side, which would hold a local port for a minute per probe: the tcp probe
// closes with a reset (as HAProxy's checks do), the mqtt probe lets the
// broker close first after the DISCONNECT, as brokers do at once.
func probeOnce(ctx context.Context, cfg *config.ActiveCheck, dial Dialer, addr string) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if cfg.IsHTTP() {
		err := probeHTTP(ctx, cfg, dial, addr)
		return time.Since(start), err
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return time.Since(start), err
	}
	defer conn.Close()
	if cfg.Type == config.ProbeTCP {
		latency := time.Since(start)
		if len(cfg.Send) > 0 || len(cfg.Expect) > 0 {
			var answered time.Time
			answered, err = probeRaw(ctx, cfg, conn)
			if !answered.IsZero() {
				latency = answered.Sub(start)
			}
		}
		if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0)
		}
		return latency, err
	}
	acked, err := probeMQTT(ctx, cfg, conn)
	if acked.IsZero() {
		return time.Since(start), err
	}
	return acked.Sub(start), err
}

// probeRaw writes cfg.Send on conn and reads until the answer has as many
// bytes as cfg.Expect, which it must begin with (NGINX's match expect
// string, HAProxy's tcp-check expect binary). It returns when the expected
// bytes arrived (zero when they did not).
func probeRaw(ctx context.Context, cfg *config.ActiveCheck, conn net.Conn) (answered time.Time, err error) {
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return answered, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if len(cfg.Send) > 0 {
		if _, err := conn.Write(cfg.Send); err != nil {
			return answered, fmt.Errorf("send: %w", err)
		}
	}
	if len(cfg.Expect) == 0 {
		return answered, nil
	}
	got := make([]byte, len(cfg.Expect))
	n, err := io.ReadFull(conn, got)
	if !bytes.Equal(got[:n], cfg.Expect[:n]) {
		return answered, fmt.Errorf("expected % x, got % x", cfg.Expect, got[:n])
	}
	if err != nil {
		timeout := ctx.Err() != nil || isTimeout(err)
		switch {
		case timeout && n == 0:
			return answered, fmt.Errorf("no answer within %s, expected % x: %w", cfg.Timeout, cfg.Expect, context.DeadlineExceeded)
		case timeout:
			return answered, fmt.Errorf("expected % x, got % x within %s: %w", cfg.Expect, got[:n], cfg.Timeout, context.DeadlineExceeded)
		case n == 0:
			return answered, fmt.Errorf("expected % x, got nothing: %w", cfg.Expect, err)
		}
		return answered, fmt.Errorf("expected % x, got % x then %w", cfg.Expect, got[:n], err)
	}
	return time.Now(), nil
}

// probeMQTT speaks MQTT on conn: CONNECT, CONNACK, DISCONNECT, then waits
// for the broker to close. It returns when the CONNACK arrived (zero when
// none did).
func probeMQTT(ctx context.Context, cfg *config.ActiveCheck, conn net.Conn) (acked time.Time, err error) {
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return acked, err
	}
	// A cancelled probe (a reload, a shutdown) must not wait for its
	// deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	level := byte(cfg.ProtocolLevel)
	if _, err := conn.Write(mqtt.AppendConnect(nil, probeConnect(cfg))); err != nil {
		return acked, fmt.Errorf("send CONNECT: %w", err)
	}
	var buf [maxConnack]byte
	n := 0
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if total, ferr := mqtt.FrameLen(buf[:n]); ferr == nil && n >= total {
			acked = time.Now()
			_, code, perr := mqtt.ParseConnack(buf[:total], level)
			if perr != nil {
				return acked, fmt.Errorf("not an MQTT broker: %w", perr)
			}
			if code != mqtt.Success {
				return acked, fmt.Errorf("CONNACK refused the probe: %s", refusal(code, level))
			}
			if _, err := conn.Write(mqtt.AppendDisconnect(nil, level, mqtt.NormalDisconnection, "")); err == nil {
				// The broker closes on DISCONNECT [MQTT-3.14.4-2]; a
				// broker that does not is left to the deadline.
				_, _ = io.Copy(io.Discard, io.LimitReader(conn, maxConnack))
			}
			return acked, nil
		} else if ferr != nil && !errors.Is(ferr, mqtt.ErrIncomplete) || ferr == nil && total > len(buf) {
			return acked, fmt.Errorf("not an MQTT broker: answered % x", buf[:min(n, 8)])
		}
		if err != nil {
			if ctx.Err() != nil {
				return acked, fmt.Errorf("no CONNACK within %s: %w", cfg.Timeout, context.DeadlineExceeded)
			}
			return acked, fmt.Errorf("no CONNACK: %w", err)
		}
	}
}

// probeConnect is the probe's CONNECT: clean, so it leaves no session
// behind, and by default with an empty client id, so it can never take
// over a device's session (the broker assigns one). With a prefix, 8 random
// hex digits follow it so that probes of several mqgate instances do not
// take over each other.
func probeConnect(cfg *config.ActiveCheck) *mqtt.Connect {
	c := &mqtt.Connect{
		ProtocolName: "MQTT",
		Level:        byte(cfg.ProtocolLevel),
		CleanStart:   true,
		KeepAlive:    probeKeepAlive,
		ClientID:     cfg.ClientID,
	}
	if c.Level == mqtt.Level31 {
		c.ProtocolName = "MQIsdp"
	}
	if cfg.ClientID != "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.ClientID += hex.EncodeToString(b[:])
	}
	if cfg.Username != "" {
		c.Username, c.HasUsername = cfg.Username, true
	}
	if cfg.Password != "" {
		c.Password, c.HasPassword = []byte(cfg.Password), true
	}
	return c
}

// refusal names a CONNACK code in the probe's version.
func refusal(code mqtt.ReasonCode, level byte) string {
	if level == mqtt.Level5 {
		return fmt.Sprintf("0x%02X %s", byte(code), code)
	}
	return fmt.Sprintf("return code %d", byte(code))
}

func itoa(i int) string { return strconv.Itoa(i) }

// maxHTTPBody bounds how much of a status endpoint's answer a probe reads.
const maxHTTPBody = 64 << 10

// httpStatusError is an answer whose status is one of
// unhealthy.http_statuses: it counts toward unhealthy.http_failures.
type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("status %d %s", e.code, http.StatusText(e.code))
}

// neutralStatus is an answer whose status is in neither list: as in
// APISIX, it counts neither way.
type neutralStatus struct{ code int }

func (e *neutralStatus) Error() string {
	return fmt.Sprintf("status %d (in neither healthy.http_statuses nor unhealthy.http_statuses: not counted)", e.code)
}

// probeHTTP GETs http_path from addr on a new connection, closed after
// the answer (the server closes first, so TIME_WAIT stays on its side), and
// judges the status by the check's lists.
func probeHTTP(ctx context.Context, cfg *config.ActiveCheck, dial Dialer, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	tr := &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		Proxy:             nil,
		TLSClientConfig: &tls.Config{
			ServerName:         cmp.Or(cfg.Host, host),
			InsecureSkipVerify: !cfg.HTTPSVerify, // the operator turned verification off
			MinVersion:         tls.VersionTLS12,
		},
		MaxResponseHeaderBytes: maxHTTPBody,
	}
	defer tr.CloseIdleConnections()
	scheme := "http"
	if cfg.Type == config.ProbeHTTPS {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+cfg.HTTPPath, nil)
	if err != nil {
		return err
	}
	if cfg.Host != "" {
		req.Host = cfg.Host
	}
	req.Header.Set("User-Agent", "mqgate-health-check")
	for _, h := range cfg.ReqHeaders {
		name, value, _ := strings.Cut(h, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Host") {
			req.Host = strings.TrimSpace(value)
			continue
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %s: %w", cfg.Timeout, context.DeadlineExceeded)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHTTPBody))
	resp.Body.Close()
	switch {
	case slices.Contains(cfg.HealthyStatuses, resp.StatusCode):
		return nil
	case slices.Contains(cfg.UnhealthyStatuses, resp.StatusCode):
		return &httpStatusError{code: resp.StatusCode}
	default:
		return &neutralStatus{code: resp.StatusCode}
	}
}
