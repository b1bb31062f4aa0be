package fetch

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/redleader-p2p/redleader/peer/content"
)

// MS-PCCRTP header names and content-coding token, as peer/origin speaks
// them.
const (
	headerPeerDist   = "X-P2P-PeerDist"
	headerPeerDistEx = "X-P2P-PeerDistEx"
	encodingPeerDist = "peerdist"
	// peerDistRequest asks for version 1.1 of the protocol and, through
	// PeerDistEx, for v1 content information only (what content.Info
	// generates and MS-PCCRR retrieves).
	peerDistRequest   = "Version=1.1"
	peerDistExRequest = "MinContentInformation=1.0, MaxContentInformation=1.0"
)

// Defaults for zero Options fields.
const (
	// DefaultUserAgent is the User-Agent of origin requests.
	DefaultUserAgent = "redleader"
	// DefaultStallTimeout bounds how long a body read may wait for the
	// origin's next bytes.
	DefaultStallTimeout = time.Minute
	// DefaultHeaderTimeout bounds the wait for an answer's headers (the
	// Origin's own transport only).
	DefaultHeaderTimeout = time.Minute
	// ProxyDirect as Options.Proxy ignores the environment: no proxy.
	ProxyDirect = "direct"
)

// maxContentInfo caps the content information Identify reads (about the
// content information of 128 GiB); larger content is identified as from a
// plain origin.
const maxContentInfo = 64 << 20

// PeerDistMode says when Identify asks an origin for MS-PCCRTP content
// information.
type PeerDistMode int

// PeerDist modes.
const (
	// PeerDistAuto asks when the HEAD answer hints that the origin speaks
	// MS-PCCRTP: Content-Encoding peerdist, an X-P2P-PeerDist header, or
	// X-P2P-PeerDist in Vary (peer/origin sends the last one).
	PeerDistAuto PeerDistMode = iota
	// PeerDistOff never asks.
	PeerDistOff
	// PeerDistAlways always asks. A plain origin then starts sending the
	// file on that GET, which Identify closes after the headers.
	PeerDistAlways
)

// Options configure an Origin.
type Options struct {
	// HTTPClient sends the requests as it is: Proxy, TLSConfig and
	// CheckAddr are then ignored. nil means a client of the Origin's own.
	HTTPClient *http.Client
	// Proxy is the outbound proxy (the origin_proxy config key): "" uses
	// HTTP_PROXY, HTTPS_PROXY and NO_PROXY from the environment (read when
	// the Origin is made; loopback targets are never proxied), ProxyDirect
	// uses none, and a URL (http://, https:// or socks5://host:port) sends
	// every request through that proxy.
	Proxy string
	// TLSConfig is cloned for HTTPS origins; nil means the system roots.
	TLSConfig *tls.Config
	// CheckAddr, if set, is called with every address the Origin's own
	// transport connects to (the origin's, or the proxy's when one is
	// used); an error refuses the connection. The Red Leader sets it to
	// CheckDemandAddr for demanded content, so neither a redirect nor a DNS
	// answer that changed since CheckDemandURL reaches a forbidden address.
	CheckAddr func(netip.Addr) error
	// UserAgent is sent unless a request's own headers set one; ""
	// means DefaultUserAgent.
	UserAgent string
	// PeerDist says when Identify asks for content information.
	PeerDist PeerDistMode
	// StallTimeout bounds each body read; 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	// Pace, if set, wraps the body of every content answer a Reader reads,
	// bytes it skips over included: the agent passes its WAN limiter
	// (shaping.NewReader). Stalls are timed beneath it, so pacing waits
	// are not stalls. ctx ends with the answer.
	Pace func(ctx context.Context, r io.Reader) io.Reader
	// Logger receives the Origin's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Origin makes the requests of the data path to origins. It is safe for
// concurrent use.
type Origin struct {
	client   *http.Client
	own      *http.Transport // nil when Options.HTTPClient was given
	proxy    func(*http.Request) (*url.URL, error)
	ua       string
	peerDist PeerDistMode
	stall    time.Duration
	pace     func(context.Context, io.Reader) io.Reader
	log      *slog.Logger
}

// NewOrigin returns an Origin for opts. It fails only on a bad
// Options.Proxy (ErrProxyURL).
func NewOrigin(opts Options) (*Origin, error) {
	o := &Origin{
		client:   opts.HTTPClient,
		ua:       opts.UserAgent,
		peerDist: opts.PeerDist,
		stall:    opts.StallTimeout,
		pace:     opts.Pace,
		log:      opts.Logger,
	}
	if o.ua == "" {
		o.ua = DefaultUserAgent
	}
	if o.stall <= 0 {
		o.stall = DefaultStallTimeout
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.client != nil {
		return o, nil
	}
	proxy, err := proxyFunc(opts.Proxy)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if check := opts.CheckAddr; check != nil {
		dialer.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("check address %q: %w", address, err)
			}
			return check(ap.Addr().Unmap())
		}
	}
	o.proxy = proxy
	o.own = &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       opts.TLSConfig.Clone(),
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: DefaultHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // bytes are hashed as the origin sends them
	}
	o.client = &http.Client{Transport: o.own}
	return o, nil
}

