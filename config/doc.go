// Package config loads and validates mqgate's YAML configuration.
//
// mqgate reads the files Apache APISIX users already have: config.yaml
// (apisix.stream_proxy.tcp plus keys mqgate ignores) and apisix.yaml
// (stream_routes, upstreams), or one mqgate-native file with everything.
// Files are merged in order: lists concatenate, and a setting made in two
// places is an error naming both.
//
//	cfg, err := config.Load("config.yaml", "apisix.yaml")
//	if err != nil {
//		// err is an ErrorList: every problem, one per line, as
//		// "apisix.yaml:12: upstreams[0].nodes[1].port: must be 1..65535, got 70000"
//		log.Fatal(err)
//	}
//	for _, w := range cfg.Warnings {
//		log.Print("warning: ", w)
//	}
//	log.Print(cfg.Summary()) // "2 files, 1 listener (:9000), 1 stream route, 1 upstream with 2 nodes"
//	for _, r := range cfg.StreamRoutes {
//		up := cfg.RouteUpstream(&r)
//		_ = up.Nodes
//	}
//
// Parse does the same for in-memory documents. A Config is a value: the
// proxy treats it as an immutable snapshot. README.md documents every key.
//
// Every mapping of the configuration, from the top level down to a node of
// an upstream and a check's healthy counts, has one field table (fields.go
// and the section's file; stream plugins decode their own, in plugin/): each key's name, decoder, default and whether a
// reload applies it. The tables drive decoding, the "did you mean" of an
// unknown key, RestartOnlyChanges and RestartOnlyNews (what a reload says
// waits for a restart), and References, which the README's tables are
// tested against. A new key is one entry in its section's table and one
// README row.
package config
