package peer

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Keys of a rotation: the steps are [old] → [old new] → [new old] → [new].
var (
	keyOld   = bytes.Repeat([]byte{0x01}, 32)
	keyNew   = bytes.Repeat([]byte{0x02}, 32)
	keyOther = bytes.Repeat([]byte{0x03}, 32)
)

func ks(keys ...[]byte) [][]byte { return keys }

// tlsPair runs one mutual TLS handshake between a server with srvKeys and
// a client with cliKeys over loopback TCP. It returns each side's error:
// both nil when they accepted each other (and an application byte went
// through); then it checks that each side presented its first key's
// certificate.
func tlsPair(t *testing.T, srvKeys, cliKeys [][]byte) (srvErr, cliErr error) {
	t.Helper()
	srvTLS, _, err := clusterTLS(srvKeys...)
	if err != nil {
		t.Fatal(err)
	}
	_, cliTLS, err := clusterTLS(cliKeys...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err  error
		peer []byte
	}
	srvDone := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, srvTLS)
		if err := tc.Handshake(); err != nil {
			srvDone <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{'!'})
		srvDone <- result{err: err, peer: tc.ConnectionState().PeerCertificates[0].Raw}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, cliTLS)
	cliErr = tc.Handshake()
	var got [1]byte
	if cliErr == nil {
		_, cliErr = io.ReadFull(tc, got[:])
	}
	if cliErr != nil {
		tc.Close() // unblocks the server if the client refused first
	}
	srv := <-srvDone
	if srv.err != nil || cliErr != nil {
		return srv.err, cliErr
	}
	want := func(k []byte) []byte {
		cert, err := clusterCert(k)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Certificate[0]
	}
	if !bytes.Equal(srv.peer, want(cliKeys[0])) {
		t.Error("the client did not present its first key's certificate")
	}
	if !bytes.Equal(tc.ConnectionState().PeerCertificates[0].Raw, want(srvKeys[0])) {
		t.Error("the server did not present its first key's certificate")
	}
	return nil, nil
}

// TestClusterTLSKeyring: server and client each accept a certificate
// derived from any of their keys and present their first key's; agents
// one rotation step apart connect, an unrelated key is refused by either
// side.
func TestClusterTLSKeyring(t *testing.T) {
	tests := []struct {
		name     string
		srv, cli [][]byte
		refuser  string // "": accepted; "server", "client": that side refuses the other's certificate
	}{
		{"same single key", ks(keyOld), ks(keyOld), ""},
		{"[old] server, [old new] client", ks(keyOld), ks(keyOld, keyNew), ""},
		{"[old new] server, [old] client", ks(keyOld, keyNew), ks(keyOld), ""},
		{"[old new] server, [new old] client", ks(keyOld, keyNew), ks(keyNew, keyOld), ""},
		{"[new old] server, [old new] client", ks(keyNew, keyOld), ks(keyOld, keyNew), ""},
		{"[new old] server, [new] client", ks(keyNew, keyOld), ks(keyNew), ""},
		{"[new] server, [new old] client", ks(keyNew), ks(keyNew, keyOld), ""},
		{"server refuses a key it does not hold yet", ks(keyOld), ks(keyNew, keyOld), "server"},
		{"client refuses a key it does not hold yet", ks(keyNew, keyOld), ks(keyOld), "client"},
		{"server refuses an unrelated client", ks(keyOld, keyNew), ks(keyOther, keyOld), "server"},
		{"client refuses an unrelated server", ks(keyOther, keyNew), ks(keyOld, keyNew), "client"},
		{"[old] and [new] never connect", ks(keyOld), ks(keyNew), "client"}, // TLS 1.3: the client verifies first
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvErr, cliErr := tlsPair(t, tt.srv, tt.cli)
			switch tt.refuser {
			case "":
				if srvErr != nil || cliErr != nil {
					t.Fatalf("refused: server %v, client %v", srvErr, cliErr)
				}
			case "server":
				if !errors.Is(srvErr, errWrongClusterKey) {
					t.Fatalf("server: %v, want %v (client: %v)", srvErr, errWrongClusterKey, cliErr)
				}
			case "client":
				if !errors.Is(cliErr, errWrongClusterKey) {
					t.Fatalf("client: %v, want %v (server: %v)", cliErr, errWrongClusterKey, srvErr)
				}
			}
			if tt.refuser != "" && (srvErr == nil || cliErr == nil) {
				t.Fatalf("one side completed: server %v, client %v", srvErr, cliErr)
			}
		})
	}
	if _, _, err := clusterTLS(); err == nil {
		t.Error("clusterTLS with no key succeeded")
	}
}

// TestGossipKeyring: two gossip pools with key lists meet when they are one
// rotation step apart (memberlist's keyring: the first key encrypts, any
// decrypts), whoever joins whom; with unrelated keys, or a key against
// none, neither sees the other.
func TestGossipKeyring(t *testing.T) {
	tests := []struct {
		name string
		a, b [][]byte
		meet bool
	}{
		{"[old] and [old new]", ks(keyOld), ks(keyOld, keyNew), true},
		{"[old new] and [new old]", ks(keyOld, keyNew), ks(keyNew, keyOld), true},
		{"[new old] and [new]", ks(keyNew, keyOld), ks(keyNew), true},
		{"open and open", nil, nil, true},
		{"[old] and [new]", ks(keyOld), ks(keyNew), false},
		{"[new old] and [other]", ks(keyNew, keyOld), ks(keyOther), false},
		{"[old] and open", ks(keyOld), nil, false},
	}
	log := slog.New(slog.DiscardHandler)
	start := func(t *testing.T, keys [][]byte) *pool {
		t.Helper()
		p, err := newPool(poolConfig{Node: uuid.NewString(), Subnet: "10.99.0.0/24", BindAddr: "127.0.0.1",
			Advertise: netip.MustParseAddr("127.0.0.1"), Keys: keys, Meta: func() []byte { return nil },
			Retention: time.Minute, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Leave(time.Second) })
		return p
	}
	for _, tt := range tests {
		for _, dir := range []string{"b joins a", "a joins b"} {
			t.Run(tt.name+"/"+dir, func(t *testing.T) {
				t.Parallel()
				a, b := start(t, tt.a), start(t, tt.b)
				from, to := b, a
				if dir == "a joins b" {
					from, to = a, b
				}
				n, err := from.Join([]string{to.Addr().String()})
				both := func() bool { return a.NumMembers() == 2 && b.NumMembers() == 2 }
				if tt.meet {
					if err != nil || n != 1 {
						t.Fatalf("join: %d, %v", n, err)
					}
					deadline := time.Now().Add(5 * time.Second)
					for !both() {
						if time.Now().After(deadline) {
							t.Fatalf("pools did not meet: %d and %d members", a.NumMembers(), b.NumMembers())
						}
						time.Sleep(20 * time.Millisecond)
					}
					return
				}
				if err == nil || n != 0 {
					t.Errorf("join answered: %d, %v", n, err)
				}
				time.Sleep(500 * time.Millisecond)
				if a.NumMembers() != 1 || b.NumMembers() != 1 {
					t.Fatalf("pools met: %d and %d members", a.NumMembers(), b.NumMembers())
				}
			})
		}
	}
}