// proxyFunc returns the transport's Proxy function for Options.Proxy.
func proxyFunc(s string) (func(*http.Request) (*url.URL, error), error) {
	switch s {
	case "":
		env := httpproxy.FromEnvironment().ProxyFunc()
		return func(r *http.Request) (*url.URL, error) { return env(r.URL) }, nil
	case ProxyDirect:
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: want http://, https:// or socks5:// and host:port", ErrProxyURL)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("%w: scheme %q of %s is not http, https or socks5", ErrProxyURL, u.Scheme, u.Redacted())
	}
	return http.ProxyURL(u), nil
}

// Close closes the idle connections of the Origin's own transport.
func (o *Origin) Close() {
	if o.own != nil {
		o.own.CloseIdleConnections()
	}
}

// controlledHeaders are request headers the Origin sets itself; the same
// names in a job's extra headers are dropped.
var controlledHeaders = []string{
	"Accept-Encoding", "Connection", "Content-Length", "Expect", "Host", "If-Match",
	"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive",
	"Proxy-Connection", "Range", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Want-Content-Digest", "Want-Digest", "Want-Repr-Digest", headerPeerDist, headerPeerDistEx,
}

// cleanHeader returns a canonical copy of a job's extra headers without
// the controlled ones.
func cleanHeader(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		k = http.CanonicalHeaderKey(k)
		out[k] = append(out[k], vs...)
	}
	for _, k := range controlledHeaders {
		delete(out, http.CanonicalHeaderKey(k))
	}
	return out
}

// parseURL parses an origin URL: absolute http or https with a host.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot parse it", ErrURL)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%s: %w", redact(u), ErrURL)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// newRequest returns a request for id with the job's headers.
func (o *Origin) newRequest(ctx context.Context, method string, id *Identity) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, id.url.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(id.url), err)
	}
	req.Header = id.header.Clone()
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", o.ua)
	}
	return req, nil
}

// Identify learns what rawURL names, sending header (a job's extra request
// headers; Range, conditionals, Accept-Encoding and hop-by-hop headers in
// it are dropped) with this and every later request for the Identity.
//
// It sends a HEAD (a ranged GET of one byte when the origin refuses HEAD
// with 403, 405 or 501: signed URLs are often signed for GET only) for
// the length, the validators, Accept-Ranges and the digests. When the
// origin speaks MS-PCCRTP (see PeerDistMode) it then GETs the content
// information: that GET's body is the content information itself, not the
// content. No GET of the content is started and thrown away, with two
// bounded exceptions: an origin that answers the content information GET
// with the file (its hashes are not ready: MS-PCCRTP allows it), and one
// that refuses HEAD and ignores Range; Identify closes those bodies after
// the headers.
func (o *Origin) Identify(ctx context.Context, rawURL string, header http.Header) (*Identity, error) {
	return o.IdentifyWith(ctx, rawURL, header, o.peerDist)
}

// IdentifyWith is Identify with this call's PeerDist mode: a non-leader
// that will get the content information from its Red Leader's demand reply
// passes PeerDistOff, so that a subnet of N agents does not download the
// content information N times (about 0.05 % of the content each).
func (o *Origin) IdentifyWith(ctx context.Context, rawURL string, header http.Header, mode PeerDistMode) (*Identity, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	id := &Identity{url: u, header: cleanHeader(header), Length: -1}
	id.Credentialed = u.User != nil || len(id.header.Values("Authorization")) > 0 || len(id.header.Values("Cookie")) > 0
	hint, err := o.probe(ctx, id, mode != PeerDistOff)
	if err != nil {
		return nil, err
	}
	if mode == PeerDistAlways || mode == PeerDistAuto && hint {
		if err := o.contentInfo(ctx, id); err != nil {
			return nil, err
		}
	}
	id.Key = Key{Resource: resourceOf(u), Validator: id.validator(), Length: id.Length}
	return id, nil
}

