package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestHandler: the files are served under /ui/ with their types and the
// security headers; anything else is a 404.
func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		path   string
		status int
		ctype  string // prefix
		body   string // substring
	}{
		{"/ui/", 200, "text/html", `<script src="app.js" defer></script>`},
		{"/ui/app.js", 200, "text/javascript", "getJSON('/v1/status')"},
		{"/ui/style.css", 200, "text/css", "--red:"},
		{"/ui/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"/ui/index.html", 301, "", ""}, // FileServer's redirect to the directory
		{"/ui/nope.js", 404, "text/plain", ""},
		{"/ui/static/app.js", 404, "text/plain", ""}, // the files are at /ui/, once
	} {
		t.Run(tc.path, func(t *testing.T) {
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %q…", ct, tc.ctype)
			}
			if !strings.Contains(string(b), tc.body) {
				t.Errorf("body lacks %q", tc.body)
			}
			if tc.status == 200 {
				for k, want := range map[string]string{
					"Content-Security-Policy": "default-src 'self';",
					"X-Content-Type-Options":  "nosniff",
					"X-Frame-Options":         "DENY",
					"Referrer-Policy":         "no-referrer",
				} {
					if got := resp.Header.Get(k); !strings.Contains(got, want) {
						t.Errorf("%s = %q, want %q in it", k, got, want)
					}
				}
			}
		})
	}
}

// TestPageSelfContained: the page works offline and under its CSP: every
// asset index.html names is an embedded file named by a relative path;
// no file names another site (the SVG namespace is a name, not a fetch);
// no inline script, style attribute or event handler; the script reads
// the API by absolute paths on the page's own origin.
func TestPageSelfContained(t *testing.T) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(string(index), -1)
	if len(refs) < 3 {
		t.Fatalf("index.html names %d assets, want the script, the style sheet and the icon", len(refs))
	}
	for _, r := range refs {
		ref := r[1]
		if strings.Contains(ref, ":") || strings.HasPrefix(ref, "/") {
			t.Errorf("index.html: %q is not a relative path", ref)
			continue
		}
		if _, err := fs.Stat(sub, ref); err != nil {
			t.Errorf("index.html names %q, not embedded: %v", ref, err)
		}
	}
	inline := regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>|<style|\sstyle=|\son[a-z]+=`)
	if m := inline.FindString(string(index)); m != "" {
		t.Errorf("index.html has inline code the CSP refuses: %q", m)
	}
	urls := regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		for _, u := range urls.FindAllString(string(b), -1) {
			if u != "http://www.w3.org" { // the SVG namespace
				t.Errorf("%s names another site: %q", path, u)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := fs.ReadFile(sub, "app.js")
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`getJSON\('([^']*)'`).FindAllStringSubmatch(string(js), -1)
	if len(calls) < 6 {
		t.Fatalf("app.js reads %d endpoints, want 6", len(calls))
	}
	for _, c := range calls {
		if !strings.HasPrefix(c[1], "/v1/") {
			t.Errorf("app.js reads %q, not a /v1/ endpoint of its own agent", c[1])
		}
	}
	if strings.Contains(string(js), "innerHTML") || strings.Contains(string(js), "Authorization") {
		t.Error("app.js uses innerHTML or sends a token")
	}
}
