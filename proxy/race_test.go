//go:build race

package proxy_test

// raceEnabled: the race detector slows every connection several times, so
// load tests scale down to stay within seconds.
const raceEnabled = true
