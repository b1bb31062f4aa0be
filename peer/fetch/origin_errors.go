package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/redleader-p2p/redleader/internal/connrefused"
)

// Sentinel errors of origin access. Each is wrapped with the request
// ("GET https://host/path: ...") and the detail into one line a CLI can
// print as it is.
var (
	// ErrNotFound means the origin answered 404 or 410.
	ErrNotFound = errors.New("origin has no such file")
	// ErrDenied means the origin answered 401 or 403.
	ErrDenied = errors.New("origin refused access")
	// ErrStatus means the origin answered another unexpected HTTP status.
	ErrStatus = errors.New("origin answered with an error status")
	// ErrRefused means the origin (or the proxy) refused the connection.
	ErrRefused = errors.New("origin refused the connection")
	// ErrTLS means the TLS handshake with the origin failed (untrusted or
	// wrong certificate, protocol error).
	ErrTLS = errors.New("TLS handshake with the origin failed")
	// ErrProxy means the outbound proxy could not be reached or would not
	// connect to the origin.
	ErrProxy = errors.New("outbound proxy failed")
	// ErrUnreachable means the origin could not be reached (name
	// resolution, timeout, reset) for another reason.
	ErrUnreachable = errors.New("cannot reach the origin")
	// ErrStalled means the origin sent nothing for Options.StallTimeout.
	ErrStalled = errors.New("origin stopped sending")
	// ErrChanged means the origin's file is not the version identified
	// (its validator or length changed, e.g. mid-download).
	ErrChanged = errors.New("origin's file changed (validator mismatch)")
	// ErrTooShort means the origin sent fewer bytes than it advertised.
	ErrTooShort = errors.New("origin sent fewer bytes than it advertised")
	// ErrTooLong means the origin sent more bytes than it advertised.
	ErrTooLong = errors.New("origin sent more bytes than it advertised")
	// ErrBadResponse means the origin's answer does not fit the request
	// (wrong Content-Range, an encoded body, a malformed header).
	ErrBadResponse = errors.New("origin sent a malformed answer")
	// ErrDigestConflict means the origin's digest headers disagree.
	ErrDigestConflict = errors.New("origin sent conflicting digests")
	// ErrDigestMismatch means content does not match the digest the origin
	// vouched for.
	ErrDigestMismatch = errors.New("content does not match the origin's digest")
	// ErrURL means a URL is not an absolute http or https URL.
	ErrURL = errors.New("not an http or https URL")
	// ErrProxyURL means Options.Proxy is not a usable proxy URL.
	ErrProxyURL = errors.New("bad outbound proxy URL")
	// ErrBadRange means a caller asked for a range outside the content.
	ErrBadRange = errors.New("range outside the content")
	// ErrDemandURL means a demanded URL is not one the Red Leader may
	// fetch (not http/https, no host, user info).
	ErrDemandURL = errors.New("demand names a URL the Red Leader may not fetch")
	// ErrDemandAddr means a demanded URL's host is or resolves to an
	// address the Red Leader may not fetch from.
	ErrDemandAddr = errors.New("demand names an address the Red Leader may not fetch from")
)

// redact returns u as scheme://host/path for errors and logs: no user info
// and no query (signed URLs carry secrets there); "?…" marks a dropped
// query.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	s := r.String()
	if u.RawQuery != "" || u.ForceQuery {
		s += "?…"
	}
	return s
}

// statusErr returns the error for an answer with an unexpected status. The
// text is ours (http.StatusText), never the origin's reason phrase.
func statusErr(op string, u *url.URL, code int) error {
	cause := ErrStatus
	switch code {
	case http.StatusNotFound, http.StatusGone:
		cause = ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		cause = ErrDenied
	}
	return fmt.Errorf("%s %s: %w (HTTP %d %s)", op, redact(u), cause, code, http.StatusText(code))
}

// requestErr classifies err, a failed round trip or body read, under one
// of the sentinels and wraps it with the request. The *url.Error layer is
// removed (its text holds the whole URL); a cancelled ctx stays ctx.Err().
func requestErr(ctx context.Context, op string, u *url.URL, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s %s: %w", op, redact(u), err)
	}
	cause := classify(err)
	if cause == nil {
		return fmt.Errorf("%s %s: %w", op, redact(u), err)
	}
	return fmt.Errorf("%s %s: %w: %w", op, redact(u), cause, err)
}

// classify returns the sentinel for a transport error, nil when none fits.
func classify(err error) error {
	var (
		op         *net.OpError
		certErr    *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		recordErr  tls.RecordHeaderError
		alertErr   tls.AlertError
		dnsErr     *net.DNSError
	)
	switch {
	case errors.Is(err, errStalled):
		return ErrStalled
	case errors.As(err, &op) && op.Op == "proxyconnect":
		return ErrProxy
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalidErr), errors.As(err, &recordErr), errors.As(err, &alertErr):
		return ErrTLS
	case connrefused.Is(err):
		return ErrRefused
	case errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTooShort
	case errors.As(err, &dnsErr), errors.As(err, &op):
		return ErrUnreachable
	case strings.HasPrefix(err.Error(), "tls: "):
		return ErrTLS
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrUnreachable
	}
	return nil
}

// errStalled is the cause a stalled body read is cancelled with.
var errStalled = errors.New("stall timeout")
