package accesslog

import (
	"strconv"
	"time"

	"github.com/mqgate/mqgate/vars"
)

// A Template is log.access_log_format: a line per record from a template
// over the connection's variables, with NGINX's names where NGINX has the
// variable (its stream module's log_format), so that tools that read NGINX
// logs read mqgate's:
//
//	t, err := accesslog.ParseTemplate(`$remote_addr [$time_local] $protocol $status $bytes_received $bytes_sent $upstream_addr`)
//	if err != nil { ... } // an unknown variable: `mqgate check` says which
//	w := accesslog.New(os.Stdout, t.Format)
//
// Values are written as they are: a template is for log tools that split
// on spaces and brackets, JSON (the default) for everything else.
type Template struct {
	src   string
	parts []vars.Part
}

// The variables of a template.
const (
	RemoteAddr    = "remote_addr"         // the client's IP (from the PROXY header on a proxy_protocol listener)
	RemotePort    = "remote_port"         // the client's port
	ServerAddr    = "server_addr"         // the address the client connected to
	ServerPort    = "server_port"         // its port
	TimeLocal     = "time_local"          // when the record was made, "23/Mar/2017:11:41:56 +0000"
	TimeISO8601   = "time_iso8601"        // the same, "2017-03-23T11:41:56+00:00"
	Msec          = "msec"                // the same, Unix seconds with milliseconds
	Protocol      = "protocol"            // TCP
	Status        = "status"              // NGINX's session status: 200, 400, 403, 502 or 503
	BytesReceived = "bytes_received"      // bytes from the client, the CONNECT included
	BytesSent     = "bytes_sent"          // bytes to the client
	SessionTime   = "session_time"        // seconds from accept to end, with milliseconds
	UpstreamAddr  = "upstream_addr"       // the node it was proxied to; empty if none
	UpstreamID    = "upstream_id"         // the node's upstream
	ClientID      = "mqtt_client_id"      // the CONNECT's client id as the client sent it
	Username      = "mqtt_username"       // the CONNECT's user name as the client sent it
	ProtocolLevel = "mqtt_protocol_level" // 3, 4 or 5
	End           = "end"                 // why it ended, as the JSON record's "end"
	Detail        = "detail"              // the refusal reason or error, if any
	RouteID       = "route_id"            // the stream route's id
	Listener      = "listener"            // the listener as configured

	// An HTTP request's, empty in a connection's line.
	RequestMethod  = "request_method"  // GET, POST, ...
	Host           = "host"            // the Host header, as sent
	RequestURI     = "request_uri"     // the path and query, as sent
	Request        = "request"         // the request line, "GET /api/x?y=1 HTTP/1.1"
	ServerProtocol = "server_protocol" // HTTP/1.1
	BodyBytesSent  = "body_bytes_sent" // the response body's bytes
	RequestTime    = "request_time"    // seconds the request took, with milliseconds
	HTTPUserAgent  = "http_user_agent" // the User-Agent header
	HTTPReferer    = "http_referer"    // the Referer header
)

// Names are the variables a template may use, the connection's TLS
// variables included.
var Names = []string{RemoteAddr, RemotePort, ServerAddr, ServerPort, TimeLocal, TimeISO8601, Msec,
	Protocol, Status, BytesReceived, BytesSent, SessionTime, UpstreamAddr, UpstreamID, ClientID, Username, ProtocolLevel,
	End, Detail, RouteID, Listener,
	RequestMethod, Host, RequestURI, Request, ServerProtocol, BodyBytesSent, RequestTime, HTTPUserAgent, HTTPReferer,
	vars.SSLServerName, vars.SSLClientSerial, vars.SSLClientSDN, vars.SSLClientSDNCN, vars.SSLClientFingerprint}

// ParseTemplate parses literal text with "$name" or "${name}" (Names) in
// it; "$$" is a "$".
func ParseTemplate(s string) (*Template, error) {
	parts, err := vars.SplitTemplate(s, Names)
	if err != nil {
		return nil, err
	}
	return &Template{src: s, parts: parts}, nil
}

