package accesslog

import (
	"fmt"
	"os"
	"sync"
)

// File is an access log file that can be reopened at the same path, as
// NGINX does on SIGUSR1: logrotate renames the file, sends the signal,
// and the next line goes to a new file under the old name, with no line
// lost or split. Writes may run concurrently; each line is one write(2) to
// a file opened O_APPEND, so lines from several writers never interleave.
type File struct {
	path string
	mu   sync.RWMutex // writers share it; Reopen takes it alone
	f    *os.File
}

// OpenFile opens path for appending, creating it (mode 0644) if needed.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// Write writes p, one line or more, to the file.
func (l *File) Write(p []byte) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.f.Write(p)
}

// Reopen opens the path again and writes there from now on. When the path
// cannot be opened (a directory gone, permissions), the old file stays in
// use and the error says why.
func (l *File) Reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Path is the file's path.
func (l *File) Path() string { return l.path }

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
