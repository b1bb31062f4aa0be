//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRelay: through a Relay with a round trip of 100 ms, a request on a
// new connection is answered two round trips after connect, one on the
// same connection one round trip after it was sent; 4 MiB come back
// intact; a half-close reaches the server; Close ends the relayed
// connections and the relay's goroutines (TestMain's goleak). Loopback
// only.
func TestRelay(t *testing.T) {
	const rtt = 100 * time.Millisecond
	const slack = 80 * time.Millisecond
	payload := make([]byte, 4<<20)
	if _, err := crand.Read(payload); err != nil {
		t.Fatal(err)
	}
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	served := make(chan string, 4) // how each server connection ended
	go func() {                    // ends with srv.Close
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { // ends when the relay closes c
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						served <- "read: " + err.Error()
						return
					}
					n, _ := strconv.Atoi(strings.TrimSpace(line))
					if _, err := c.Write(payload[:n]); err != nil {
						served <- "write: " + err.Error()
						return
					}
				}
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRelay(ln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Addr().String())
	}, rtt)
	defer r.Close()

	ask := func(c net.Conn, n int) (first, all time.Duration, got []byte) {
		t.Helper()
		start := time.Now()
		if _, err := io.WriteString(c, strconv.Itoa(n)+"\n"); err != nil {
			t.Fatal(err)
		}
		got = make([]byte, n)
		if _, err := io.ReadFull(c, got[:1]); err != nil {
			t.Fatal(err)
		}
		first = time.Since(start)
		if _, err := io.ReadFull(c, got[1:]); err != nil {
			t.Fatal(err)
		}
		return first, time.Since(start), got
	}
	start := time.Now()
	c, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask(c, 1)
	if total := time.Since(start); total < 2*rtt || total > 2*rtt+slack {
		t.Errorf("first answer on a new connection %v after connect, want 2 round trips (%v)", total, 2*rtt)
	}
	first, all, got := ask(c, len(payload))
	if first < rtt || first > rtt+slack {
		t.Errorf("answer on a reused connection after %v, want one round trip (%v)", first, rtt)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("relayed bytes differ")
	}
	t.Logf("4 MiB relayed in %v, first byte after %v", all, first)

	// A half-close goes through: the server reads EOF.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case how := <-served:
		if !strings.Contains(how, io.EOF.Error()) {
			t.Errorf("server connection ended with %q, want EOF", how)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the half-close did not reach the server")
	}

	// Close ends a relayed connection the client still holds.
	c2, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ask(c2, 10)
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close: %v, want the connection closed", err)
	}
	if _, err := net.DialTimeout("tcp", r.Addr().String(), time.Second); err == nil {
		t.Fatal("relay still accepts after Close")
	}
}
