package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/mqgate/mqgate/config"
)

// NewClient makes an etcd client for deployment.etcd. Without a user it
// does not wait for etcd: a client made while etcd is down connects when it
// comes back. With one it authenticates first, waiting at most the timeout.
func NewClient(s *config.Etcd) (*clientv3.Client, error) {
	cfg, err := clientConfig(s)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

func clientConfig(s *config.Etcd) (clientv3.Config, error) {
	cfg := clientv3.Config{
		DialTimeout:          s.Timeout,
		Endpoints:            make([]string, len(s.Hosts)),
		Username:             s.User,
		Password:             s.Password,
		DialKeepAliveTime:    s.Timeout / 3,
		DialKeepAliveTimeout: s.Timeout / 3,
		// The client logs every reconnection attempt at warn level; mqgate
		// reports the connection state itself (/status, metrics, its log).
		Logger: zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: after an
		// outage an instance would follow etcd's return that late.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: min(s.Timeout, 5*time.Second),
		})},
	}
	secure := false
	for i, h := range s.Hosts {
		u, err := url.Parse(h)
		if err != nil {
			return cfg, fmt.Errorf("deployment.etcd.host %q: %w", h, err)
		}
		secure = secure || u.Scheme == "https"
		cfg.Endpoints[i] = strings.TrimSuffix(h, "/")
	}
	if secure || s.TLS != nil {
		tc, err := tlsConfig(s.TLS)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	}
	return cfg, nil
}

func tlsConfig(t *config.EtcdTLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t == nil {
		return tc, nil
	}
	tc.InsecureSkipVerify = !t.Verify
	tc.ServerName = t.SNI
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("deployment.etcd.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("deployment.etcd.tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("deployment.etcd.tls.ca %s: no PEM certificate in it", t.CA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
