package peer

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/redleader-p2p/redleader/internal/ratelog"
)

// memberlist accepts every TCP connection to the gossip port (joins,
// push/pull state exchanges, fallback pings) and serves each in a goroutine
// of its own for up to its TCPTimeout (10 s), with no cap: a LAN host that
// opens thousands takes the agent's file descriptors. streamCap sits
// between memberlist's listener and memberlist and closes at once the
// streams over its caps; the member that opened one tries again later or
// another member, and UDP gossip (failure detection, broadcasts) goes on.

const (
	// gossipStreamsPerSource caps one source's open gossip streams (an
	// IPv4 address, or an IPv6 /64 as on the peer port). A member opens one
	// at a time (a join or a push/pull, a few milliseconds on a LAN); a
	// few more cover a restart. Lower refuses a member that retries
	// quickly; higher lets fewer hosts fill the total.
	gossipStreamsPerSource = 8
	// gossipStreamsTotal caps every open gossip stream. Each member
	// push/pulls with one random member every 30 s or more (memberlist
	// scales the interval up with the pool), so even a subnet of thousands
	// starting at once stays far below.
	gossipStreamsTotal = 256
)

// Why streamCap closed a stream: the label of
// redleader_gossip_streams_refused_total.
const (
	streamRefusedPerSource = "per_source"
	streamRefusedTotal     = "total"
)

// streamCap relays the streams memberlist's listener accepts (in) to
// memberlist (out) within its caps. Its goroutine runs from newStreamCap
// to shutdown.
type streamCap struct {
	in        <-chan net.Conn
	out       chan net.Conn
	perSource int
	total     int
	refused   func(reason string) // nil: not counted
	log       *ratelog.Logger

	mu    sync.Mutex
	conns connCount // under mu

	done chan struct{}
	wg   sync.WaitGroup
}

func newStreamCap(in <-chan net.Conn, perSource, total int, refused func(string), log *slog.Logger) *streamCap {
	s := &streamCap{in: in, out: make(chan net.Conn), perSource: perSource, total: total, refused: refused,
		log: ratelog.New(log, refusalLogEvery, refusalLogBurst), done: make(chan struct{})}
	s.wg.Add(1)
	go s.relay()
	return s
}

func (s *streamCap) relay() {
	defer s.wg.Done()
	for {
		var c net.Conn
		select {
		case <-s.done:
			return
		case c = <-s.in:
		}
		tc, why := s.admit(c)
		if tc == nil {
			s.log.Warn("gossip-stream-refused", "gossip port: connection refused", "reason", why,
				"remote", c.RemoteAddr().String())
			if s.refused != nil {
				s.refused(why)
			}
			_ = c.Close()
			continue
		}
		select {
		case s.out <- tc:
		case <-s.done:
			_ = tc.Close()
			return
		}
	}
}

// admit counts c against the caps and returns it wrapped so that closing
// it gives its place back, or says which cap refuses it.
func (s *streamCap) admit(c net.Conn) (net.Conn, string) {
	key := sourceKey(remoteIP(c.RemoteAddr()))
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.conns.take(key, s.perSource, s.total) {
	case overPerSource:
		return nil, streamRefusedPerSource
	case overTotal:
		return nil, streamRefusedTotal
	}
	return &trackedConn{Conn: c, release: func() { s.release(key) }}, ""
}

func (s *streamCap) release(key netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns.release(key)
}

// openStreams is the number of admitted streams not closed yet.
func (s *streamCap) openStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns.open
}

// shutdown stops the relay, then runs stopListener (which may wait for the
// listener's goroutine to hand over a stream it accepted: such streams are
// closed meanwhile).
func (s *streamCap) shutdown(stopListener func() error) error {
	close(s.done)
	s.wg.Wait()
	drained := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case c := <-s.in:
				_ = c.Close()
			case <-drained:
				return
			}
		}
	})
	err := stopListener()
	close(drained)
	wg.Wait()
	return err
}
