package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/redleader-p2p/redleader/internal/connrefused"
)

// Endpoint paths of the local API.
const (
	PathStatus  = "/v1/status"
	PathMembers = "/v1/members"
	PathEvents  = "/v1/events"
	PathPolicy  = "/v1/policy"
	PathNLM     = "/v1/nlm"
	PathProbe   = "/v1/probe"
	PathMetrics = "/metrics"
)

// Body limits of the client.
const (
	maxBody      = 32 << 20 // a successful answer (a large pool's members, the event log)
	maxErrorBody = 64 << 10 // an error answer
)

// ErrNoAgent: nothing accepts connections on the API address (connection
// refused, or the dial failed otherwise).
var ErrNoAgent = errors.New("no redleader agent is running")

// ErrTimeout: the agent did not answer before the context's deadline or a
// timeout of the HTTP client.
var ErrTimeout = errors.New("timed out waiting for the agent")

// Error is an error status answered by the agent. Message is the "error"
// field of the JSON ErrorResponse body, or the status text when the body is
// not one (for 401 it says that the token is missing or wrong).
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent answered %d: %s", e.Status, e.Message)
}

// Client calls one agent's local API. It is safe for concurrent use.
type Client struct {
	addr    string
	base    string
	token   string
	hc      *http.Client
	maxBody int64
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token as bearer token with every request (mutating
// endpoints need it; the agent writes it to <data_dir>/api-token, see
// peer.ReadToken).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient makes the Client send its requests with hc, for example
// one that dials inside a network namespace, or one that keeps connections
// alive. The default client dials with a 5 s timeout, never uses a proxy
// and keeps no idle connections.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a Client of the agent whose API listens on addr (host:port,
// as api_addr).
func New(addr string, opts ...Option) *Client {
	c := &Client{addr: addr, base: "http://" + addr, maxBody: maxBody}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: &http.Transport{
			Proxy:             nil, // the local API is never reached through a proxy
			DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableKeepAlives: true, // no idle connection (and its goroutines) outlives a call
		}}
	}
	return c
}

// Addr is the API address the Client calls.
func (c *Client) Addr() string { return c.addr }

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var out StatusResponse
	return out, c.Do(ctx, http.MethodGet, PathStatus, nil, &out)
}

// Members is GET /v1/members.
func (c *Client) Members(ctx context.Context) ([]MemberInfo, error) {
	var out []MemberInfo
	return out, c.Do(ctx, http.MethodGet, PathMembers, nil, &out)
}

// Events is GET /v1/events.
func (c *Client) Events(ctx context.Context) ([]EventInfo, error) {
	var out []EventInfo
	return out, c.Do(ctx, http.MethodGet, PathEvents, nil, &out)
}

// Policy is GET /v1/policy.
func (c *Client) Policy(ctx context.Context) (PolicyInfo, error) {
	var out PolicyInfo
	return out, c.Do(ctx, http.MethodGet, PathPolicy, nil, &out)
}

// SetPolicy is PUT /v1/policy (token): it returns the committed policy.
func (c *Client) SetPolicy(ctx context.Context, p PolicyInfo) (PolicyInfo, error) {
	var out PolicyInfo
	return out, c.Do(ctx, http.MethodPut, PathPolicy, p, &out)
}

// NLM is POST /v1/nlm (token).
func (c *Client) NLM(ctx context.Context, req NLMRequest) (NLMResponse, error) {
	var out NLMResponse
	return out, c.Do(ctx, http.MethodPost, PathNLM, req, &out)
}

// Probe is GET /v1/probe: which LAN peers hold segment (64 hex digits). A
// reply counts as full when it reports at least blocks blocks (0: any).
func (c *Client) Probe(ctx context.Context, segment string, blocks uint32) (ProbeResponse, error) {
	q := url.Values{"segment": {segment}}
	if blocks > 0 {
		q.Set("blocks", strconv.FormatUint(uint64(blocks), 10))
	}
	var out ProbeResponse
	return out, c.Do(ctx, http.MethodGet, PathProbe+"?"+q.Encode(), nil, &out)
}

// Metrics is GET /metrics: the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var out []byte
	return out, c.Do(ctx, http.MethodGet, PathMetrics, nil, &out)
}

// Do calls method path (with any query) and handles the answer. in is the
// request body: nil for none, an io.Reader sent as is
// (application/octet-stream), anything else JSON-encoded. out receives a
// 2xx answer: nil discards it, a *[]byte gets the raw bytes, anything else
// is JSON-decoded into. Errors are ErrNoAgent, ErrTimeout or *Error (see
// errors.Is and errors.As), or say what else went wrong.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	body, ctype, err := encodeBody(in)
	if err != nil {
		return fmt.Errorf("%s %s: encode request: %w", method, path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return c.send(req, out)
}

// send sends req (its body and content type set) with the token and
// handles the answer as Do says: out receives a 2xx answer, errors are
// classified. Every call of the API goes through it.
func (c *Client) send(req *http.Request, out any) error {
	method, path := req.Method, req.URL.RequestURI()
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := readLimited(resp.Body, maxErrorBody) // a cut or failed read still has a status
		return fmt.Errorf("%s %s at %s: %w", method, path, c.addr, newError(resp.StatusCode, b))
	}
	b, err := readLimited(resp.Body, c.maxBody)
	if err != nil {
		return c.transportError(method, path, err)
	}
	switch o := out.(type) {
	case nil:
	case *[]byte:
		*o = b
	default:
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s at %s: bad JSON answer: %w", method, path, c.addr, err)
		}
	}
	return nil
}

func encodeBody(in any) (io.Reader, string, error) {
	switch v := in.(type) {
	case nil:
		return nil, "", nil
	case io.Reader:
		return v, "application/octet-stream", nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, "", err
	}
	return bytes.NewReader(b), "application/json", nil
}

// transportError classifies an error of sending a request or reading its
// answer.
func (c *Client) transportError(method, path string, err error) error {
	var (
		ne  net.Error
		op  *net.OpError
		dns *net.DNSError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %s %s at %s: %w", ErrTimeout, method, path, c.addr, err)
	case connrefused.Is(err),
		errors.As(err, &op) && op.Op == "dial" && !errors.As(err, &dns):
		return fmt.Errorf("%w at %s: %w", ErrNoAgent, c.addr, err)
	}
	return fmt.Errorf("%s %s at %s: %w", method, path, c.addr, err)
}

// newError makes the *Error of an error status and its body.
func newError(status int, body []byte) *Error {
	var e ErrorResponse
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &Error{Status: status, Message: e.Error}
	}
	if status == http.StatusUnauthorized {
		return &Error{Status: status, Message: "missing or wrong API token"}
	}
	msg := http.StatusText(status)
	if msg == "" {
		msg = "HTTP " + strconv.Itoa(status)
	}
	return &Error{Status: status, Message: msg}
}

// readLimited reads r to its end, failing when it holds more than limit
// bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, err
	}
	if int64(len(b)) > limit {
		return b[:limit], fmt.Errorf("answer larger than %d bytes", limit)
	}
	return b, nil
}
