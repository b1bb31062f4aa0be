package fetch

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Key is the content key of a plain origin's content: the resource (the
// URL without query, fragment or user info) and the version the origin
// vouches for (strong validator and length). Two machines whose URLs differ
// only in the query (signed URLs) get the same Key.
//
// Its canonical form, String, is
//
//	<resource> <validator> <length>
//
// with resource = scheme://host[:port]/path (scheme and host lower-case,
// the scheme's default port dropped, the path as sent, "/" when empty);
// validator = `etag:"…"` (the strong ETag with its quotes), else
// `lm:<unix seconds>` (Last-Modified), else `<algo>:<hex>` (a whole-content
// digest the origin sent: sha-256, sha-512, md5); length in decimal bytes.
// None of the three fields contains a space. ID is the hex SHA-256 of
// "redleader content key v1\n" followed by String.
type Key struct {
	// Resource is scheme://host[:port]/path.
	Resource string
	// Validator is the strong validator, "" when the origin gave none.
	Validator string
	// Length is the content length, -1 when unknown.
	Length int64
}

// Valid reports whether k names one version of the content: a validator
// and a known length. Content without a valid Key is downloaded but not
// shared under a key (no catalog entry, no demand by key).
func (k Key) Valid() bool { return k.Resource != "" && k.Validator != "" && k.Length >= 0 }

// String returns the canonical form.
func (k Key) String() string {
	return k.Resource + " " + k.Validator + " " + strconv.FormatInt(k.Length, 10)
}

// Sum returns the SHA-256 of the versioned canonical form.
func (k Key) Sum() [sha256.Size]byte {
	return sha256.Sum256([]byte("redleader content key v1\n" + k.String()))
}

// ID returns Sum in lower-case hex.
func (k Key) ID() string {
	s := k.Sum()
	return hex.EncodeToString(s[:])
}

// resourceOf returns the Key resource of u.
func resourceOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port := u.Port(); port != "" && !(scheme == "http" && port == "80" || scheme == "https" && port == "443") {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// RangeSupport is what is known of an origin's handling of Range requests
// for one Identity.
type RangeSupport int32

// Range support states.
const (
	// RangesUnknown: no answer to a Range request seen yet; the next
	// request tries one.
	RangesUnknown RangeSupport = iota
	// RangesHonoured: the origin answered a Range request with 206.
	RangesHonoured
	// RangesIgnored: the origin answered a Range request with the whole
	// content (200) or advertised "Accept-Ranges: none"; the content is
	// read as one stream.
	RangesIgnored
)

// String names the state.
func (r RangeSupport) String() string {
	switch r {
	case RangesHonoured:
		return "honoured"
	case RangesIgnored:
		return "ignored"
	default:
		return "unknown"
	}
}

// Identity is what Identify learned about a URL: the version of the
// content it names and how to fetch it. Use it by pointer: it records, once,
// whether the origin honours Range. It is safe for concurrent use; its
// exported fields must not be changed after Identify.
type Identity struct {
	// Key is the content key (see Key); Key.Valid is false when the origin
	// gave no validator or no length.
	Key Key
	// Length is the content length in bytes, -1 when unknown.
	Length int64
	// ETag is the origin's strong entity tag with its quotes, "" when it
	// sent none or a weak one (W/ tags do not identify bytes).
	ETag string
	// LastModified is the origin's Last-Modified, zero when absent.
	LastModified time.Time
	// AcceptRanges reports "Accept-Ranges: bytes" (advertised, not proven:
	// see Ranges).
	AcceptRanges bool
	// Info is the MS-PCCRTP content information of the whole content (v1),
	// nil from a plain origin: its segment IDs are known up front.
	Info *content.Info
	// Anchor is the best whole-content digest the origin sent, nil if none.
	Anchor *Anchor
	// Credentialed reports that the requests carry credentials
	// (Authorization or Cookie headers, or user info in the URL): the job
	// must not catalogue or demand the content unless it says --share.
	Credentialed bool

	url    *url.URL
	header http.Header
	ranges atomic.Int32 // RangeSupport
}

// URL returns the URL as it is requested, query included; print Redacted
// instead.
func (id *Identity) URL() string { return id.url.String() }

// Redacted returns the URL without query or user info, for logs and
// messages.
func (id *Identity) Redacted() string { return redact(id.url) }

// Ranges returns what is known of the origin's Range support.
func (id *Identity) Ranges() RangeSupport { return RangeSupport(id.ranges.Load()) }

// validator returns the strong validator for Key: ETag, else
// Last-Modified, else a digest.
func (id *Identity) validator() string {
	switch {
	case id.ETag != "":
		return "etag:" + id.ETag
	case !id.LastModified.IsZero():
		return "lm:" + strconv.FormatInt(id.LastModified.Unix(), 10)
	case id.Anchor != nil:
		return string(id.Anchor.Algo) + ":" + hex.EncodeToString(id.Anchor.Sum)
	}
	return ""
}

// parseETag parses one entity tag: `"…"` or `W/"…"`, the opaque part made
// of RFC 9110 etagc characters (no spaces, quotes or controls). It returns
// the tag with its quotes.
func parseETag(v string) (tag string, strong bool, ok bool) {
	v = strings.TrimSpace(v)
	strong = true
	if strings.HasPrefix(v, "W/") {
		v, strong = v[2:], false
	}
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false, false
	}
	for i := 1; i < len(v)-1; i++ {
		if c := v[i]; c != 0x21 && (c < 0x23 || c == 0x7f) {
			return "", false, false
		}
	}
	return v, strong, true
}

