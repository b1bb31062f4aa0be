package fetch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"testing"
)

// mapResolver resolves from a map; a missing name fails like NXDOMAIN.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if network != "ip" {
		return nil, errors.New("unexpected network " + network)
	}
	addrs, ok := m[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// TestCheckDemandURL: what the Red Leader refuses to fetch for a demand.
func TestCheckDemandURL(t *testing.T) {
	self := addrs("192.168.1.10", "fd00::10")
	res := mapResolver{
		"origin.example":   addrs("203.0.113.5", "2001:db8::5"),
		"lan.example":      addrs("10.1.2.3"),
		"localhost":        addrs("127.0.0.1", "::1"),
		"rebind.example":   addrs("203.0.113.6", "127.0.0.1"),
		"metadata.example": addrs("169.254.169.254"),
		"me.example":       addrs("192.168.1.10"),
		"empty.example":    {},
	}
	tests := []struct {
		url  string
		want error // nil: allowed
	}{
		{"http://origin.example/f.iso", nil},
		{"https://origin.example:8443/f.iso?sig=abc", nil},
		{"http://lan.example/f", nil},
		{"http://203.0.113.7/f", nil},
		{"http://[2001:db8::7]:8080/f", nil},
		{"http://192.168.1.11/f", nil},
		{"ftp://origin.example/f", ErrDemandURL},
		{"file:///etc/passwd", ErrDemandURL},
		{"gopher://origin.example/", ErrDemandURL},
		{"http://user:pw@origin.example/f", ErrDemandURL},
		{"http:origin.example", ErrDemandURL},
		{"http:///f", ErrDemandURL},
		{"http://origin.example:0/f", ErrDemandURL},
		{"http://origin.example:70000/f", ErrDemandURL},
		{"http://127.0.0.1/f", ErrDemandAddr},
		{"http://127.9.9.9:8080/f", ErrDemandAddr},
		{"http://[::1]/f", ErrDemandAddr},
		{"http://[::ffff:127.0.0.1]/f", ErrDemandAddr},
		{"http://localhost/f", ErrDemandAddr},
		{"http://rebind.example/f", ErrDemandAddr},
		{"http://169.254.169.254/latest/meta-data/", ErrDemandAddr},
		{"http://metadata.example/", ErrDemandAddr},
		{"http://[fe80::1%25eth0]/f", ErrDemandAddr},
		{"http://0.0.0.0/f", ErrDemandAddr},
		{"http://0.1.2.3/f", ErrDemandAddr},
		{"http://[::]/f", ErrDemandAddr},
		{"http://224.0.0.251/f", ErrDemandAddr},
		{"http://[ff02::1]/f", ErrDemandAddr},
		{"http://255.255.255.255/f", ErrDemandAddr},
		{"http://192.168.1.10/f", ErrDemandAddr},
		{"http://[fd00::10]/f", ErrDemandAddr},
		{"http://me.example/f", ErrDemandAddr},
		{"http://empty.example/f", ErrDemandAddr},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckDemandURL(t.Context(), res, u, self)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantErr(t, err, tt.want)
		})
	}

	t.Run("unresolvable", func(t *testing.T) {
		u, _ := url.Parse("http://nx.example/f")
		var dnsErr *net.DNSError
		if err := CheckDemandURL(t.Context(), res, u, self); !errors.As(err, &dnsErr) {
			t.Fatalf("error %v, want the resolver's", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		u, _ := url.Parse("http://origin.example/f")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := CheckDemandURL(ctx, res, u, self); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
	t.Run("no url, no resolver", func(t *testing.T) {
		wantErr(t, CheckDemandURL(t.Context(), res, nil, self), ErrDemandURL)
		u, _ := url.Parse("http://origin.example/f")
		wantErr(t, CheckDemandURL(t.Context(), nil, u, self), ErrDemandAddr)
	})
}
