package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/etcd"
)

// maxTxnOps is etcd's default --max-txn-ops: an import of more objects is
// written in several transactions.
const maxTxnOps = 128

// etcdImportCmd loads the stream routes, upstreams and ssls of YAML files
// into etcd under APISIX's layout, so the instances that read etcd serve
// them: the way from files to a cluster in one step.
func etcdImportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("etcd-import", stderr)
	var files fileList
	fs.Var(&files, "c", "configuration `file` to import (repeatable)")
	host := fs.String("etcd", "", "etcd client `URL`; default: the files' deployment.etcd.host")
	prefix := fs.String("prefix", "", "key `prefix`; default: the files' deployment.etcd.prefix, or /apisix")
	dry := fs.Bool("dry-run", false, "print the keys and values instead of writing them")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "mqgate etcd-import: at least one -c FILE is required")
		return errUsage
	}
	docs, err := config.ReadFiles(files...)
	if err != nil {
		return err
	}
	// The files are validated as `mqgate check` does, except that an
	// apisix.yaml alone, without listeners, is fine to import.
	cfg, err := config.Parse(docs...)
	if err != nil {
		var list config.ErrorList
		if !errors.As(err, &list) || len(list) != 1 || !strings.HasPrefix(list[0].Msg, "no listeners") {
			return err
		}
		cfg, err = config.Parse(append(docs, config.Document{Name: "(etcd-import)", Data: []byte("stream_proxy: {tcp: [\"127.0.0.1:1\"]}\n")})...)
		if err != nil {
			return err
		}
	}
	settings := &config.Etcd{Prefix: config.DefaultEtcdPrefix, Timeout: 10 * time.Second}
	if e := cfg.DeploymentSettings().Etcd; e != nil {
		c := *e
		settings = &c
	}
	if *host != "" {
		settings.Hosts = []string{*host}
	}
	if *prefix != "" {
		settings.Prefix = strings.TrimRight(*prefix, "/")
	}
	if len(settings.Hosts) == 0 && !*dry {
		return errors.New("etcd-import: no etcd: set --etcd URL or deployment.etcd.host in the files")
	}
	type kv struct{ key, value string }
	var puts []kv
	counts := map[string]int{}
	now := time.Now().Unix()
	for _, kind := range admin.Kinds {
		for _, fo := range admin.FileObjects(docs, kind) {
			v, _ := fo.Value.(map[string]any)
			if v == nil {
				continue
			}
			v["id"] = fo.ID
			v["create_time"], v["update_time"] = now, now
			dir := filepath.Dir(fo.Source[:strings.LastIndex(fo.Source, ":")])
			if err := inlinePEM(kind, v, dir); err != nil {
				return fmt.Errorf("%s %s/%s: %w", fo.Source, kind, fo.ID, err)
			}
			data, err := json.Marshal(v)
			if err != nil {
				return fmt.Errorf("%s %s/%s: %w", fo.Source, kind, fo.ID, err)
			}
			puts = append(puts, kv{settings.Prefix + "/" + kind + "/" + fo.ID, string(data)})
			counts[kind]++
		}
	}
	if *dry {
		for _, p := range puts {
			fmt.Fprintf(stdout, "%s %s\n", p.key, p.value)
		}
		return nil
	}
	cli, err := etcd.NewClient(settings)
	if err != nil {
		return err
	}
	defer cli.Close()
	var rev int64
	for start := 0; start < len(puts); start += maxTxnOps {
		ops := []clientv3.Op{}
		for _, p := range puts[start:min(start+maxTxnOps, len(puts))] {
			ops = append(ops, clientv3.OpPut(p.key, p.value))
		}
		tctx, cancel := context.WithTimeout(ctx, settings.Timeout)
		resp, err := cli.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("etcd-import: write to %s: %w (%d of %d objects written)", strings.Join(settings.Hosts, ","), err, start, len(puts))
		}
		rev = resp.Header.Revision
	}
	fmt.Fprintf(stdout, "imported %d stream_routes, %d upstreams, %d ssls, %d routes into %s under %s (revision %d)\n",
		counts["stream_routes"], counts["upstreams"], counts["ssls"], counts["routes"], strings.Join(settings.Hosts, ","), settings.Prefix, rev)
	return nil
}

// inlinePEM replaces the PEM file paths of an object with their contents:
// the instances reading etcd may not have the files, and APISIX keeps PEM
// text in etcd too.
func inlinePEM(kind string, v map[string]any, dir string) error {
	read := func(m map[string]any, key string) error {
		switch x := m[key].(type) {
		case string:
			s, err := pemText(x, dir)
			m[key] = s
			return err
		case []any:
			for i, item := range x {
				if s, ok := item.(string); ok {
					text, err := pemText(s, dir)
					if err != nil {
						return err
					}
					x[i] = text
				}
			}
		}
		return nil
	}
	var errs []error
	switch kind {
	case "ssls":
		for _, k := range []string{"cert", "key", "certs", "keys"} {
			errs = append(errs, read(v, k))
		}
		if c, ok := v["client"].(map[string]any); ok {
			errs = append(errs, read(c, "ca"))
		}
	case "upstreams":
		if t, ok := v["tls"].(map[string]any); ok {
			for _, k := range []string{"client_cert", "client_key", "ca"} {
				errs = append(errs, read(t, k))
			}
		}
	}
	return errors.Join(errs...)
}

func pemText(s, dir string) (string, error) {
	if strings.Contains(s, "-----BEGIN") {
		return s, nil
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(dir, s)
	}
	b, err := os.ReadFile(s)
	return string(b), err
}
