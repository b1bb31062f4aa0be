package peer

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// TestStreamCap: streams from a listener reach memberlist's side within
// the per-source and total caps; the others are closed at once and
// counted by reason; closing an admitted stream frees its place; shutdown
// ends the relay while the listener stops.
func TestStreamCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan net.Conn)
	var accepting sync.WaitGroup
	accepting.Go(func() { // the listener's goroutine, as memberlist's
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			in <- c
		}
	})
	var mu sync.Mutex
	refused := map[string]int{}
	s := newStreamCap(in, 2, 3, func(r string) { mu.Lock(); refused[r]++; mu.Unlock() }, slog.New(slog.DiscardHandler))

	var admitted []net.Conn // memberlist's ends
	steps := []struct {
		from  string // dial from this address; "" closes the first admitted stream
		want  string // "" admitted, else the refusal
		open  int    // admitted streams open after the step
		count int    // refusals of want so far
	}{
		{from: "127.0.0.1", open: 1},
		{from: "127.0.0.1", open: 2},
		{from: "127.0.0.1", want: streamRefusedPerSource, open: 2, count: 1},
		{from: "127.0.0.2", open: 3},
		{from: "127.0.0.2", want: streamRefusedTotal, open: 3, count: 1},
		{from: "", open: 2}, // a stream of 127.0.0.1 ends
		{from: "127.0.0.1", open: 3},
		{from: "127.0.0.3", want: streamRefusedTotal, open: 3, count: 2},
	}
	for i, st := range steps {
		if st.from == "" {
			admitted[0].Close()
			admitted = admitted[1:]
		} else {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(st.from)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			defer c.Close()
			if st.want == "" {
				select {
				case sc := <-s.out:
					admitted = append(admitted, sc)
				case <-time.After(5 * time.Second):
					t.Fatalf("step %d: the stream from %s was not handed over", i, st.from)
				}
			} else {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("step %d: the stream from %s over the %s cap is still open (%v)", i, st.from, st.want, err)
				}
				mu.Lock()
				n := refused[st.want]
				mu.Unlock()
				if n != st.count {
					t.Errorf("step %d: %d refusals by %s, want %d", i, n, st.want, st.count)
				}
			}
		}
		if got := s.openStreams(); got != st.open {
			t.Errorf("step %d: %d streams open, want %d", i, got, st.open)
		}
	}
	for _, c := range admitted {
		c.Close()
	}
	// A stream accepted while the relay stops is closed, not left waiting.
	late, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if err := s.shutdown(func() error {
		err := ln.Close()
		accepting.Wait()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := late.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a stream dialed at shutdown: read %v, want it closed", err)
	}
}

// TestGossipStreamsCapped: a real pool's gossip port closes a source's
// streams past gossipStreamsPerSource while they stay open (127.0.0.2),
// and still serves another source's join (127.0.0.1).
func TestGossipStreamsCapped(t *testing.T) {
	p := newTestPool(t)
	addr := p.Addr().String()
	flood := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range gossipStreamsPerSource {
		c, err := flood.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// memberlist holds each of these open, waiting for a message, until
	// its TCP timeout: the next one from the same source is closed.
	over, err := flood.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stream %d from one source still open (%v)", gossipStreamsPerSource+1, err)
	}
	// Another source (a member, dialing from 127.0.0.1) still joins.
	q := newTestPool(t)
	if n, err := q.Join([]string{addr}); n != 1 || err != nil {
		t.Fatalf("join from another source: %d, %v", n, err)
	}
}
