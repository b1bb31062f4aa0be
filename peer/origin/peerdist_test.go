package origin

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name    string
		ae, pd  string
		pdx     []string
		want    bool
		version string
	}{
		{name: "v1.0 client", ae: "peerdist", pd: "Version=1.0", want: true, version: "1.0"},
		{name: "v1.1 client", ae: "gzip, deflate, peerdist", pd: "Version=1.1", want: true, version: "1.1"},
		{name: "newer client gets 1.1", ae: "peerdist", pd: "Version=1.23", want: true, version: "1.1"},
		{name: "1.3 < 1.23 as integers", ae: "peerdist", pd: "Version=1.3", want: true, version: "1.1"},
		{name: "major 2", ae: "peerdist", pd: "Version=2.0", want: true, version: "1.1"},
		{name: "case-insensitive", ae: "PeerDist", pd: "version=1.1", want: true, version: "1.1"},
		{name: "q=0", ae: "peerdist;q=0", pd: "Version=1.1"},
		{name: "q=0.5", ae: "peerdist;q=0.5", pd: "Version=1.1", want: true, version: "1.1"},
		{name: "bad q", ae: "peerdist;q=x", pd: "Version=1.1", want: true, version: "1.1"},
		{name: "no coding", ae: "gzip", pd: "Version=1.1"},
		{name: "wildcard is not enough", ae: "*", pd: "Version=1.1"},
		{name: "no params", ae: "peerdist"},
		{name: "no version", ae: "peerdist", pd: "ContentLength=5"},
		{name: "bad version", ae: "peerdist", pd: "Version=one"},
		{name: "version without minor", ae: "peerdist", pd: "Version=1"},
		{name: "version 0.9", ae: "peerdist", pd: "Version=0.9"},
		{name: "missing data", ae: "peerdist", pd: "Version=1.1, MissingDataRequest=true"},
		{name: "ex 1.0-1.0", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=1.0, MaxContentInformation=1.0"}, want: true, version: "1.1"},
		{name: "ex 1.0-2.0", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=1.0, MaxContentInformation=2.0"}, want: true, version: "1.1"},
		{name: "ex split lines", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=1.0", "MaxContentInformation=2.0"}, want: true, version: "1.1"},
		{name: "ex 2.0 only", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=2.0, MaxContentInformation=2.0"}},
		{name: "ex undefined 1.5", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=1.0, MaxContentInformation=1.5"}},
		{name: "ex reversed", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MinContentInformation=2.0, MaxContentInformation=1.0"}},
		{name: "ex max only", ae: "peerdist", pd: "Version=1.1", pdx: []string{"MaxContentInformation=2.0"}},
		{name: "ex hash request only", ae: "peerdist", pd: "Version=1.1", pdx: []string{"HashRequest=true"}, want: true, version: "1.1"},
		{name: "ex with 1.0 client", ae: "peerdist", pd: "Version=1.0", pdx: []string{"MinContentInformation=1.0, MaxContentInformation=1.0"}, want: true, version: "1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.ae != "" {
				h.Set("Accept-Encoding", tt.ae)
			}
			if tt.pd != "" {
				h.Set(HeaderPeerDist, tt.pd)
			}
			for _, v := range tt.pdx {
				h.Add(HeaderPeerDistEx, v)
			}
			n := negotiate(h)
			if n.peerDist != tt.want {
				t.Fatalf("peerDist %v, want %v", n.peerDist, tt.want)
			}
			if tt.want && n.version.String() != tt.version {
				t.Fatalf("version %v, want %s", n.version, tt.version)
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		s          string
		size       int64
		start, end int64
		ok         bool
	}{
		{"bytes=0-9", 100, 0, 10, true},
		{"bytes=90-", 100, 90, 100, true},
		{"bytes=-10", 100, 90, 100, true},
		{"bytes=-1000", 100, 0, 100, true},
		{"bytes=0-1000", 100, 0, 100, true},
		{"Bytes = 5 - 6", 100, 5, 7, true},
		{"bytes=99-99", 100, 99, 100, true},
		{"bytes=100-", 100, 0, 0, false},
		{"bytes=-0", 100, 0, 0, false},
		{"bytes=5-4", 100, 0, 0, false},
		{"bytes=0-1,3-4", 100, 0, 0, false},
		{"items=0-1", 100, 0, 0, false},
		{"bytes=a-b", 100, 0, 0, false},
		{"bytes=-", 100, 0, 0, false},
		{"bytes=5", 100, 0, 0, false},
		{"bytes=-5", 0, 0, 0, false},
		{"bytes=99999999999999999999-", 100, 0, 0, false},
	}
	for _, tt := range tests {
		start, end, ok := parseRange(tt.s, tt.size)
		if ok != tt.ok || (ok && (start != tt.start || end != tt.end)) {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v", tt.s, tt.size, start, end, ok, tt.start, tt.end, tt.ok)
		}
	}
}

func TestPreconditions(t *testing.T) {
	const etag = `"1-2-3"`
	mod := time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC)
	at := func(d time.Duration) string { return mod.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"none", nil, 0},
		{"if-match ok", map[string]string{"If-Match": `"x", ` + etag}, 0},
		{"if-match star", map[string]string{"If-Match": "*"}, 0},
		{"if-match weak", map[string]string{"If-Match": "W/" + etag}, 412},
		{"if-match other", map[string]string{"If-Match": `"x"`}, 412},
		{"if-match garbage", map[string]string{"If-Match": `x`}, 412},
		{"if-unmodified-since ok", map[string]string{"If-Unmodified-Since": at(0)}, 0},
		{"if-unmodified-since old", map[string]string{"If-Unmodified-Since": at(-time.Hour)}, 412},
		{"if-none-match", map[string]string{"If-None-Match": etag}, 304},
		{"if-none-match weak", map[string]string{"If-None-Match": "W/" + etag}, 304},
		{"if-none-match list", map[string]string{"If-None-Match": `"a", "b",` + etag}, 304},
		{"if-none-match other", map[string]string{"If-None-Match": `"a"`}, 0},
		{"if-none-match wins over date", map[string]string{"If-None-Match": `"a"`, "If-Modified-Since": at(time.Hour)}, 0},
		{"if-modified-since same", map[string]string{"If-Modified-Since": at(0)}, 304},
		{"if-modified-since older", map[string]string{"If-Modified-Since": at(-time.Second)}, 0},
		{"if-modified-since bad", map[string]string{"If-Modified-Since": "yesterday"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if got := checkPreconditions(r, etag, mod); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
	for ir, want := range map[string]bool{"": true, etag: true, "W/" + etag: false, `"x"`: false,
		at(0): true, at(time.Second): false, "garbage": false, etag + " junk": false} {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		if ir != "" {
			r.Header.Set("If-Range", ir)
		}
		if got := ifRangeAllows(r, etag, mod); got != want {
			t.Errorf("If-Range %q: %v, want %v", ir, got, want)
		}
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"/index.html", "index.html", true},
		{"/a/b/../c", "", false},
		{"/a/./b", "a/b", true},
		{"//a//b/", "a/b", true},
		{"/", ".", true},
		{"/..", "", false},
		{"/../x", "", false},
		{"/a\\..\\x", "", false},
		{"/a\x00", "", false},
		{"relative", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := cleanName(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// headerSeeds are the header values of pccrtp-examples.json.
func headerSeeds(tb testing.TB) []string {
	ipxe, spec := loadExamples(tb)
	var seeds []string
	for _, m := range []map[string][]string{ipxe, spec} {
		for _, lines := range m {
			for _, l := range lines {
				if _, v, ok := strings.Cut(l, ": "); ok {
					seeds = append(seeds, v)
				}
			}
		}
	}
	return seeds
}

func FuzzNegotiate(f *testing.F) {
	for _, s := range headerSeeds(f) {
		f.Add("peerdist", s, s)
		f.Add(s, "Version=1.1", "MinContentInformation=1.0, MaxContentInformation=2.0")
	}
	f.Fuzz(func(t *testing.T, ae, pd, pdx string) {
		h := http.Header{"Accept-Encoding": {ae}, HeaderPeerDist: {pd}, HeaderPeerDistEx: {pdx}}
		n := negotiate(h)
		if n.peerDist && (n.missingData || (n.version != version10 && n.version != version11)) {
			t.Fatalf("negotiated %+v", n)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=5-", "bytes=0-1,2-3", "bytes=x", "bytes=9223372036854775807-"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, s string, size int64) {
		start, end, ok := parseRange(s, size)
		if ok && (start < 0 || start >= end || end > size) {
			t.Fatalf("parseRange(%q, %d) = [%d, %d)", s, size, start, end)
		}
	})
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"/index.html", "/../x", "/a/../../x", "/a%2f..", "//..", "/.", "/a\\b", "/C:/x", "/a/./b/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, ok := cleanName(p)
		if ok && !filepath.IsLocal(filepath.FromSlash(name)) {
			t.Fatalf("cleanName(%q) = %q, not local", p, name)
		}
	})
}

func FuzzConditionals(f *testing.F) {
	for _, s := range append(headerSeeds(f), `"a"`, `W/"a", "b"`, "*", `"unterminated`, "Fri, 01 Aug 2008 01:02:03 GMT") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		for _, h := range []string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
			r.Header.Set(h, v)
		}
		switch checkPreconditions(r, `"a"`, time.Unix(0, 0)) {
		case 0, http.StatusNotModified, http.StatusPreconditionFailed:
		default:
			t.Fatal("unexpected status")
		}
		ifRangeAllows(r, `"a"`, time.Unix(0, 0))
	})
}
