package accesslog

import (
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// JSON is the default Format: one JSON object per line, the same fields and
// layout as log/slog's JSONHandler gave the record before ("time", "level",
// "msg", then the record's fields), so that parsers of the log see no
// change. It appends without allocating.
func JSON(dst []byte, r *Record) []byte {
	if r.Method != "" {
		return httpJSON(dst, r)
	}
	dst = appendHead(dst, r, "connection")
	dst = appendString(dst, "client_id", r.ClientID)
	dst = appendString(dst, "username", r.Username)
	dst = append(dst, `,"protocol_level":`...)
	dst = strconv.AppendInt(dst, int64(r.ProtocolLevel), 10)
	dst = appendString(dst, "node", r.Node)
	dst = appendCounts(dst, r)
	dst = appendString(dst, "end", r.End)
	if r.Detail != "" {
		dst = appendString(dst, "detail", r.Detail)
	}
	if r.ErrorKind != "" {
		dst = appendString(dst, "error_kind", r.ErrorKind)
	}
	if r.ProxyProtocolPeer.IsValid() {
		dst = append(dst, `,"proxy_protocol_peer":"`...)
		dst = appendAddrPort(dst, r.ProxyProtocolPeer)
		dst = append(dst, '"')
	}
	if r.TLS {
		dst = appendString(dst, "tls_version", r.TLSVersion)
		dst = append(dst, `,"tls_resumed":`...)
		dst = strconv.AppendBool(dst, r.TLSResumed)
		dst = appendString(dst, "ssl_server_name", r.SNI)
		if r.ClientSerial != "" {
			dst = appendString(dst, "ssl_client_s_dn", r.ClientSDN)
			dst = appendString(dst, "ssl_client_serial", r.ClientSerial)
			dst = appendString(dst, "ssl_client_fingerprint", r.ClientFingerprint)
		}
	}
	if r.UpstreamClientID != "" {
		dst = appendString(dst, "upstream_client_id", r.UpstreamClientID)
	}
	if r.Transport != "" {
		dst = appendString(dst, "transport", r.Transport)
	}
	return appendTail(dst, r)
}

// appendHead opens a line: time, level and msg as slog wrote them, then
// the listener, the client and the route.
func appendHead(dst []byte, r *Record, msg string) []byte {
	dst = append(dst, `{"time":"`...)
	dst = appendTime(dst, r.Time)
	dst = append(dst, `","level":"INFO","msg":"`...)
	dst = append(dst, msg...)
	dst = append(dst, '"')
	dst = appendString(dst, "listener", r.Listener)
	dst = append(dst, `,"client":"`...)
	dst = appendAddrPort(dst, r.Client)
	dst = append(dst, '"')
	return appendString(dst, "route", r.Route)
}

// appendCounts appends the bytes both ways and the duration.
func appendCounts(dst []byte, r *Record) []byte {
	dst = append(dst, `,"bytes_up":`...)
	dst = strconv.AppendInt(dst, r.BytesUp, 10)
	dst = append(dst, `,"bytes_down":`...)
	dst = strconv.AppendInt(dst, r.BytesDown, 10)
	dst = append(dst, `,"duration_s":`...)
	return appendFloat(dst, r.Duration.Seconds())
}

// appendTail closes a line, with the trusted proxy that gave the client's
// address, if one did.
func appendTail(dst []byte, r *Record) []byte {
	if r.ForwardedBy.IsValid() {
		dst = append(dst, `,"forwarded_by":"`...)
		dst = appendAddrPort(dst, r.ForwardedBy)
		dst = append(dst, '"')
	}
	return append(dst, "}\n"...)
}

// httpJSON is JSON for an HTTP request's record: msg "http_request", the
// request line's parts and the answer's status instead of the MQTT fields.
func httpJSON(dst []byte, r *Record) []byte {
	dst = appendHead(dst, r, "http_request")
	dst = appendString(dst, "method", r.Method)
	dst = appendString(dst, "host", r.Host)
	dst = appendString(dst, "uri", r.URI)
	dst = appendString(dst, "proto", r.Proto)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = appendString(dst, "node", r.Node)
	dst = appendString(dst, "upstream", r.Upstream)
	dst = appendCounts(dst, r)
	if r.UserAgent != "" {
		dst = appendString(dst, "http_user_agent", r.UserAgent)
	}
	if r.Referer != "" {
		dst = appendString(dst, "http_referer", r.Referer)
	}
	if r.Detail != "" {
		dst = appendString(dst, "detail", r.Detail)
	}
	if r.ErrorKind != "" {
		dst = appendString(dst, "error_kind", r.ErrorKind)
	}
	if r.TLS {
		dst = appendString(dst, "tls_version", r.TLSVersion)
		dst = appendString(dst, "ssl_server_name", r.SNI)
	}
	return appendTail(dst, r)
}

// appendString appends ,"key":"value" with value escaped; keys are
// constants that need no escaping.
func appendString(dst []byte, key, value string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, `":"`...)
	dst = appendEscaped(dst, value)
	return append(dst, '"')
}

// appendAddrPort appends a's text form as netip.AddrPort.String has it
// ("invalid AddrPort" for the zero value); it needs no escaping.
func appendAddrPort(dst []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return append(dst, "invalid AddrPort"...)
	}
	return a.AppendTo(dst)
}

// appendTime appends t as slog does: RFC 3339 with the nanoseconds it has.
func appendTime(dst []byte, t time.Time) []byte {
	return t.AppendFormat(dst, time.RFC3339Nano)
}

// appendFloat appends f as encoding/json does (the form slog used): the
// shortest representation, with an exponent only for very small or large
// magnitudes.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, '0')
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	n := len(dst)
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if m := len(dst) - n; m >= 4 && dst[len(dst)-4] == 'e' && dst[len(dst)-3] == '-' && dst[len(dst)-2] == '0' {
			dst[len(dst)-2] = dst[len(dst)-1]
			dst = dst[:len(dst)-1]
		}
	}
	return dst
}

const hex = "0123456789abcdef"

// appendEscaped appends s as the inside of a JSON string: quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced by
// U+FFFD, and U+2028 and U+2029 escaped (as slog and encoding/json do, so
// a line is also valid JavaScript).
func appendEscaped(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
