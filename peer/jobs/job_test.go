package jobs

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/election"
)

func TestNormalize(t *testing.T) {
	ok := func() Request {
		return Request{URL: "https://origin.example/a/b.iso?sig=1#frag", Priority: election.PriorityNormal}
	}
	tests := []struct {
		name    string
		edit    func(*Request)
		wantErr string // "" = valid
		check   func(Request) bool
	}{
		{name: "plain", edit: func(*Request) {},
			check: func(r Request) bool { return r.URL == "https://origin.example/a/b.iso?sig=1" }},
		{name: "digest lower-cased", edit: func(r *Request) { r.SHA256 = " " + strings.Repeat("AB", 32) + " " },
			check: func(r Request) bool { return r.SHA256 == strings.Repeat("ab", 32) }},
		{name: "headers canonical", edit: func(r *Request) { r.Headers = []string{"authorization:Bearer x", " x-a-b :  v 1 "} },
			check: func(r Request) bool {
				return slices.Equal(r.Headers, []string{"Authorization: Bearer x", "X-A-B: v 1"})
			}},
		{name: "ftp", edit: func(r *Request) { r.URL = "ftp://origin.example/f" }, wantErr: "not an absolute http or https URL"},
		{name: "relative", edit: func(r *Request) { r.URL = "/f" }, wantErr: "not an absolute http or https URL"},
		{name: "no host", edit: func(r *Request) { r.URL = "http:///f" }, wantErr: "not an absolute"},
		{name: "query not echoed", edit: func(r *Request) { r.URL = "gopher://h/f?token=s3cret" }, wantErr: "gopher://h/f?…"},
		{name: "long URL", edit: func(r *Request) { r.URL = "http://h/" + strings.Repeat("a", MaxURLLen) }, wantErr: "at most"},
		{name: "no priority", edit: func(r *Request) { r.Priority = election.PriorityNone }, wantErr: "priority none"},
		{name: "short digest", edit: func(r *Request) { r.SHA256 = "abc" }, wantErr: "64 hex digits"},
		{name: "not hex", edit: func(r *Request) { r.SHA256 = strings.Repeat("g", 64) }, wantErr: "64 hex digits"},
		{name: "no colon", edit: func(r *Request) { r.Headers = []string{"Authorization Bearer x"} }, wantErr: "header 1 is not"},
		{name: "bad name", edit: func(r *Request) { r.Headers = []string{"X-Ok: 1", "Bad Name: 1"} }, wantErr: "header 2 is not"},
		{name: "CRLF in value", edit: func(r *Request) { r.Headers = []string{"X-A: s3cret\r\nHost: evil"} },
			wantErr: "header X-A: the value holds"},
		{name: "Range", edit: func(r *Request) { r.Headers = []string{"range: bytes=0-"} }, wantErr: "header Range is set by the agent"},
		{name: "Host", edit: func(r *Request) { r.Headers = []string{"Host: other"} }, wantErr: "header Host"},
		{name: "too many", edit: func(r *Request) { r.Headers = slices.Repeat([]string{"X: 1"}, MaxHeaders+1) }, wantErr: "headers, at most"},
		{name: "too big", edit: func(r *Request) { r.Headers = []string{"X: " + strings.Repeat("v", MaxHeaderSize)} },
			wantErr: "bytes, at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok()
			tt.edit(&r)
			err := r.Normalize()
			if tt.wantErr == "" {
				if err != nil || !tt.check(r) {
					t.Fatalf("Normalize = %v, request %+v", err, r)
				}
				return
			}
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrBadRequest with %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error echoes a secret: %v", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://h/p":                    "https://h/p",
		"https://user:pw@h:8443/p?sig=x": "https://h:8443/p?…",
		"http://h/a%2Fb?":                "http://h/a%2Fb?…",
		"http://h/p#frag":                "http://h/p",
		"http://h/%zz":                   "(unparsable URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