// String returns the template as written.
func (t *Template) String() string { return t.src }

// Format is the template as a Format: it appends r's line, with its line
// end, to dst, without allocating.
func (t *Template) Format(dst []byte, r *Record) []byte {
	for _, p := range t.parts {
		if p.Name == "" {
			dst = append(dst, p.Lit...)
			continue
		}
		dst = appendVar(dst, p.Name, r)
	}
	return append(dst, '\n')
}

// timeLocal is NGINX's $time_local layout.
const timeLocal = "02/Jan/2006:15:04:05 -0700"

func appendVar(dst []byte, name string, r *Record) []byte {
	switch name {
	case RemoteAddr:
		if r.Client.IsValid() {
			return r.Client.Addr().AppendTo(dst)
		}
	case RemotePort:
		if r.Client.IsValid() {
			return strconv.AppendUint(dst, uint64(r.Client.Port()), 10)
		}
	case ServerAddr:
		if r.Server.IsValid() {
			return r.Server.Addr().AppendTo(dst)
		}
	case ServerPort:
		if r.Server.IsValid() {
			return strconv.AppendUint(dst, uint64(r.Server.Port()), 10)
		}
	case TimeLocal:
		return r.Time.AppendFormat(dst, timeLocal)
	case TimeISO8601:
		return r.Time.AppendFormat(dst, time.RFC3339)
	case Msec:
		return strconv.AppendFloat(dst, float64(r.Time.UnixMilli())/1000, 'f', 3, 64)
	case Protocol:
		return append(dst, "TCP"...)
	case RequestMethod:
		return append(dst, r.Method...)
	case Host:
		return append(dst, r.Host...)
	case RequestURI:
		return append(dst, r.URI...)
	case Request:
		if r.Method == "" {
			return dst
		}
		dst = append(dst, r.Method...)
		dst = append(dst, ' ')
		dst = append(dst, r.URI...)
		dst = append(dst, ' ')
		return append(dst, r.Proto...)
	case ServerProtocol:
		return append(dst, r.Proto...)
	case BodyBytesSent:
		if r.Method == "" {
			return dst
		}
		return strconv.AppendInt(dst, r.BytesDown, 10)
	case RequestTime:
		if r.Method == "" {
			return dst
		}
		return strconv.AppendFloat(dst, r.Duration.Seconds(), 'f', 3, 64)
	case HTTPUserAgent:
		return append(dst, r.UserAgent...)
	case HTTPReferer:
		return append(dst, r.Referer...)
	case Status:
		return strconv.AppendInt(dst, int64(r.Status), 10)
	case BytesReceived:
		return strconv.AppendInt(dst, r.BytesUp, 10)
	case BytesSent:
		return strconv.AppendInt(dst, r.BytesDown, 10)
	case SessionTime:
		return strconv.AppendFloat(dst, r.Duration.Seconds(), 'f', 3, 64)
	case UpstreamAddr:
		return append(dst, r.Node...)
	case UpstreamID:
		return append(dst, r.Upstream...)
	case ClientID:
		return append(dst, r.ClientID...)
	case Username:
		return append(dst, r.Username...)
	case ProtocolLevel:
		return strconv.AppendInt(dst, int64(r.ProtocolLevel), 10)
	case End:
		return append(dst, r.End...)
	case Detail:
		return append(dst, r.Detail...)
	case RouteID:
		return append(dst, r.Route...)
	case Listener:
		return append(dst, r.Listener...)
	case vars.SSLServerName:
		return append(dst, r.SNI...)
	case vars.SSLClientSerial:
		return append(dst, r.ClientSerial...)
	case vars.SSLClientSDN:
		return append(dst, r.ClientSDN...)
	case vars.SSLClientSDNCN:
		return append(dst, r.ClientSDNCN...)
	case vars.SSLClientFingerprint:
		return append(dst, r.ClientFingerprint...)
	}
	return dst
}
