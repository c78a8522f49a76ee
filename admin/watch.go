package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"

	"github.com/mqgate/mqgate/config"
)

// Watch re-reads the configuration files when their content changes, as
// SIGHUP does, until ctx ends. It polls (reload.watch_interval) rather than
// using inotify: polling sees a file replaced by rename, a changed symlink
// (Kubernetes ConfigMaps) and network file systems alike, and it compares
// contents, so touching a file does nothing. A half-written file is
// refused like any invalid one, and the next change is read again.
func (m *Manager) Watch(ctx context.Context) {
	var readErr string // the last read failure logged, so it is logged once
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
		fp, err := fingerprint(m.files)
		if err != nil {
			// Not a change: out of descriptors, or a file being
			// replaced. The running configuration stays; the next
			// readable content is compared with what was loaded.
			if err.Error() != readErr {
				readErr = err.Error()
				m.log.Warn("cannot read the configuration files, keeping the running configuration", "err", err)
			}
			continue
		}
		readErr = ""
		if !bytes.Equal(fp, m.readFingerprint()) {
			m.log.Info("configuration files changed", "files", m.files)
			_ = m.Reload("watch")
		}
	}
}

// DefaultWatchRecheck is how often a Watch that is switched off checks
// whether a reload switched it on.
const DefaultWatchRecheck = 10 * time.Second

// fingerprint hashes the files' contents, or fails when one cannot be read.
func fingerprint(files []string) ([]byte, error) {
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		h.Write(data)
		h.Write([]byte{0})
	}
	return h.Sum(nil), nil
}

// docsFingerprint is fingerprint of the contents read into docs.
func docsFingerprint(docs []config.Document) []byte {
	h := sha256.New()
	for _, d := range docs {
		h.Write(d.Data)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// readFingerprint is the fingerprint of the files as last read by Open or
// Reload, whether they were valid or not: Watch's baseline is what was
// loaded, so an edit between loading and the first look is a change.
func (m *Manager) readFingerprint() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.read
}
