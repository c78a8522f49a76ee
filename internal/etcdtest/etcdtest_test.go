package etcdtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClientAgainstServer checks that the client module mqgate uses speaks
// with the etcd server the tests run: reads, writes, transactions, leases,
// watches and compaction, and a restart on the same data.
func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	e := Start(t)
	cli := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put, err := cli.Put(ctx, "/apisix/upstreams/1", `{"nodes":{"127.0.0.1:1883":1}}`)
	if err != nil {
		t.Fatal(err)
	}
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/apisix/upstreams/1"), "=", put.Header.Revision)).
		Then(clientv3.OpPut("/apisix/upstreams/1", `{}`)).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn: %v %v", txn, err)
	}
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/apisix/mqgate/instances/a", "{}", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	get, err := cli.Get(ctx, "/apisix/", clientv3.WithPrefix())
	if err != nil || len(get.Kvs) != 2 {
		t.Fatalf("get: %v %v", get, err)
	}
	wch := cli.Watch(ctx, "/apisix/", clientv3.WithPrefix(), clientv3.WithRev(get.Header.Revision+1))
	if _, err := cli.Put(ctx, "/apisix/routes/1", "{}"); err != nil {
		t.Fatal(err)
	}
	wr := <-wch
	if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "/apisix/routes/1" {
		t.Fatalf("watch: %+v", wr)
	}
	if _, err := cli.Compact(ctx, get.Header.Revision+1); err != nil {
		t.Fatal(err)
	}
	old := cli.Watch(ctx, "/apisix/", clientv3.WithPrefix(), clientv3.WithRev(get.Header.Revision))
	wr = <-old
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", wr.Err())
	}
	e.Stop()
	e.Restart()
	get, err = cli.Get(ctx, "/apisix/routes/1")
	if err != nil || len(get.Kvs) != 1 {
		t.Fatalf("after restart: %v %v", get, err)
	}
}
