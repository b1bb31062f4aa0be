package config_test

import (
	"testing"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer/fetch"
)

// TestOriginProxyAgreesWithFetch: what Validate accepts as origin_proxy,
// and only that, is what the data path's fetch.NewOrigin accepts, so an
// agent never starts with a proxy its data path then refuses.
func TestOriginProxyAgreesWithFetch(t *testing.T) {
	if config.ProxyDirect != fetch.ProxyDirect {
		t.Fatalf("config.ProxyDirect %q, fetch.ProxyDirect %q", config.ProxyDirect, fetch.ProxyDirect)
	}
	for _, p := range []string{
		"", "direct", "http://proxy.example:3128", "https://u:p@proxy.example", "socks5://10.0.0.1:1080",
		"socks5h://proxy.example", "http://[2001:db8::1]:3128", "HTTP://proxy.example:3128",
		"ftp://proxy.example", "proxy.example:3128", "http://", "not a url", "http://u:p@[::1", "Direct",
		"http:proxy.example", "//proxy.example:3128", "socks4://proxy.example",
	} {
		_, cerr := config.CheckOriginProxy(p)
		o, ferr := fetch.NewOrigin(fetch.Options{Proxy: p})
		if ferr == nil {
			o.Close()
		}
		if (cerr == nil) != (ferr == nil) {
			t.Errorf("origin_proxy %q: config says %v, fetch.NewOrigin says %v", p, cerr, ferr)
		}
	}
}