// peerDistHint reports whether an answer hints that the origin speaks
// MS-PCCRTP.
func peerDistHint(h http.Header) bool {
	return len(h.Values(headerPeerDist)) > 0 || hasToken(h.Values("Content-Encoding"), encodingPeerDist) ||
		hasToken(h.Values("Vary"), headerPeerDist)
}

// askPeerDist sets the headers that ask for v1 content information.
func askPeerDist(h http.Header) {
	h.Set("Accept-Encoding", encodingPeerDist)
	h[headerPeerDist] = []string{peerDistRequest} // spelled as MS-PCCRTP spells it
	h[headerPeerDistEx] = []string{peerDistExRequest}
}

// askDigests asks for the digests that anchor the content (RFC 9530
// Want-Repr-Digest, RFC 3230 Want-Digest).
func askDigests(h http.Header) {
	h.Set("Want-Repr-Digest", "sha-256=10, sha-512=3")
	h.Set("Want-Digest", "SHA-256")
}

// probe sends the HEAD and fills id from its answer. It reports whether
// the answer hints at MS-PCCRTP.
func (o *Origin) probe(ctx context.Context, id *Identity, peerDist bool) (bool, error) {
	req, err := o.newRequest(ctx, http.MethodHead, id)
	if err != nil {
		return false, err
	}
	if peerDist {
		askPeerDist(req.Header)
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	askDigests(req.Header)
	resp, err := o.client.Do(req)
	if err != nil {
		return false, requestErr(ctx, "HEAD", id.url, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		o.log.Debug("origin refused HEAD, probing with a one-byte range", "url", redact(id.url), "status", resp.StatusCode)
		return o.probeRange(ctx, id)
	default:
		return false, statusErr("HEAD", id.url, resp.StatusCode)
	}
	h := resp.Header
	length := int64(-1)
	switch {
	case hasToken(h.Values("Content-Encoding"), encodingPeerDist):
		length = peerDistLength(h)
	case identityCoded(h):
		length = parseLength(h)
	}
	if err := o.adopt(id, h, length, true, identityCoded(h)); err != nil {
		return false, fmt.Errorf("HEAD %s: %w", redact(id.url), err)
	}
	return peerDistHint(h), nil
}

// probeRange is the probe for origins that refuse HEAD: a GET of byte 0.
func (o *Origin) probeRange(ctx context.Context, id *Identity) (bool, error) {
	req, err := o.newRequest(ctx, http.MethodGet, id)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("Range", "bytes=0-0")
	askDigests(req.Header)
	resp, err := o.client.Do(req)
	if err != nil {
		return false, requestErr(ctx, "GET", id.url, err)
	}
	defer resp.Body.Close()
	h := resp.Header
	if !identityCoded(h) {
		return false, fmt.Errorf("GET %s: %w: Content-Encoding %.40q", redact(id.url), ErrBadResponse, h.Get("Content-Encoding"))
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, _, total, ok := parseContentRange(h.Get("Content-Range"))
		if !ok {
			return false, fmt.Errorf("GET %s: %w: Content-Range %.60q", redact(id.url), ErrBadResponse, h.Get("Content-Range"))
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // one byte asked: lets the connection be reused
		if err := o.adopt(id, h, total, false, true); err != nil {
			return false, fmt.Errorf("GET %s: %w", redact(id.url), err)
		}
		id.ranges.Store(int32(RangesHonoured))
	case http.StatusOK:
		o.log.Debug("origin ignored the one-byte range, closing its answer", "url", redact(id.url))
		if err := o.adopt(id, h, parseLength(h), true, true); err != nil {
			return false, fmt.Errorf("GET %s: %w", redact(id.url), err)
		}
		id.ranges.Store(int32(RangesIgnored))
	case http.StatusRequestedRangeNotSatisfiable:
		if strings.TrimSpace(h.Get("Content-Range")) != "bytes */0" {
			return false, statusErr("GET", id.url, resp.StatusCode)
		}
		if err := o.adopt(id, h, 0, false, true); err != nil { // the empty file
			return false, fmt.Errorf("GET %s: %w", redact(id.url), err)
		}
	default:
		return false, statusErr("GET", id.url, resp.StatusCode)
	}
	return peerDistHint(h), nil
}

// adopt sets id's version from an answer's headers: length is the content
// length derived from it, whole says whether its body would be the whole
// content, plain whether it is identity-coded (only then do its digests
// describe the content).
func (o *Origin) adopt(id *Identity, h http.Header, length int64, whole, plain bool) error {
	v := versionOf(h, length, whole)
	if plain {
		a, err := anchorFrom(h, whole)
		if err != nil {
			return err
		}
		id.Anchor = a
	}
	id.ETag, id.LastModified, id.Length, id.AcceptRanges = v.etag, v.modified, v.length, v.ranges
	if v.rangesNone {
		id.ranges.Store(int32(RangesIgnored))
	}
	return nil
}

// peerDistLength returns the ContentLength of an answer's X-P2P-PeerDist,
// -1 when absent or malformed.
func peerDistLength(h http.Header) int64 {
	n, err := parseDecimal(parseParams(h.Values(headerPeerDist))["contentlength"])
	if err != nil {
		return -1
	}
	return n
}

// ciLimit bounds the v1 content information of length bytes of content.
func ciLimit(length int64) int64 {
	if length < 0 {
		return maxContentInfo
	}
	segs := (length + content.SegmentSize - 1) / content.SegmentSize
	blocks := (length+content.BlockSize-1)/content.BlockSize + segs
	return min(1024+segs*128+blocks*content.DigestSize, maxContentInfo)
}

// contentInfo GETs the content information and sets id.Info. An answer
// that is not usable content information (the plain file, a version other
// than v1, a malformed or oversized one) leaves id as a plain origin's,
// with a log line; only transport and status failures are errors.
func (o *Origin) contentInfo(ctx context.Context, id *Identity) error {
	req, err := o.newRequest(ctx, http.MethodGet, id)
	if err != nil {
		return err
	}
	askPeerDist(req.Header)
	resp, err := o.client.Do(req)
	if err != nil {
		return requestErr(ctx, "GET", id.url, err)
	}
	defer resp.Body.Close() // a plain answer is cut here, after its headers
	if resp.StatusCode != http.StatusOK {
		return statusErr("GET", id.url, resp.StatusCode)
	}
	h := resp.Header
	if !hasToken(h.Values("Content-Encoding"), encodingPeerDist) {
		o.log.Debug("origin sent the file instead of content information, closed it", "url", redact(id.url))
		return nil
	}
	warn := func(why string, args ...any) error {
		o.log.Warn("unusable content information, treating the origin as plain",
			append([]any{"url", redact(id.url), "why", why}, args...)...)
		return nil
	}
	pdLength := peerDistLength(h)
	limit := ciLimit(max(pdLength, id.Length))
	if resp.ContentLength > limit {
		return warn("too large", "bytes", resp.ContentLength, "limit", limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return requestErr(ctx, "GET", id.url, err)
	}
	if int64(len(body)) > limit {
		return warn("too large", "limit", limit)
	}
	info, err := content.Parse(body)
	if err != nil {
		return warn("malformed", "err", err)
	}
	start, end := info.Range()
	switch {
	case info.Version != content.V1:
		return warn("not version 1.0", "version", info.Version)
	case start != 0 || int64(end) < 0:
		return warn("not the whole content", "start", start, "end", end)
	case pdLength >= 0 && int64(end) != pdLength:
		return warn("length differs from X-P2P-PeerDist", "ci", end, "header", pdLength)
	}
	v := versionOf(h, int64(end), false)
	if diff := v.check(id); diff != "" {
		// The file changed between HEAD and GET: this answer describes the
		// newer version, and the HEAD's digests the older one.
		o.log.Debug("origin's file changed since HEAD, using the content information's version",
			"url", redact(id.url), "change", diff)
		id.ETag, id.LastModified, id.AcceptRanges, id.Anchor = v.etag, v.modified, v.ranges, nil
	}
	id.Length = int64(end)
	id.Info = info
	return nil
}
