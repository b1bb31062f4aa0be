// Package jobs is the agent's queue of downloads: what to fetch (a URL, a
// priority, an optional expected SHA-256, optional extra request headers,
// the share flag), persisted in the data dir so that an agent restart
// resumes it, run several at once by a Runner, with progress, bytes by
// source and a per-segment audit of where every byte came from and, for
// origin bytes, why.
//
// The Manager owns the queue and the job records; a Runner moves the
// bytes: the agent's is the per-segment pipeline of peer/fetch (local
// cache → LAN holders → origin). See DESIGN.md.
package jobs

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/redleader-p2p/redleader/election"
)

// Errors of the Manager and of request validation.
var (
	// ErrBadRequest wraps every reason a Request is refused.
	ErrBadRequest = errors.New("bad job request")
	// ErrNotFound: no job has that ID (or unique ID prefix).
	ErrNotFound = errors.New("no such job")
	// ErrAmbiguous: an ID prefix matches several jobs.
	ErrAmbiguous = errors.New("job ID prefix matches several jobs")
	// ErrNotDone: the job's content is asked for before the job is done.
	ErrNotDone = errors.New("job is not done")
	// ErrTooMany: the queue holds MaxJobs jobs, none of them finished.
	ErrTooMany = errors.New("too many jobs")
	// ErrClosed: the Manager is closed.
	ErrClosed = errors.New("jobs manager closed")
	// ErrSHA256Mismatch: the content does not match the request's SHA256
	// (a Runner's error).
	ErrSHA256Mismatch = errors.New("content does not match the expected SHA-256")
)

// State is where a job stands. queued → running → done | failed |
// cancelled; queued → cancelled. A job running when the agent stops is
// queued again at the next start and resumes.
type State string

// Job states.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateDone      State = "done"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
)

// Finished reports whether s is a final state.
func (s State) Finished() bool {
	return s == StateDone || s == StateFailed || s == StateCancelled
}

// States lists every state, in lifecycle order.
var States = [...]State{StateQueued, StateRunning, StateDone, StateFailed, StateCancelled}

// Source is where a job's bytes came from.
type Source string

// Sources of bytes.
const (
	SourceCache  Source = "cache"  // the agent's own segment cache
	SourcePeer   Source = "peer"   // a LAN peer (MS-PCCRR)
	SourceOrigin Source = "origin" // the origin, over the WAN
)

// Reason says why bytes were taken from the origin: "why did this byte
// cross the WAN".
type Reason string

// Reasons for origin bytes.
const (
	// ReasonRedLeaderFetch: this agent is the subnet's Red Leader and
	// fetches for the subnet (the one WAN copy).
	ReasonRedLeaderFetch Reason = "red_leader_fetch"
	// ReasonNoRedLeader: the subnet had no confirmed Red Leader for longer
	// than an appointment takes.
	ReasonNoRedLeader Reason = "no_red_leader"
	// ReasonFallbackAfterDelay: no verified block of the content came from
	// the Red Leader for wan_fallback_delay.
	ReasonFallbackAfterDelay Reason = "fallback_after_delay"
	// ReasonBadBlockFromPeer: a peer served a bad block and no other
	// holder had it.
	ReasonBadBlockFromPeer Reason = "bad_block_from_peer"
	// ReasonCatalogConflict: the subnet catalog holds conflicting entries
	// for the content: everyone uses the origin.
	ReasonCatalogConflict Reason = "catalog_conflict"
	// ReasonPrivate: the job sends credentials and does not --share, so
	// the subnet is not told about the content.
	ReasonPrivate Reason = "private_content"
	// ReasonStandalone: a non-leader's job downloads from the origin on
	// this machine alone (the subnet demand to the Red Leader is not used
	// for it).
	ReasonStandalone Reason = "standalone"
)

// Reasons lists every reason.
var Reasons = [...]Reason{ReasonRedLeaderFetch, ReasonNoRedLeader, ReasonFallbackAfterDelay,
	ReasonBadBlockFromPeer, ReasonCatalogConflict, ReasonPrivate, ReasonStandalone}

// Valid reports whether r is one of Reasons.
func (r Reason) Valid() bool {
	for _, x := range Reasons {
		if r == x {
			return true
		}
	}
	return false
}

// From says where bytes came from: the source, the peer's address for
// SourcePeer, the reason for SourceOrigin.
type From struct {
	Source Source `json:"source"`
	Peer   string `json:"peer,omitempty"`
	Reason Reason `json:"reason,omitempty"`
}

// check refuses a From that does not say enough.
func (f From) check() error {
	switch f.Source {
	case SourceCache:
	case SourcePeer:
		if f.Peer == "" {
			return errors.New("peer bytes without the peer's address")
		}
	case SourceOrigin:
		if !f.Reason.Valid() {
			return fmt.Errorf("origin bytes with reason %q", f.Reason)
		}
	default:
		return fmt.Errorf("unknown source %q", f.Source)
	}
	return nil
}

// AuditRecord says that Bytes bytes of one segment of the content came
// from one source. A segment filled from several sources (two peers and
// the origin) has one record per source.
type AuditRecord struct {
	// Segment is the segment's index in the content (MS-PCCRC segments of
	// 32 MiB); Offset and Length place it.
	Segment int   `json:"segment"`
	Offset  int64 `json:"offset"`
	Length  int64 `json:"length"`
	From
	Bytes int64     `json:"bytes"`
	Time  time.Time `json:"time"`
}

