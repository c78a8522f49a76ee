package proxy

import (
	"cmp"
	"errors"
	"syscall"
	"time"

	"github.com/mqgate/mqgate/admission"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/pipe"
)

// EndShed is the end of an unfinished connection shed by admission: a cap
// on connections that have not finished their CONNECT was full and it was
// the oldest (see package admission).
const EndShed pipe.End = "shed"

// shedLogInterval is how often sheds are logged, as one line with their
// count and rate.
const shedLogInterval = 10 * time.Second

// emfileShed is how many of the oldest unfinished connections the accept
// loop sheds when the process is out of descriptors.
const emfileShed = 32

// crowdedWaits bounds how many milliseconds the accept loop waits for shed
// connections to close before it accepts anyway.
const crowdedWaits = 100

// admissionLimits are the caps stream_proxy sets, each left at 0 derived
// from the open-file limit nofile.
func admissionLimits(sp config.StreamProxy, nofile int) admission.Limits {
	reserve := cmp.Or(sp.ReservedDescriptors, admission.DefaultReserve(nofile))
	def := admission.DefaultsWithReserve(nofile, reserve)
	return admission.Limits{
		Total:       cmp.Or(sp.MaxUnfinishedConnections, def.Total),
		PerAddress:  cmp.Or(sp.MaxUnfinishedPerAddress, def.PerAddress),
		Descriptors: def.Descriptors,
	}
}

// admit takes the connection's place among the unfinished connections,
// which may shed the oldest of them; it ends when the connection itself is
// shed (nothing older made room).
func (p *connPath) admit() bool {
	s, lc := p.s, p.lc
	// Past their CONNECT, connections hold two descriptors: client and broker.
	proxied := 2 * int(s.pastConnect.Load())
	t, ok := s.gate.Admit(p.rec.remote.Addr(), proxied, func() { lc.close(EndShed) })
	p.ticket = t
	return ok
}

// outOfDescriptors reports whether an accept error is EMFILE or ENFILE.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