// parseAcceptRanges reports whether the Accept-Ranges lines list "bytes"
// and whether they say "none".
func parseAcceptRanges(lines []string) (byteRanges, none bool) {
	for _, line := range lines {
		for tok := range strings.SplitSeq(line, ",") {
			switch strings.ToLower(strings.TrimSpace(tok)) {
			case "bytes":
				byteRanges = true
			case "none":
				none = true
			}
		}
	}
	return byteRanges, none && !byteRanges
}

// parseContentRange parses "bytes first-last/total" (total may be "*",
// returned as -1). It fails on "bytes */total" (no range) and on anything
// where first > last or last ≥ total.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	unit, spec, found := strings.Cut(strings.TrimSpace(v), " ")
	if !found || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(strings.TrimSpace(spec), "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if first, err = parseDecimal(a); err != nil {
		return 0, 0, 0, false
	}
	if last, err = parseDecimal(b); err != nil || last < first {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = parseDecimal(tot); err != nil || last >= total {
			return 0, 0, 0, false
		}
	}
	return first, last, total, true
}

// parseDecimal parses a non-negative decimal made of digits only.
func parseDecimal(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a decimal: %q", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

// parseLength returns the value of a single Content-Length line, -1 if
// absent or malformed.
func parseLength(h http.Header) int64 {
	v := h.Values("Content-Length")
	if len(v) != 1 {
		return -1
	}
	n, err := parseDecimal(strings.TrimSpace(v[0]))
	if err != nil {
		return -1
	}
	return n
}

// parseParams splits the comma-separated name=value list of
// X-P2P-PeerDist lines; names are lower-cased.
func parseParams(lines []string) map[string]string {
	p := map[string]string{}
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(elem), "=")
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" {
				p[name] = strings.TrimSpace(val)
			}
		}
	}
	return p
}

// hasToken reports whether the comma-separated lines hold tok
// (case-insensitive).
func hasToken(lines []string, tok string) bool {
	for _, line := range lines {
		for t := range strings.SplitSeq(line, ",") {
			t, _, _ = strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}

// identityCoded reports whether an answer's body is not content-coded.
func identityCoded(h http.Header) bool {
	for _, line := range h.Values("Content-Encoding") {
		for t := range strings.SplitSeq(line, ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "identity") {
				return false
			}
		}
	}
	return true
}

// version is the content version an answer's headers describe.
type version struct {
	etag       string    // strong ETag, "" if none
	weakETag   bool      // the answer had an ETag, but a weak one
	modified   time.Time // Last-Modified, zero if none
	length     int64     // content length, -1 if unknown
	ranges     bool      // Accept-Ranges: bytes
	rangesNone bool      // Accept-Ranges: none
	anchor     *Anchor   // the best digest of the whole content, nil if none
}

// versionOf reads the validators, digests and Accept-Ranges of a plain
// (identity-coded) answer; length is the content length the caller derived
// from it, whole says whether the body is the whole content (Content-MD5
// describes the body). Conflicting digests leave anchor nil.
func versionOf(h http.Header, length int64, whole bool) version {
	v := version{length: length}
	v.anchor, _ = anchorFrom(h, whole)
	if vals := h.Values("ETag"); len(vals) == 1 {
		if tag, strong, ok := parseETag(vals[0]); ok && strong {
			v.etag = tag
		} else if ok {
			v.weakETag = true
		}
	}
	if lm := h.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			v.modified = t.UTC()
		}
	}
	v.ranges, v.rangesNone = parseAcceptRanges(h.Values("Accept-Ranges"))
	return v
}

// check compares an answer's version with the identity's: a validator the
// answer carries must be the identified one, and so must a length it
// states. It returns a description of the difference, "" when none.
func (v version) check(id *Identity) string {
	switch {
	case id.ETag != "" && (v.etag != "" || v.weakETag) && v.etag != id.ETag:
		return fmt.Sprintf("ETag %s, identified %s", orNone(v.etag), id.ETag)
	case !id.LastModified.IsZero() && !v.modified.IsZero() && !v.modified.Equal(id.LastModified):
		return fmt.Sprintf("Last-Modified %s, identified %s",
			v.modified.Format(http.TimeFormat), id.LastModified.Format(http.TimeFormat))
	case id.Length >= 0 && v.length >= 0 && v.length != id.Length:
		return fmt.Sprintf("length %d, identified %d", v.length, id.Length)
	case id.Anchor != nil && v.anchor != nil && v.anchor.Algo == id.Anchor.Algo && !bytes.Equal(v.anchor.Sum, id.Anchor.Sum):
		return fmt.Sprintf("%s digest %x, identified %x", v.anchor.Algo, v.anchor.Sum, id.Anchor.Sum)
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(weak)"
	}
	return s
}
