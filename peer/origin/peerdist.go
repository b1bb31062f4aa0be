package origin

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MS-PCCRTP header names and the content-coding token.
const (
	// HeaderPeerDist carries the PeerDist parameters (Version, ContentLength,
	// MissingDataRequest).
	HeaderPeerDist = "X-P2P-PeerDist"
	// HeaderPeerDistEx carries the extended parameters (MinContentInformation,
	// MaxContentInformation, MakeHashRequest, HashRequest).
	HeaderPeerDistEx = "X-P2P-PeerDistEx"
	// EncodingPeerDist is the content-coding token, compared case-insensitively.
	EncodingPeerDist = "peerdist"
)

// protoVersion is a "major.minor" version as MS-PCCRTP writes it; major and
// minor compare as separate integers (1.23 > 1.3).
type protoVersion struct{ major, minor uint16 }

var (
	version10 = protoVersion{1, 0}
	version11 = protoVersion{1, 1}
	version20 = protoVersion{2, 0}
)

func (v protoVersion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

func (v protoVersion) less(o protoVersion) bool {
	return v.major < o.major || (v.major == o.major && v.minor < o.minor)
}

// parseVersion parses "major.minor" (decimal, each at most 65535).
func parseVersion(s string) (protoVersion, bool) {
	major, minor, ok := strings.Cut(s, ".")
	if !ok {
		return protoVersion{}, false
	}
	a, err1 := strconv.ParseUint(major, 10, 16)
	b, err2 := strconv.ParseUint(minor, 10, 16)
	if err1 != nil || err2 != nil {
		return protoVersion{}, false
	}
	return protoVersion{uint16(a), uint16(b)}, true
}

// parseParams splits the comma-separated name=value list of one or more
// X-P2P-PeerDist(Ex) header lines. Names are lower-cased; a later duplicate
// wins. Elements without "=" are kept with an empty value.
func parseParams(lines []string) map[string]string {
	p := map[string]string{}
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(elem), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "" {
				p[name] = strings.TrimSpace(val)
			}
		}
	}
	return p
}

// acceptsPeerDist reports whether the Accept-Encoding lines list the
// peerdist coding with a non-zero quality.
func acceptsPeerDist(lines []string) bool {
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			coding, params, _ := strings.Cut(elem, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), EncodingPeerDist) {
				continue
			}
			if q, ok := qValue(params); ok && q == 0 {
				continue
			}
			return true
		}
	}
	return false
}

// qValue returns the q parameter of an Accept-Encoding element's
// parameters, if there is a well-formed one.
func qValue(params string) (float64, bool) {
	for p := range strings.SplitSeq(params, ";") {
		name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(name), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil || q < 0 || q > 1 {
				return 0, false
			}
			return q, true
		}
	}
	return 0, false
}

// negotiation is what a request asks of the origin.
type negotiation struct {
	// peerDist is true when the answer may be PeerDist-encoded v1 content
	// information.
	peerDist bool
	// version is the X-P2P-PeerDist Version to answer with (1.0 or 1.1).
	version protoVersion
	// missingData marks a MissingDataRequest retry (served as plain data).
	missingData bool
}

// negotiate decides from the request headers whether to answer with v1
// content information (MS-PCCRTP §3.2.5.1). It needs peerdist in
// Accept-Encoding and an X-P2P-PeerDist Version of at least 1.0; a
// MissingDataRequest is never answered with content information. When
// X-P2P-PeerDistEx gives MinContentInformation/MaxContentInformation, both
// must be defined versions (1.0 or 2.0) and 1.0 must lie between them: this
// server generates v1 only, so a v2-only client gets the plain file.
func negotiate(h http.Header) negotiation {
	var n negotiation
	pd := parseParams(h.Values(HeaderPeerDist))
	n.missingData = strings.EqualFold(pd["missingdatarequest"], "true")
	cv, ok := parseVersion(pd["version"])
	if !ok || n.missingData || cv.less(version10) || !acceptsPeerDist(h.Values("Accept-Encoding")) {
		return n
	}
	n.version = version10
	if !cv.less(version11) {
		n.version = version11
	}
	if ex := h.Values(HeaderPeerDistEx); len(ex) > 0 {
		p := parseParams(ex)
		minS, hasMin := p["mincontentinformation"]
		maxS, hasMax := p["maxcontentinformation"]
		if hasMin || hasMax {
			lo, ok1 := parseVersion(minS)
			hi, ok2 := parseVersion(maxS)
			if !ok1 || !ok2 || !definedCIVersion(lo) || !definedCIVersion(hi) || hi.less(lo) || version10.less(lo) {
				return n
			}
		}
	}
	n.peerDist = true
	return n
}