// Bytes counts a job's bytes by source: every byte received, also those
// received again after a restart or a retry.
type Bytes struct {
	Cache          int64            `json:"cache"`
	Peers          int64            `json:"peers"`
	Origin         int64            `json:"origin"`
	OriginByReason map[Reason]int64 `json:"origin_by_reason,omitempty"`
}

// Add counts n bytes from f (for bytes fetched outside a job: the Red
// Leader's downloads for members' demands).
func (b *Bytes) Add(f From, n int64) { b.add(f, n) }

// Clone returns a copy of b that shares nothing with it.
func (b Bytes) Clone() Bytes { return b.clone() }

func (b *Bytes) add(f From, n int64) {
	switch f.Source {
	case SourceCache:
		b.Cache += n
	case SourcePeer:
		b.Peers += n
	case SourceOrigin:
		b.Origin += n
		if b.OriginByReason == nil {
			b.OriginByReason = map[Reason]int64{}
		}
		b.OriginByReason[f.Reason] += n
	}
}

func (b Bytes) clone() Bytes {
	if b.OriginByReason != nil {
		m := make(map[Reason]int64, len(b.OriginByReason))
		for k, v := range b.OriginByReason {
			m[k] = v
		}
		b.OriginByReason = m
	}
	return b
}

// Request is what a client asks for.
type Request struct {
	// URL is an absolute http or https URL.
	URL string
	// Priority is Low, Normal, High or Foreground (not None).
	Priority election.Priority
	// SHA256 is the expected SHA-256 of the content (64 hex digits), or
	// "": the job fails when the content does not match it.
	SHA256 string
	// Headers are extra request headers ("Name: value") sent to the
	// origin, for example credentials. They are stored in a file only
	// the agent's user can read and never shown on a read endpoint.
	Headers []string
	// Share lets the subnet learn of content fetched with credentials
	// (with the pipeline: catalog and demand); recorded, no effect yet.
	Share bool
}

// Request limits.
const (
	MaxURLLen     = 8 << 10
	MaxHeaders    = 64
	MaxHeaderSize = 16 << 10 // all headers together
)

// forbiddenHeader reports whether a header (canonical name) is one the
// runner sets itself or one about the connection.
func forbiddenHeader(name string) bool {
	switch name {
	case "Host", "Range", "If-Range", "Accept-Encoding", "Content-Length", "Transfer-Encoding", "Connection",
		"Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade", "Expect":
		return true
	}
	return false
}

// Normalize checks r and puts it in canonical form (lower-case digest,
// canonical header names, no URL fragment). Its errors wrap ErrBadRequest
// and never quote a header's value.
func (r *Request) Normalize() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	if len(r.URL) > MaxURLLen {
		return bad("url of %d bytes, at most %d", len(r.URL), MaxURLLen)
	}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("url %q is not an absolute http or https URL", Redact(r.URL))
	}
	u.Fragment, u.RawFragment = "", ""
	r.URL = u.String()
	if r.Priority < election.PriorityLow || r.Priority > election.PriorityForeground {
		return bad("priority %s: want low, normal, high or foreground", r.Priority)
	}
	r.SHA256 = strings.ToLower(strings.TrimSpace(r.SHA256))
	if r.SHA256 != "" && !isHex(r.SHA256, 64) {
		return bad("sha256 must be 64 hex digits")
	}
	if len(r.Headers) > MaxHeaders {
		return bad("%d headers, at most %d", len(r.Headers), MaxHeaders)
	}
	size := 0
	for i, h := range r.Headers {
		name, value, ok := strings.Cut(h, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case !ok || !httpguts.ValidHeaderFieldName(name):
			return bad("header %d is not \"Name: value\"", i+1)
		case !httpguts.ValidHeaderFieldValue(value):
			return bad("header %s: the value holds a character a header may not hold", name)
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if forbiddenHeader(name) {
			return bad("header %s is set by the agent itself", name)
		}
		r.Headers[i] = name + ": " + value
		size += len(r.Headers[i])
	}
	if size > MaxHeaderSize {
		return bad("headers of %d bytes, at most %d", size, MaxHeaderSize)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// HeaderNames returns the names of headers ("Name: value" each).
func HeaderNames(headers []string) []string {
	out := make([]string, 0, len(headers))
	for _, h := range headers {
		name, _, _ := strings.Cut(h, ":")
		out = append(out, strings.TrimSpace(name))
	}
	return out
}

// Redact returns raw without its user info and query, for anything a
// local user may read (signed URLs carry credentials in the query): "?…"
// marks a dropped query.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	s := r.String()
	if u.RawQuery != "" || u.ForceQuery {
		s += "?…"
	}
	return s
}

// Job is what a reader sees of a job. It never holds a header's value nor
// the URL's query or user info.
type Job struct {
	ID string
	// URL is redacted (see Redact).
	URL      string
	Priority election.Priority
	SHA256   string
	Share    bool
	// Headers are the names of the extra request headers.
	Headers []string

	State State
	// Error says in one line why a job failed ("cancelled" for a
	// cancelled one).
	Error                      string
	Created, Started, Finished time.Time
	// Total is the content's length, -1 while unknown; Held the bytes
	// held and verified.
	Total, Held int64
	Bytes       Bytes
	Audit       []AuditRecord
	// ContentSHA256 is the SHA-256 of a done job's content.
	ContentSHA256 string
	// Resumes counts the agent restarts the job resumed after.
	Resumes int
}

// Active reports whether the job is queued or running.
func (j Job) Active() bool { return !j.State.Finished() }
