// Command mqgate is an MQTT-aware proxy and load balancer.
//
//	mqgate run -c mqgate.yaml           serve until SIGINT/SIGTERM; SIGHUP reloads
//	mqgate run -c config.yaml -c apisix.yaml
//	mqgate check -c mqgate.yaml         validate, like nginx -t
//	mqgate reload -c mqgate.yaml        check, then make the running mqgate reload, like nginx -s reload
//	mqgate etcd-import -c mqgate.yaml   load the files' objects into etcd
//	mqgate demo                         three in-process brokers behind mqgate
//	mqgate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version and commit are set at build time (scripts/build-static.sh):
// -ldflags "-X main.version=v1.2.3 -X main.commit=<git commit>". Without
// commit, the commit Go recorded from the checkout is printed.
var (
	version = "dev"
	commit  = ""
)

const usage = `mqgate: an MQTT-aware proxy and load balancer

Usage:
  mqgate run -c FILE [-c FILE...] [--drain-timeout 30s] [--drain-spread 10m] [--pid-file FILE]
  mqgate check -c FILE [-c FILE...]
  mqgate reload -c FILE [-c FILE...] [--pid-file FILE]
  mqgate etcd-import -c FILE [-c FILE...] [--etcd URL] [--prefix /apisix] [--dry-run]
  mqgate demo [--listen 127.0.0.1:1883] [--admin 127.0.0.1:9180]
  mqgate version
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(ctx, args[1:], stdout, stderr)
	case "check":
		err = checkCmd(args[1:], stdout, stderr)
	case "reload":
		err = reloadCmd(ctx, args[1:], stdout, stderr)
	case "etcd-import":
		err = etcdImportCmd(ctx, args[1:], stdout, stderr)
	case "demo":
		err = demoCmd(ctx, args[1:], stdout, stderr)
	case "version", "-v", "--version":
		fmt.Fprintln(stdout, "mqgate", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mqgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, "mqgate:", strings.TrimSpace(err.Error()))
		return 1
	}
}

// errUsage marks a command line that the flag package already reported.
var errUsage = errors.New("usage")

func buildVersion() string {
	v := version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	rev, dirty := commit, false
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && rev == "":
			rev = s.Value
		case s.Key == "vcs.modified" && commit == "":
			dirty = s.Value == "true"
		}
	}
	v += " (" + bi.GoVersion
	if rev != "" {
		v += ", commit " + rev
		if dirty {
			v += " with local changes"
		}
	}
	return v + ")"
}

// fileList is a repeatable -c flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mqgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	return nil
}
