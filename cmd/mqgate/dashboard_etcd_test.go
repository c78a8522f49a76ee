package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mqgate/mqgate/internal/browsertest"
	"github.com/mqgate/mqgate/internal/etcdtest"
)

// TestDashboardShowsEtcd: the dashboard of an instance that reads its
// configuration from etcd shows the connection, the revision and the fleet.
func TestDashboardShowsEtcd(t *testing.T) {
	t.Parallel()
	browsertest.Require(t)
	e := etcdtest.Start(t)
	in := startEtcdInstance(t, e, "dash-1")
	out := browsertest.Run(t, "testdata/dashboard_etcd.js", "URL="+in.admin, "KEY="+testAdminKey)
	var got struct{ Etcd, Fleet string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("script output %q: %v", out, err)
	}
	t.Logf("the page shows etcd %q, fleet %q", got.Etcd, got.Fleet)
	if !strings.HasPrefix(got.Etcd, "connected") || !strings.Contains(got.Etcd, "revision") {
		t.Errorf("etcd state %q", got.Etcd)
	}
	if !strings.HasPrefix(got.Fleet, "1 instance, in sync") {
		t.Errorf("fleet state %q", got.Fleet)
	}
}
