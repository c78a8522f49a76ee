package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/admin"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/proxy"
)

// runCmd serves until SIGINT or SIGTERM, then drains; SIGHUP or a change of
// the files reloads them, keeping the running configuration when the new one
// is invalid.
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var files fileList
	fs.Var(&files, "c", "configuration `file` (repeatable; later files add to earlier ones)")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long live connections may take to end before they are closed")
	spread := fs.Duration("drain-spread", 0, "on SIGINT/SIGTERM, close live connections evenly over this long (at most drain-timeout) instead of waiting for them")
	pidFile := fs.String("pid-file", "", "write the process id to this `file` once listening (for mqgate reload --pid-file, kill -HUP); removed at exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "mqgate run: at least one -c FILE is required")
		return errUsage
	}
	var level slog.LevelVar
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level}))
	mgr, err := admin.Open(files, log)
	if err != nil {
		return err
	}
	var etcdc *cluster
	if mgr.Config().DeploymentSettings().UsesEtcd() {
		if etcdc, err = openEtcd(ctx, mgr, mgr.Config(), log); err != nil {
			return err
		}
		defer etcdc.p.Close()
	}
	cfg := mgr.Config()
	setLevel(&level, cfg.Log.Level)
	access, err := openAccessLog(cfg.Log.AccessLog, stdout)
	if err != nil {
		return err
	}
	defer access.close()
	logConfig(log, cfg)
	raiseFileLimit(log)
	defer startCPUProfile(log)()
	tune := tuneGC(log)

	srv, err := proxy.New(cfg, proxy.Options{Log: log, AccessLog: access.w})
	if err != nil {
		return err
	}
	mgr.Attach(srv, func(cfg *config.Config) { setLevel(&level, cfg.Log.Level) })
	if etcdc != nil {
		etcdc.srv = srv
	}
	// Catch signals before listening: whoever waits for the listener may
	// signal at once.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	if err := srv.Listen(); err != nil {
		return err
	}
	stopOps, err := startOps(ctx, mgr, srv, etcdc, log)
	if err != nil {
		_ = shutdown(srv, log, 0)
		return err
	}
	if *pidFile != "" {
		// Written once listening, as NGINX's pid file: whoever reads it
		// may signal at once.
		if err := writePidFile(*pidFile); err != nil {
			stopOps()
			_ = shutdown(srv, log, 0)
			return fmt.Errorf("pid file: %w", err)
		}
		defer os.Remove(*pidFile)
	}
	gbCtx, stopGiveBack := context.WithCancel(ctx)
	defer stopGiveBack()
	go giveBack(gbCtx, log, giveBackInterval, func() int64 { return srv.Stats().Active },
		func() int64 { return srv.Stats().TLSRecordWaiting }, tune)
	for {
		select {
		case <-ctx.Done():
			stopOps()
			return shutdown(srv, log, *drain)
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				// As NGINX: logrotate moved the file; write to a new one.
				if err := access.reopen(); err != nil {
					log.Error("access log not reopened, still writing to the old file", "path", cfg.Log.AccessLog, "err", err)
				} else if access.file != nil {
					log.Info("access log reopened", "path", access.path)
				}
				continue
			}
			if sig != syscall.SIGHUP {
				log.Info("stopping", "signal", sig.String(), "drain_timeout", *drain, "drain_spread", *spread)
				stopOps()
				if *spread > 0 {
					srv.DrainAll(min(*spread, *drain))
				}
				return shutdown(srv, log, *drain)
			}
			_ = mgr.Reload("sighup")
		}
	}
}

// writePidFile writes the process id to path whole or not at all (a
// temporary file renamed), so that a reader never sees it half written.
func writePidFile(path string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func shutdown(srv *proxy.Server, log *slog.Logger, drain time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}

func setLevel(v *slog.LevelVar, name string) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err == nil {
		v.Set(l)
	}
}

func logConfig(log *slog.Logger, cfg *config.Config) {
	log.Info("configuration loaded", "files", cfg.Files, "summary", cfg.Summary())
	for _, ig := range cfg.Ignored {
		log.Debug("ignored APISIX key mqgate does not use", "key", ig)
	}
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "warning", w.Error())
	}
}

// accessLog is the access log: a Writer of records (JSON, or the
// configuration's log.access_log_format, which the proxy sets), to stdout,
// stderr or a file; nil Writer for "off". A file is reopened at its path by
// reopen (SIGUSR1, after logrotate moved it).
type accessLog struct {
	w    *accesslog.Writer
	path string // "" unless a file
	file *os.File
}

// openAccessLog opens the access_log setting.
func openAccessLog(where string, stdout io.Writer) (*accessLog, error) {
	a := &accessLog{}
	var out io.Writer
	switch where {
	case "off":
		return a, nil
	case "", "stdout":
		out = stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := openAppend(where)
		if err != nil {
			return nil, err
		}
		out, a.path, a.file = f, where, f
	}
	a.w = accesslog.New(out, accesslog.JSON)
	return a, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// reopen opens the file's path again and writes there from now on, as
// NGINX does on SIGUSR1; what was buffered goes to the old file first. When
// the path cannot be opened, the old file stays in use.
func (a *accessLog) reopen() error {
	if a.file == nil {
		return nil
	}
	f, err := openAppend(a.path)
	if err != nil {
		return err
	}
	a.w.Swap(f)
	old := a.file
	a.file = f
	return old.Close()
}

// close writes out what is buffered, then closes the file.
func (a *accessLog) close() {
	if a.w != nil {
		_ = a.w.Close()
	}
	if a.file != nil {
		a.file.Close()
	}
}

// raiseFileLimit raises the open-file soft limit to the hard one and
// reports it, since it bounds how many connections mqgate can proxy.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("cannot raise the open-file soft limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
		} else {
			lim = raised
		}
	}
	// Each proxied connection holds two descriptors; keep some for
	// listeners, logs and the connections being set up.
	const reserve = 64
	conns := (int64(lim.Cur) - reserve) / 2
	log.Info("open-file limit", "soft", lim.Cur, "hard", lim.Max, "max_proxied_connections", conns)
}