// definedCIVersion reports whether v is a content information version
// MS-PCCRTP §2.2 defines.
func definedCIVersion(v protoVersion) bool { return v == version10 || v == version20 }

// peerDistHeader formats the response's X-P2P-PeerDist value.
func peerDistHeader(v protoVersion, contentLength int64) string {
	return "Version=" + v.String() + ", ContentLength=" + strconv.FormatInt(contentLength, 10)
}

// parseRange parses a Range header holding exactly one satisfiable byte
// range of a size-byte representation and returns it as [start, end). It
// reports false for anything else (several ranges, other units, bad
// syntax, unsatisfiable), which the caller leaves to http.ServeContent.
func parseRange(s string, size int64) (start, end int64, ok bool) {
	unit, spec, found := strings.Cut(s, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix range: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 || size <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false
	}
	if last == "" {
		return a, size, true
	}
	b, err := strconv.ParseInt(last, 10, 64)
	if err != nil || b < a {
		return 0, 0, false
	}
	return a, min(b+1, size), true
}

// scanETag returns the first entity tag at the start of s (after leading
// spaces and commas), whether it is weak, and the rest of s. ok is false
// when s holds no well-formed tag.
func scanETag(s string) (tag string, weak bool, rest string, ok bool) {
	s = strings.TrimLeft(s, " \t,")
	if strings.HasPrefix(s, "W/") {
		weak, s = true, s[2:]
	}
	if len(s) < 2 || s[0] != '"' {
		return "", false, "", false
	}
	i := strings.IndexByte(s[1:], '"')
	if i < 0 {
		return "", false, "", false
	}
	return s[:i+2], weak, s[i+2:], true
}

// etagListMatch reports whether the If-Match / If-None-Match value list
// matches etag ("*" matches any); weak compares ignoring weakness.
func etagListMatch(list, etag string, weak bool) bool {
	if strings.TrimSpace(list) == "*" {
		return true
	}
	for rest := list; strings.TrimSpace(rest) != ""; {
		tag, isWeak, r, ok := scanETag(rest)
		if !ok {
			return false
		}
		if tag == etag && (weak || !isWeak) {
			return true
		}
		rest = r
	}
	return false
}

// checkPreconditions evaluates the conditional headers of a GET for a
// representation with etag and modtime (RFC 9110 §13.2.2) and returns
// 304 or 412 when the request must not be answered with the content, else 0.
func checkPreconditions(r *http.Request, etag string, modtime time.Time) int {
	modtime = modtime.Truncate(time.Second)
	if im := r.Header.Get("If-Match"); im != "" {
		if !etagListMatch(im, etag, false) {
			return http.StatusPreconditionFailed
		}
	} else if ius, err := http.ParseTime(r.Header.Get("If-Unmodified-Since")); err == nil && modtime.After(ius) {
		return http.StatusPreconditionFailed
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if etagListMatch(inm, etag, true) {
			return http.StatusNotModified
		}
	} else if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !modtime.After(ims) {
		return http.StatusNotModified
	}
	return 0
}

// ifRangeAllows reports whether a Range header may be honoured: no
// If-Range, or one that matches the current etag (strongly) or modtime.
func ifRangeAllows(r *http.Request, etag string, modtime time.Time) bool {
	ir := strings.TrimSpace(r.Header.Get("If-Range"))
	if ir == "" {
		return true
	}
	if tag, weak, rest, ok := scanETag(ir); ok {
		return !weak && tag == etag && strings.TrimSpace(rest) == ""
	}
	t, err := http.ParseTime(ir)
	return err == nil && t.Equal(modtime.Truncate(time.Second))
}
