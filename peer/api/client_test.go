package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/loopback"
)

// serve starts a test agent answering with h.
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(strings.TrimPrefix(srv.URL, "http://"), WithToken("secret"))
}

func TestClientErrors(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) }) // runs before the servers' Close
	jsonErr := func(status int, msg string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(ErrorResponse{Error: msg})
		}
	}
	tests := []struct {
		name     string
		client   func(t *testing.T) *Client
		timeout  time.Duration // of the call's context; 0: none
		noAgent  bool
		timedOut bool
		status   int    // of the *Error; 0: not an *Error
		message  string // of the *Error, or in the error text
	}{
		{name: "refused", client: func(t *testing.T) *Client { return New(loopback.ClosedAddr(t)) }, noAgent: true,
			message: "no redleader agent is running at 127.0.0.1:"},
		{name: "500 JSON", client: func(t *testing.T) *Client { return serve(t, jsonErr(500, "disk on fire")) },
			status: 500, message: "disk on fire"},
		{name: "500 plain", client: func(t *testing.T) *Client {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "<html>oops</html>", 500) })
		}, status: 500, message: "Internal Server Error"},
		{name: "503 JSON", client: func(t *testing.T) *Client { return serve(t, jsonErr(503, "election not running")) },
			status: 503, message: "election not running"},
		{name: "401 JSON", client: func(t *testing.T) *Client {
			return serve(t, jsonErr(401, "missing or wrong API token (the CLI reads it from the data dir)"))
		}, status: 401, message: "missing or wrong API token (the CLI reads it from the data dir)"},
		{name: "401 plain", client: func(t *testing.T) *Client {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(401) })
		}, status: 401, message: "missing or wrong API token"},
		{name: "odd status", client: func(t *testing.T) *Client {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(599) })
		}, status: 599, message: "HTTP 599"},
		{name: "context timeout", client: func(t *testing.T) *Client {
			return serve(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-block:
				case <-r.Context().Done():
				}
			})
		}, timeout: 100 * time.Millisecond, timedOut: true, message: "timed out"},
		{name: "http client timeout", client: func(t *testing.T) *Client {
			c := serve(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-block:
				case <-r.Context().Done():
				}
			})
			return New(c.Addr(), WithHTTPClient(&http.Client{Timeout: 100 * time.Millisecond}))
		}, timedOut: true, message: "timed out"},
		{name: "bad JSON", client: func(t *testing.T) *Client {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"node": `) })
		}, message: "bad JSON answer"},
		{name: "too large", client: func(t *testing.T) *Client {
			c := serve(t, func(w http.ResponseWriter, _ *http.Request) {
				io.WriteString(w, `{"node": "`+strings.Repeat("x", 200)+`"}`)
			})
			c.maxBody = 100
			return c
		}, message: "answer larger than 100 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			_, err := tt.client(t).Status(ctx)
			if err == nil {
				t.Fatal("no error")
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if got := errors.Is(err, ErrNoAgent); got != tt.noAgent {
				t.Errorf("errors.Is(ErrNoAgent) = %v: %v", got, err)
			}
			if got := errors.Is(err, ErrTimeout); got != tt.timedOut {
				t.Errorf("errors.Is(ErrTimeout) = %v: %v", got, err)
			}
			var ae *Error
			if got := errors.As(err, &ae); got != (tt.status != 0) {
				t.Fatalf("errors.As(*Error) = %v: %v", got, err)
			}
			if ae != nil && (ae.Status != tt.status || ae.Message != tt.message) {
				t.Errorf("*Error = %+v, want status %d message %q", *ae, tt.status, tt.message)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q lacks %q", err, tt.message)
			}
		})
	}
}

// TestClientRequests checks what each typed method sends and decodes.
func TestClientRequests(t *testing.T) {
	type seen struct {
		method, path, query, auth, ctype string
		body                             map[string]any
	}
	var got seen
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = seen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
			ctype: r.Header.Get("Content-Type")}
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			_ = json.Unmarshal(b, &got.body)
		}
		switch r.URL.Path {
		case PathStatus:
			io.WriteString(w, `{"node": "n1", "members": {"alive": 3}, "red_leader": {"node": "n2", "epoch": 4}}`)
		case PathMembers:
			io.WriteString(w, `[{"node": "n1", "self": true}, {"node": "n2", "status": "dead"}]`)
		case PathEvents:
			io.WriteString(w, `[{"seq": 7, "kind": "appoint"}]`)
		case PathPolicy:
			io.WriteString(w, `{"version": 3, "peer_rate": "1Mbit"}`)
		case PathNLM:
			io.WriteString(w, `{"node": "n2-full-id", "not_leader_material": true}`)
		case PathProbe:
			io.WriteString(w, `{"segment": "AB", "matches": [{"peer": "10.0.0.2:7381", "blocks": 8, "full": true}]}`)
		case PathMetrics:
			io.WriteString(w, "redleader_up 1\n")
		default:
			w.WriteHeader(404)
		}
	})
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() (any, error)
		want  seen
		check func(any) bool
	}{
		{"status", func() (any, error) { return c.Status(ctx) },
			seen{method: "GET", path: PathStatus},
			func(v any) bool {
				s := v.(StatusResponse)
				return s.Node == "n1" && s.Members.Alive == 3 && s.RedLeader != nil && s.RedLeader.Epoch == 4
			}},
		{"members", func() (any, error) { return c.Members(ctx) },
			seen{method: "GET", path: PathMembers},
			func(v any) bool { m := v.([]MemberInfo); return len(m) == 2 && m[0].Self && m[1].Status == "dead" }},
		{"events", func() (any, error) { return c.Events(ctx) },
			seen{method: "GET", path: PathEvents},
			func(v any) bool { e := v.([]EventInfo); return len(e) == 1 && e[0].Seq == 7 && e[0].Kind == "appoint" }},
		{"policy", func() (any, error) { return c.Policy(ctx) },
			seen{method: "GET", path: PathPolicy},
			func(v any) bool { return v.(PolicyInfo) == PolicyInfo{Version: 3, PeerRate: "1Mbit"} }},
		{"set policy", func() (any, error) { return c.SetPolicy(ctx, PolicyInfo{LeaderRate: "20Mbit"}) },
			seen{method: "PUT", path: PathPolicy, ctype: "application/json", body: map[string]any{"leader_rate": "20Mbit"}},
			func(v any) bool { return v.(PolicyInfo).Version == 3 }},
		{"nlm", func() (any, error) { return c.NLM(ctx, NLMRequest{Node: "n2", On: true, Reason: "r"}) },
			seen{method: "POST", path: PathNLM, ctype: "application/json",
				body: map[string]any{"node": "n2", "on": true, "reason": "r"}},
			func(v any) bool { return v.(NLMResponse) == NLMResponse{Node: "n2-full-id", NotLeaderMaterial: true} }},
		{"probe", func() (any, error) { return c.Probe(ctx, "AB", 8) },
			seen{method: "GET", path: PathProbe, query: "blocks=8&segment=AB"},
			func(v any) bool { p := v.(ProbeResponse); return len(p.Matches) == 1 && p.Matches[0].Full }},
		{"probe any blocks", func() (any, error) { return c.Probe(ctx, "AB", 0) },
			seen{method: "GET", path: PathProbe, query: "segment=AB"},
			func(v any) bool { return v.(ProbeResponse).Segment == "AB" }},
		{"metrics", func() (any, error) { return c.Metrics(ctx) },
			seen{method: "GET", path: PathMetrics},
			func(v any) bool { return string(v.([]byte)) == "redleader_up 1\n" }},
		{"raw body", func() (any, error) {
			return nil, c.Do(ctx, "POST", "/v1/other", strings.NewReader("bytes"), nil)
		}, seen{method: "POST", path: "/v1/other", ctype: "application/octet-stream"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = seen{}
			v, err := tt.call()
			if tt.want.path == "/v1/other" {
				var ae *Error
				if !errors.As(err, &ae) || ae.Status != 404 || ae.Message != "Not Found" {
					t.Fatalf("err = %v, want a 404 *Error", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			tt.want.auth = "Bearer secret"
			if got.method != tt.want.method || got.path != tt.want.path || got.query != tt.want.query ||
				got.auth != tt.want.auth || got.ctype != tt.want.ctype {
				t.Errorf("request %+v, want %+v", got, tt.want)
			}
			if tt.want.body != nil {
				b1, _ := json.Marshal(got.body)
				b2, _ := json.Marshal(tt.want.body)
				if string(b1) != string(b2) {
					t.Errorf("body %s, want %s", b1, b2)
				}
			}
			if tt.check != nil && !tt.check(v) {
				t.Errorf("decoded %+v", v)
			}
		})
	}
}

// TestClientNoToken: without WithToken no Authorization header is sent.
func TestClientNoToken(t *testing.T) {
	auth := "unset"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		io.WriteString(w, "{}")
	}))
	defer srv.Close()
	c := New(strings.TrimPrefix(srv.URL, "http://"))
	if _, err := c.Policy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		t.Errorf("Authorization %q sent without a token", auth)
	}
}
