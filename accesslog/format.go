// Package accesslog writes mqgate's access log the way log tools want it:
// a line per connection from a template over the connection's variables,
// with NGINX's names where NGINX has them (log_format), to a file that is
// reopened on SIGUSR1 so that logrotate needs no reload.
//
//	f, err := accesslog.ParseFormat(`$remote_addr [$time_local] $protocol $status $bytes_received $bytes_sent $upstream_addr`)
//	if err != nil { ... } // an unknown variable: `mqgate check` says which
//	out, err := accesslog.OpenFile("/var/log/mqgate/access.log")
//	line := f.Append(nil, &accesslog.Entry{...})
//	out.Write(line)
//	out.Reopen() // on SIGUSR1, after logrotate moved the file
package accesslog

import (
	"strconv"
	"time"

	"github.com/mqgate/mqgate/vars"
)

// The variables a format may use. NGINX's stream module names where it
// has the variable; mqgate's own for what only mqgate knows.
const (
	RemoteAddr    = "remote_addr"    // the client's IP (from the PROXY header on a proxy_protocol listener)
	RemotePort    = "remote_port"    // the client's port
	ServerAddr    = "server_addr"    // the address the client connected to
	ServerPort    = "server_port"    // its port
	TimeLocal     = "time_local"     // when the connection ended, "23/Mar/2017:11:41:56 +0000"
	TimeISO8601   = "time_iso8601"   // the same, "2017-03-23T11:41:56+00:00"
	Msec          = "msec"           // the same, Unix seconds with milliseconds
	Protocol      = "protocol"       // TCP
	Status        = "status"         // NGINX's session status: 200, 400, 403, 502 or 503 (see Entry.Status)
	BytesReceived = "bytes_received" // bytes from the client, the CONNECT included
	BytesSent     = "bytes_sent"     // bytes to the client
	SessionTime   = "session_time"   // seconds from accept to end, with milliseconds
	UpstreamAddr  = "upstream_addr"  // the node it was proxied to; empty if none
	ClientID      = "mqtt_client_id" // the CONNECT's client id as the client sent it
	Username      = "mqtt_username"  // the CONNECT's user name as the client sent it
	ProtocolLevel = "mqtt_protocol_level"
	End           = "end"         // why it ended: client_closed, broker_closed, refused, ... as in the JSON log
	Detail        = "detail"      // the refusal reason or error, if any
	RouteID       = "route_id"    // the stream route's id
	Listener      = "listener"    // the listener as configured
	UpstreamID    = "upstream_id" // the upstream's id
)

// Names are the variables of a format, the connection's TLS variables
// (ssl_server_name, ssl_client_s_dn_cn, ...) included.
var Names = append([]string{RemoteAddr, RemotePort, ServerAddr, ServerPort, TimeLocal, TimeISO8601, Msec,
	Protocol, Status, BytesReceived, BytesSent, SessionTime, UpstreamAddr, ClientID, Username, ProtocolLevel,
	End, Detail, RouteID, Listener, UpstreamID},
	vars.SSLServerName, vars.SSLClientSerial, vars.SSLClientSDN, vars.SSLClientSDNCN, vars.SSLClientFingerprint)

// Entry is what the access log knows of one connection when it ends.
type Entry struct {
	Remote, Server string // "ip:port"; empty when unknown
	RemoteIP       string
	RemotePort     string
	ServerIP       string
	ServerPort     string
	Start, End     time.Time
	Status         int
	BytesReceived  int64
	BytesSent      int64
	UpstreamAddr   string
	UpstreamID     string
	ClientID       string
	Username       string
	ProtocolLevel  int
	EndReason      string
	Detail         string
	RouteID        string
	Listener       string
	Vars           *vars.Set // the TLS variables; nil for none
}

// Format is a parsed log.access_log_format.
type Format struct {
	src   string
	parts []vars.Part
}

// ParseFormat parses a format: literal text with "$name" or "${name}"
// (Names), "$$" for a "$".
func ParseFormat(s string) (*Format, error) {
	parts, err := vars.SplitTemplate(s, Names)
	if err != nil {
		return nil, err
	}
	return &Format{src: s, parts: parts}, nil
}

// String returns the format as written.
func (f *Format) String() string { return f.src }

// Append appends e's line, with a newline, to b.
func (f *Format) Append(b []byte, e *Entry) []byte {
	for _, p := range f.parts {
		if p.Name == "" {
			b = append(b, p.Lit...)
			continue
		}
		b = e.append(b, p.Name)
	}
	return append(b, '\n')
}

// timeLocal is NGINX's $time_local layout.
const timeLocal = "02/Jan/2006:15:04:05 -0700"

func (e *Entry) append(b []byte, name string) []byte {
	switch name {
	case RemoteAddr:
		return append(b, e.RemoteIP...)
	case RemotePort:
		return append(b, e.RemotePort...)
	case ServerAddr:
		return append(b, e.ServerIP...)
	case ServerPort:
		return append(b, e.ServerPort...)
	case TimeLocal:
		return e.End.AppendFormat(b, timeLocal)
	case TimeISO8601:
		return e.End.AppendFormat(b, time.RFC3339)
	case Msec:
		return strconv.AppendFloat(b, float64(e.End.UnixMilli())/1000, 'f', 3, 64)
	case Protocol:
		return append(b, "TCP"...)
	case Status:
		return strconv.AppendInt(b, int64(e.Status), 10)
	case BytesReceived:
		return strconv.AppendInt(b, e.BytesReceived, 10)
	case BytesSent:
		return strconv.AppendInt(b, e.BytesSent, 10)
	case SessionTime:
		return strconv.AppendFloat(b, e.End.Sub(e.Start).Seconds(), 'f', 3, 64)
	case UpstreamAddr:
		return append(b, e.UpstreamAddr...)
	case UpstreamID:
		return append(b, e.UpstreamID...)
	case ClientID:
		return append(b, e.ClientID...)
	case Username:
		return append(b, e.Username...)
	case ProtocolLevel:
		return strconv.AppendInt(b, int64(e.ProtocolLevel), 10)
	case End:
		return append(b, e.EndReason...)
	case Detail:
		return append(b, e.Detail...)
	case RouteID:
		return append(b, e.RouteID...)
	case Listener:
		return append(b, e.Listener...)
	}
	if e.Vars != nil {
		v, _ := e.Vars.Get(name)
		return append(b, v...)
	}
	return b
}
