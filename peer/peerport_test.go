package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestClusterTLSIsDeterministic(t *testing.T) {
	k := bytes.Repeat([]byte{3}, 32)
	s1, _, err := clusterTLS(k)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, _ := clusterTLS(k)
	s3, _, _ := clusterTLS(bytes.Repeat([]byte{4}, 32))
	if !bytes.Equal(s1.Certificates[0].Certificate[0], s2.Certificates[0].Certificate[0]) {
		t.Fatal("same key gave different certificates")
	}
	if bytes.Equal(s1.Certificates[0].Certificate[0], s3.Certificates[0].Certificate[0]) {
		t.Fatal("different keys gave the same certificate")
	}
}

// echoServe answers every connection of l by echoing one line, prefixed.
func echoServe(l net.Listener, prefix string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Write(append([]byte(prefix), buf[:n]...))
		}()
	}
}

func TestPeerPortRouting(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	srvTLS, cliTLS, _ := clusterTLS(key)
	_, wrongTLS, _ := clusterTLS(bytes.Repeat([]byte{8}, 32))
	tests := []struct {
		name      string
		serverTLS *tls.Config
		clientTLS *tls.Config
		wantOK    bool
	}{
		{"plain cluster, plain client", nil, nil, true},
		{"keyed cluster, keyed client", srvTLS, cliTLS, true},
		{"keyed cluster, plain client", srvTLS, nil, false},
		{"keyed cluster, wrong key", srvTLS, wrongTLS, false},
	}
	log := slog.New(slog.DiscardHandler)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := listenPeerPort("127.0.0.1:0", tt.serverTLS, log)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go echoServe(p.Raft, "raft:")
			go echoServe(p.RPC, "rpc:")
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "http:"+r.URL.Path) })}
			go srv.Serve(p.HTTP)
			defer srv.Close()
			addr := p.ln.Addr().String()

			for kind, want := range map[byte]string{connRaft: "raft:hi", connRPC: "rpc:hi"} {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				c, err := dialPeer(ctx, addr, kind, tt.clientTLS)
				cancel()
				got := ""
				if err == nil {
					c.SetDeadline(time.Now().Add(3 * time.Second))
					c.Write([]byte("hi"))
					b, _ := io.ReadAll(c)
					got = string(b)
					c.Close()
				}
				if (got == want) != tt.wantOK {
					t.Errorf("kind %d: got %q (dial err %v), want ok=%v", kind, got, err, tt.wantOK)
				}
			}
			// Plain HTTP (PCCRR) always works, key or not.
			resp, err := http.Get("http://" + addr + "/116B50EB-ECE2-41ac-8429-9F9E963361B7/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "http:/116B50EB-ECE2-41ac-8429-9F9E963361B7/" {
				t.Errorf("http got %q", b)
			}
		})
	}
}
