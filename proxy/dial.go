package proxy

// noTCPKeepAlive turns off the TCP keepalive Go enables by default (probes
// every 15 s) on client and broker connections, as HAProxy and NGINX do:
// MQTT has its own keepalive, which the idle limit enforces, and probes on a
// million idle connections would cost the proxy and the network for
// nothing. It also saves the four setsockopt calls per connection.
const noTCPKeepAlive = -1
