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
