package epoll

import (
	"net"
	"testing"
	"time"
)

// TestNotifierOneShot: a watch wakes once when its socket has bytes, not
// again until armed, at once when armed with bytes still unread, and Arm
// fails once the socket is closed.
func TestNotifierOneShot(t *testing.T) {
	t.Parallel()
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ln := listen(t)
	peer, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	woken := make(chan struct{}, 8)
	w, err := n.Watch(rc, func() { woken <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-woken:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake %s", what)
		}
	}
	if _, err := peer.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	wait("for the first byte")
	if _, err := peer.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	// Not armed: the second byte wakes nobody until Arm, which wakes at
	// once, as the bytes are still unread. A wake that did come early
	// would be seen in the channel after Arm as a second one.
	if err := w.Arm(); err != nil {
		t.Fatal(err)
	}
	wait("after Arm with bytes unread")
	if len(woken) != 0 {
		t.Fatalf("%d wakes more than one per arming", len(woken))
	}
	c.Close()
	if err := w.Arm(); err == nil {
		t.Error("Arm succeeded on a closed socket")
	}
	w.Stop()
}
