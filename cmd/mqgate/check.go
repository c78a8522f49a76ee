package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/config"
)

// checkCmd validates configuration files like `nginx -t`: a one-line summary
// and exit 0, or every error as file:line: field: problem and exit 1.
func checkCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	var files fileList
	fs.Var(&files, "c", "configuration `file` (repeatable; later files add to earlier ones)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "mqgate check: at least one -c FILE is required")
		return errUsage
	}
	// The files alone, then with the Admin API objects of the state file.
	mgr, err := admin.Open(files, slog.New(slog.DiscardHandler))
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(stderr, e)
			}
			return fmt.Errorf("configuration has %d error(s)", len(list))
		}
		return err
	}
	cfg := mgr.Config()
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	summary := cfg.Summary()
	if dep := cfg.DeploymentSettings(); dep.UsesEtcd() {
		// The objects come from etcd at run time: say from where.
		summary += fmt.Sprintf("; %s reading etcd %s under %s", dep.Role, strings.Join(dep.Etcd.Hosts, ","), dep.Etcd.Prefix)
	}
	fmt.Fprintln(stdout, "configuration OK:", summary)
	return nil
}
