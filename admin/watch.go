package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch re-reads the configuration files when their content changes, as
// SIGHUP does, until ctx ends. It polls (reload.watch_interval) rather than
// using inotify: polling sees a file replaced by rename, a changed symlink
// (Kubernetes ConfigMaps) and network file systems alike, and it compares
// contents, so touching a file does nothing. A half-written file is
// refused like any invalid one, and the next change is read again.
func (m *Manager) Watch(ctx context.Context) {
	last := m.fingerprint()
	for {
		rs := m.Config().ReloadSettings()
		interval := rs.WatchInterval
		if !rs.Watch {
			interval = DefaultWatchRecheck
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !rs.Watch {
			continue // a reload may turn watching back on
		}
		if fp := m.fingerprint(); !bytes.Equal(fp, last) {
			last = fp
			m.log.Info("configuration files changed", "files", m.files)
			_ = m.Reload("watch")
		}
	}
}

// DefaultWatchRecheck is how often a Watch that is switched off checks
// whether a reload switched it on.
const DefaultWatchRecheck = 10 * time.Second

// fingerprint hashes the files' contents; an unreadable file hashes as its
// error, so its return is a change too.
func (m *Manager) fingerprint() []byte {
	h := sha256.New()
	for _, f := range m.files {
		data, err := os.ReadFile(f)
		if err != nil {
			h.Write([]byte(err.Error()))
		}
		h.Write(data)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}
