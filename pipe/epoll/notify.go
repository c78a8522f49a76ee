package epoll

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/pipe"
)

// Notifier tells when sockets that Go's runtime still owns (TLS and
// WebSocket connections, which carry their bytes through user space) have
// bytes to read, so that an idle one waits with no goroutine: it is the
// readiness source of [pipe.Park].
//
//	n, err := epoll.NewNotifier()
//	if err != nil { ... }
//	defer n.Close()
//	rc, _ := tcpConn.SyscallConn()
//	w, err := n.Watch(rc, func() { go drain() }) // drain re-arms w when it runs dry
//
// Each watch is one-shot: wake runs once when the descriptor becomes
// readable (or hangs up, or fails), then not again until Arm. It runs on the
// notifier's own goroutine, so it must only hand the work on. The
// notifier's goroutine waits in epoll_wait, a system call, so it holds no P
// while it waits: unlike a Group it adds no GOMAXPROCS.
//
// The socket stays Go's: every epoll_ctl runs inside its RawConn's Control,
// so that it cannot reach a descriptor number that a concurrent Close freed
// and another socket took; a closed socket leaves the epoll set by itself.
type Notifier struct {
	epfd int
	wake int // an eventfd that ends the wait for Close

	mu      sync.Mutex
	watches []*watch // by slot; the epoll data names slot and generation
	gens    []int32  // by slot: the generation of its next watch
	free    []int32
	closed  bool
	done    chan struct{}
}

// watch is one descriptor in the notifier.
type watch struct {
	n    *Notifier
	rc   syscall.RawConn
	slot int32
	gen  int32
	wake func()
}

// notifyWakeTag is the epoll data of the notifier's eventfd.
const notifyWakeTag = -1

// NewNotifier starts a notifier on a goroutine of its own.
func NewNotifier() (*Notifier, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: notifyWakeTag}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	n := &Notifier{epfd: epfd, wake: wake, done: make(chan struct{})}
	go n.run()
	return n, nil
}

var errNotifierClosed = errors.New("epoll: notifier closed")

// Watch registers the socket of rc, armed: wake runs once when it is
// readable.
func (n *Notifier) Watch(rc syscall.RawConn, wake func()) (pipe.Watch, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errNotifierClosed
	}
	w := &watch{n: n, rc: rc, wake: wake}
	if k := len(n.free); k > 0 {
		w.slot = n.free[k-1]
		n.free = n.free[:k-1]
	} else {
		w.slot = int32(len(n.watches))
		n.watches = append(n.watches, nil)
		n.gens = append(n.gens, 0)
	}
	w.gen = n.gens[w.slot]
	n.watches[w.slot] = w
	n.mu.Unlock()
	err := w.ctl(unix.EPOLL_CTL_ADD)
	if errors.Is(err, unix.EEXIST) {
		// Still in the set from a watch that Stop left there.
		err = w.ctl(unix.EPOLL_CTL_MOD)
	}
	if err != nil {
		w.release()
		return nil, err
	}
	return w, nil
}

// ctl adds or re-arms the watch: level-triggered and one-shot, so that
// bytes that came while it was disarmed wake it as soon as it is armed.
func (w *watch) ctl(op int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: w.slot, Pad: w.gen}
	var cerr error
	if err := w.rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(w.n.epfd, op, int(fd), &ev)
	}); err != nil {
		return err // closed
	}
	if cerr != nil {
		return os.NewSyscallError("epoll_ctl", cerr)
	}
	return nil
}

// Arm asks for one more wake, when the socket is readable (at once if it
// is now). It fails once the socket is closed.
func (w *watch) Arm() error { return w.ctl(unix.EPOLL_CTL_MOD) }

// Stop ends the watch's wakes; a wake already under way may still run.
// The socket stays in the epoll set until it is closed, which takes it out
// by itself (a pipe closes it soon after, and an epoll_ctl per direction
// is a sixth of a parked connection's): an event it may still raise, at
// most one (one-shot), names a released slot or an older generation, and
// run drops it.
func (w *watch) Stop() { w.release() }

// Leave is Stop, and takes the socket out of the epoll set now: a socket
// an event loop takes over (pipe.Handover) stays open through the loop's
// duplicate descriptor, so closing Go's would not take it out.
func (w *watch) Leave() error {
	err := w.ctl(unix.EPOLL_CTL_DEL)
	w.release()
	return err
}

func (w *watch) release() {
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.watches[w.slot] == w {
		// The slot's next watch is of the next generation: an event
		// this one may still raise is dropped. w is not kept (nor the
		// closed socket its RawConn holds), and its wake no longer runs.
		n.watches[w.slot] = nil
		n.gens[w.slot]++
		w.wake = nil
		n.free = append(n.free, w.slot)
	}
}

// Close stops the notifier; watches that remain are not woken again.
func (n *Notifier) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(n.wake, one[:])
	<-n.done
	unix.Close(n.wake)
	unix.Close(n.epfd)
}

func (n *Notifier) run() {
	defer close(n.done)
	events := make([]unix.EpollEvent, maxEvents)
	wakes := make([]func(), 0, maxEvents)
	for {
		k, err := unix.EpollWait(n.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(os.NewSyscallError("epoll_wait", err)) // a bad epfd: a bug
		}
		wakes = wakes[:0]
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return
		}
		for _, ev := range events[:k] {
			if ev.Fd == notifyWakeTag || int(ev.Fd) >= len(n.watches) {
				continue
			}
			if w := n.watches[ev.Fd]; w != nil && w.gen == ev.Pad && w.wake != nil {
				wakes = append(wakes, w.wake)
			}
		}
		n.mu.Unlock()
		for i, wake := range wakes {
			wake()
			wakes[i] = nil
		}
	}
}
