package config

import "testing"

func TestDataPath(t *testing.T) {
	t.Parallel()
	const rest = "\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n"
	// want: DataPath, or the error.
	checkSettings(t, rest, []settingCase{
		{"default", "stream_proxy: {tcp: [9000]}", DataPathEpoll},
		{"epoll", "stream_proxy: {tcp: [9000], data_path: epoll}", DataPathEpoll},
		{"goroutines", "stream_proxy:\n  tcp: [9000]\n  data_path: goroutines", DataPathGoroutines},
		{"in apisix section", "apisix: {stream_proxy: {tcp: [9000], data_path: goroutines}}", DataPathGoroutines},
		{"unknown value", "stream_proxy:\n  tcp: [9000]\n  data_path: io_uring",
			`t.yaml:3: stream_proxy.data_path: must be epoll or goroutines, got "io_uring"`},
		{"set twice", "stream_proxy: {tcp: [9000], data_path: epoll}\napisix: {stream_proxy: {data_path: goroutines}}",
			`t.yaml:2: apisix.stream_proxy.data_path: already set at t.yaml:1; set it in one place only`},
	}, func(cfg *Config) string { return cfg.StreamProxy.DataPath })
}

// TestTLSRecord: stream_proxy.tls_record is on unless set false, and is a
// bool set in one place.
func TestTLSRecord(t *testing.T) {
	t.Parallel()
	const rest = "\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n"
	// want: "off" when TLSRecordOff, "on" otherwise, or the error.
	checkSettings(t, rest, []settingCase{
		{"default", "stream_proxy: {tcp: [9000]}", "on"},
		{"on", "stream_proxy: {tcp: [9000], tls_record: true}", "on"},
		{"off", "stream_proxy:\n  tcp: [9000]\n  tls_record: false", "off"},
		{"in apisix section", "apisix: {stream_proxy: {tcp: [9000], tls_record: false}}", "off"},
		{"not a bool", "stream_proxy:\n  tcp: [9000]\n  tls_record: sometimes",
			`t.yaml:3: stream_proxy.tls_record: must be true or false, got "sometimes"`},
		{"set twice", "stream_proxy: {tcp: [9000], tls_record: true}\napisix: {stream_proxy: {tls_record: false}}",
			`t.yaml:2: apisix.stream_proxy.tls_record: already set at t.yaml:1; set it in one place only`},
	}, func(cfg *Config) string {
		if cfg.StreamProxy.TLSRecordOff {
			return "off"
		}
		return "on"
	})
}

// TestLoopAffinity: stream_proxy.loop_affinity is broker (empty) unless
// set connection, and is set in one place.
func TestLoopAffinity(t *testing.T) {
	t.Parallel()
	const rest = "\nstream_routes: [{upstream: {nodes: {\"b:1883\": 1}}}]\n"
	// want: LoopAffinity, or the error.
	checkSettings(t, rest, []settingCase{
		{"default", "stream_proxy: {tcp: [9000]}", ""},
		{"broker", "stream_proxy: {tcp: [9000], loop_affinity: broker}", LoopAffinityBroker},
		{"connection", "stream_proxy:\n  tcp: [9000]\n  loop_affinity: connection", LoopAffinityConnection},
		{"in apisix section", "apisix: {stream_proxy: {tcp: [9000], loop_affinity: connection}}", LoopAffinityConnection},
		{"unknown value", "stream_proxy:\n  tcp: [9000]\n  loop_affinity: client",
			`t.yaml:3: stream_proxy.loop_affinity: must be broker or connection, got "client"`},
		{"set twice", "stream_proxy: {tcp: [9000], loop_affinity: broker}\napisix: {stream_proxy: {loop_affinity: connection}}",
			`t.yaml:2: apisix.stream_proxy.loop_affinity: already set at t.yaml:1; set it in one place only`},
	}, func(cfg *Config) string { return cfg.StreamProxy.LoopAffinity })
}
