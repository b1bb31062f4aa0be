package peer

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer/api"
)

// Who may call the local API:
//
//   - On loopback (the default), read endpoints and /metrics are open to
//     every local user; mutating endpoints (their handlers call mutating or
//     tokenOK) and /debug/pprof/ need the API token.
//   - With api_allow_remote, every endpoint needs the API token; GET and
//     HEAD /metrics also take the metrics token (api_metrics_token_file),
//     which opens nothing else.
//   - On loopback, a request without the token must be addressed to
//     loopback (Host 127.0.0.1, ::1 or localhost): a web page a local user
//     visits cannot read the open endpoints through a DNS name it points at
//     127.0.0.1 (DNS rebinding), the dashboard's data included.

// errMetricsTokenOnly answers a call made with the metrics token anywhere
// but /metrics.
var errMetricsTokenOnly = errors.New("the metrics token is accepted for GET /metrics only")

// errForeignHost answers a call without the token addressed to a name
// other than loopback's.
var errForeignHost = errors.New("the local API answers calls without the token only when they are addressed to 127.0.0.1, [::1] or localhost")

// loadTokens loads the API token (api_token_file, else the generated
// <data_dir>/api-token, whose mode is repaired when group or others may
// read it) and the metrics token (api_metrics_token_file).
func (a *Agent) loadTokens() error {
	if a.cfg.APITokenFile != "" {
		tok, err := loadDeployedToken("api_token_file", a.cfg.APITokenFile)
		if err != nil {
			return err
		}
		a.token = tok
	} else {
		tok, loose, err := loadOrCreateToken(a.cfg.DataDir)
		if err != nil {
			return err
		}
		if loose != 0 {
			a.log.Warn("the API token file was readable by group or others: its mode is repaired to 0600 "+
				"(delete it and restart the agent for a new token if other users may have read it)",
				"file", TokenPath(a.cfg), "was", fmt.Sprintf("%04o", loose))
		}
		a.token = tok
	}
	if a.cfg.APIMetricsTokenFile != "" {
		tok, err := loadDeployedToken("api_metrics_token_file", a.cfg.APIMetricsTokenFile)
		if err != nil {
			return err
		}
		if tok == a.token {
			return fmt.Errorf("%w: api_metrics_token_file: %s holds the API token itself (a metrics token must open /metrics only)",
				config.ErrInvalid, a.cfg.APIMetricsTokenFile)
		}
		a.metricsToken = tok
	}
	return nil
}

// apiAuth lets through the requests the rules above allow and answers 401
// to the others.
func (a *Agent) apiAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.authorize(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="redleader"`)
			writeError(w, r, http.StatusUnauthorized, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorize returns nil when r may go on to the handlers.
func (a *Agent) authorize(r *http.Request) error {
	tok, hasToken := bearer(r)
	if hasToken && tokenEqual(tok, a.token) {
		return nil
	}
	clean := path.Clean("/" + r.URL.Path)
	if hasToken && a.metricsToken != "" && tokenEqual(tok, a.metricsToken) {
		if clean == api.PathMetrics && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			return nil
		}
		return errMetricsTokenOnly
	}
	if a.cfg.APIAllowRemote || clean == "/debug/pprof" || strings.HasPrefix(clean, "/debug/pprof/") {
		return errUnauthorized
	}
	if !loopbackHost(r.Host) {
		return errForeignHost
	}
	return nil // open on loopback; mutating handlers check the token themselves
}

// loopbackHost reports whether a Host header names loopback: localhost or
// a loopback IP literal, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// tokenEqual compares tokens in constant time.
func tokenEqual(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
