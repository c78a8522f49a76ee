package proxy_test

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/internal/mqtttest"
)

// TestTLSRecordSwitch: with stream_proxy.tls_record on (the default) and
// off, on both data paths, Paho (crypto/tls) and mosquitto_pub/_sub
// (OpenSSL) move a small and a 100 KB message both ways through a TLS 1.3
// listener; only with it on are the connections carried by tlsrecord. A
// reload that turns it off leaves an established carried connection
// working and gives the next one crypto/tls's record layer.
func TestTLSRecordSwitch(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, dp := range []string{config.DataPathEpoll, config.DataPathGoroutines} {
		for _, on := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/tls_record=%v", dp, on), func(t *testing.T) {
				t.Parallel()
				broker := mqtttest.StartMochi(t)
				yml := func(on bool) string {
					return fmt.Sprintf(`
stream_proxy:
  tcp: [{addr: LISTEN, tls: true}]
  data_path: %[3]s
  tls_record: %[4]v
ssls:
  - {id: a, snis: [a.example], cert: %[1]s/a.crt, key: %[1]s/a.key}
stream_routes:
  - {id: r, upstream: {nodes: {%[2]q: 1}}}
`, p.dir, broker.Addr(), dp, on)
				}
				g := startTLSGateway(t, yml(on))
				carried := func() uint64 { return g.srv.Stats().TLSRecordCarried }

				c := selfPublisher(t, g.addr, "paho-"+dp, p)
				c.roundTrip(t, "t/paho", []byte("small"))
				c.roundTrip(t, "t/paho", bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16))

				// OpenSSL both ways: mosquitto_pub's message reaches Paho,
				// and Paho's retained message reaches mosquitto_sub.
				host, port, _ := net.SplitHostPort(g.addr)
				big := strings.Repeat("x", 100<<10)
				if out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-i", "mosq-pub", "-t", "t/paho", "-m", big,
					"--cafile", p.path("ca.pem")).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v\n%s", err, out)
				}
				c.expect(t, "t/paho", []byte(big))
				c.publish(t, "t/retained", []byte(big), true)
				out, err := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-i", "mosq-sub", "-t", "t/retained", "-C", "1", "-W", "20",
					"--cafile", p.path("ca.pem")).Output()
				if err != nil || strings.TrimSuffix(string(out), "\n") != big {
					t.Fatalf("mosquitto_sub read %d bytes, %v; want the retained %d", len(out), err, len(big))
				}

				want := uint64(0)
				if on {
					want = 3 // Paho, mosquitto_pub, mosquitto_sub
				}
				if got := carried(); got != want {
					t.Fatalf("tlsrecord carried %d connections, want %d", got, want)
				}
				if dp == config.DataPathEpoll {
					// Paho's pair stays: a loop takes it once it is
					// tlsLoopAfter old. The mosquitto_pub and _sub pairs are
					// counted when they end (parked, unless they lasted
					// that long) or move.
					mqtttest.WaitFor(t, fmt.Sprintf("%d carried pairs counted, Paho's looped", want), func() bool {
						st := g.srv.Stats()
						return st.TLSRecordLooped+st.TLSRecordParked == want && (!on || st.TLSRecordLooped > 0)
					})
				}
				if !on {
					return
				}
				cfg, err := config.Parse(config.Document{Name: "test.yaml", Data: []byte(strings.ReplaceAll(yml(false), "LISTEN", `"127.0.0.1:0"`))})
				if err != nil {
					t.Fatal(err)
				}
				if err := g.srv.Apply(cfg); err != nil {
					t.Fatal(err)
				}
				c.roundTrip(t, "t/paho", []byte("after the reload"))
				d := selfPublisher(t, g.addr, "paho-new-"+dp, p)
				d.roundTrip(t, "t/new", []byte("new connection"))
				if got := carried(); got != want {
					t.Fatalf("after tls_record: false, tlsrecord carried %d connections, want still %d", got, want)
				}
			})
		}
	}
}

// selfClient is a Paho client over TLS subscribed to what it publishes.
type selfClient struct {
	c   pahov3.Client
	got chan pahov3.Message
}

func selfPublisher(t *testing.T, addr, id string, p *pki) *selfClient {
	t.Helper()
	s := &selfClient{got: make(chan pahov3.Message, 16)}
	c, err := connectV3TLS(addr, id, p.clientTLS("a.example", nil))
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	s.c = c
	tok := c.Subscribe("t/#", 1, func(_ pahov3.Client, m pahov3.Message) { s.got <- m })
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: subscribe: %v", id, tok.Error())
	}
	return s
}

func (s *selfClient) publish(t *testing.T, topic string, payload []byte, retain bool) {
	t.Helper()
	tok := s.c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

func (s *selfClient) expect(t *testing.T, topic string, payload []byte) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m := <-s.got:
			if m.Topic() == topic && bytes.Equal(m.Payload(), payload) {
				return
			}
			if !slices.Contains([]string{"t/retained"}, m.Topic()) {
				t.Fatalf("got %d bytes on %s, want %d on %s", len(m.Payload()), m.Topic(), len(payload), topic)
			}
		case <-timeout:
			t.Fatalf("no message on %s", topic)
		}
	}
}

func (s *selfClient) roundTrip(t *testing.T, topic string, payload []byte) {
	t.Helper()
	s.publish(t, topic, payload, false)
	s.expect(t, topic, payload)
}
