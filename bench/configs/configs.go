// Package configs holds the configuration templates of the benchmark's
// processes: three Mosquitto brokers and the proxies that balance over them
// by MQTT client id (HAProxy, NGINX with an njs preread script, mqgate).
//
// Templates are text/template files rendered with the listen address, the
// broker addresses and the limits of the run; mqtt.js is copied as is.
package configs

import "embed"

// Files holds *.tmpl and mqtt.js.
//
//go:embed *.tmpl mqtt.js
var Files embed.FS
