package election

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Sentinel errors of the election package.
var (
	// ErrInvalid: an input or command field is missing or out of range.
	ErrInvalid = errors.New("invalid")
	// ErrMalformed: an entry or record cannot be decoded.
	ErrMalformed = errors.New("malformed entry")
	// ErrUnknownType: an entry or record type this agent does not know and
	// that is not flagged ignorable. The agent is too old for its cluster.
	ErrUnknownType = errors.New("unknown non-ignorable entry type (upgrade this agent)")
	// ErrUnsupportedVersion: a known type in a version this agent cannot read.
	ErrUnsupportedVersion = errors.New("unsupported entry version (upgrade this agent)")
	// ErrStaleEpoch: an appoint, confirm or retire command does not match
	// the current epoch (fencing).
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrNotAppointee: a confirm or retire names another node than the
	// current Red Leader.
	ErrNotAppointee = errors.New("not the current appointee")
	// ErrMarked: the node to appoint carries an active NotLeaderMaterial mark.
	ErrMarked = errors.New("node is marked not leader material")
	// ErrAlreadyInitialized: init for a cluster that already has another
	// cluster ID or secret.
	ErrAlreadyInitialized = errors.New("cluster already initialized")
	// ErrPolicyConflict: a policy change based on an outdated policy version.
	ErrPolicyConflict = errors.New("policy version conflict")
	// ErrBadSnapshot: a snapshot stream is truncated or inconsistent.
	ErrBadSnapshot = errors.New("bad snapshot")
	// ErrAdminRefused: an admin command (policy, admin mark, unmark) in a
	// cluster whose committed admin mode refuses them (an open cluster
	// without allow_open_admin, or one that never recorded its mode).
	ErrAdminRefused = errors.New("admin commands are refused: the cluster has no cluster key " +
		"(set cluster_key on every agent, or allow_open_admin: true on the agents before the cluster is created: " +
		"every LAN host is then an admin)")
)

// errSkip marks an unknown entry type flagged ignorable.
var errSkip = errors.New("unknown ignorable entry type")

// FlagIgnorable is bit 7 of an entry's type byte: an agent that does not
// know the type skips the entry instead of failing.
const FlagIgnorable byte = 0x80

// Size limits of command fields. Commands beyond them are rejected.
const (
	MaxEntrySize   = 64 << 10 // one encoded command
	MaxIDLen       = 128      // request IDs, node IDs, cluster IDs
	MaxReasonLen   = 512      // reasons, in bytes
	SecretSize     = 32       // the subnet content secret
	commandVersion = 1        // the version byte written by this agent
)

// CommandType is the type byte of a log entry (FlagIgnorable included).
type CommandType byte

// Command types. Numbers are part of the wire format: never reuse one.
const (
	CmdInit      CommandType = 0x01 // cluster ID, secret, first policy
	CmdAppoint   CommandType = 0x02 // appoint a Red Leader at epoch+1
	CmdConfirm   CommandType = 0x03 // the appointee confirms
	CmdRetire    CommandType = 0x04 // the Red Leader gives up its seat
	CmdMark      CommandType = 0x05 // set a NotLeaderMaterial mark
	CmdUnmark    CommandType = 0x06 // clear a NotLeaderMaterial mark
	CmdSetPolicy CommandType = 0x07 // replace the policy
	CmdAdminMode CommandType = 0x09 // record whether admin commands are accepted (keyed / open / open-admin)
	// CmdNote only adds an event to the log; older agents may skip it.
	CmdNote CommandType = 0x08 | CommandType(FlagIgnorable)
	// CmdCatalog commits segment descriptions to the subnet catalog
	// (catalog.go); older agents may skip it.
	CmdCatalog CommandType = 0x0A | CommandType(FlagIgnorable)
)

var commandNames = map[CommandType]string{
	CmdInit: "init", CmdAppoint: "appoint", CmdConfirm: "confirm", CmdRetire: "retire",
	CmdMark: "mark", CmdUnmark: "unmark", CmdSetPolicy: "set-policy", CmdNote: "note",
	CmdAdminMode: "admin-mode", CmdCatalog: "catalog",
}

// String returns the command type's name.
func (t CommandType) String() string {
	if n, ok := commandNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(0x%02x)", byte(t))
}

// Ignorable reports whether the type carries FlagIgnorable.
func (t CommandType) Ignorable() bool { return byte(t)&FlagIgnorable != 0 }

// MarkSource says who set a NotLeaderMaterial mark.
type MarkSource string

// Mark sources.
const (
	MarkAuto  MarkSource = "auto"  // by the Raft leader (no confirmation, missed check-ins, dead); expires
	MarkAdmin MarkSource = "admin" // by an operator (redleader nlm); never expires
)

// AdminMode is the cluster's committed answer to "who may commit admin
// commands" (policy, admin marks, unmark). The Raft leader records it from
// its configuration (init, then CmdAdminMode when it differs, see
// Node.reconcileAdminMode); the FSM refuses admin commands unless it is
// AdminKeyed or AdminOpenAdmin.
type AdminMode string

// Admin modes. The zero value (a state from before the mode was recorded)
// refuses admin commands: the safe reading.
const (
	AdminUnset     AdminMode = ""
	AdminKeyed     AdminMode = "keyed"      // a cluster key: key holders are admins
	AdminOpen      AdminMode = "open"       // no key: admin commands refused
	AdminOpenAdmin AdminMode = "open-admin" // no key, allow_open_admin at creation: every LAN host is an admin
)

// Allowed reports whether the mode accepts admin commands.
func (m AdminMode) Allowed() bool { return m == AdminKeyed || m == AdminOpenAdmin }

func (m AdminMode) valid() bool { return m == AdminKeyed || m == AdminOpen || m == AdminOpenAdmin }

// Admin reports whether c is an admin command: one only an operator sends
// (policy, admin marks, unmark), refused unless the admin mode allows it.
func (c Command) Admin() bool {
	return c.Type == CmdSetPolicy || c.Type == CmdUnmark || (c.Type == CmdMark && c.By == MarkAdmin)
}

// Severity grades an event.
type Severity string

// Event severities.
const (
	SeverityInfo    Severity = "info"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

func (s Severity) valid() bool {
	return s == SeverityInfo || s == SeverityWarning || s == SeverityError
}

// Policy is the subnet's committed shaping policy. Rates are config
// strings such as "50Mbit", "256kbit" or "0" (unlimited); "" means "not
// set, use local config". Version is bumped by the FSM on every change.
type Policy struct {
	Version    uint64          `json:"version"`
	LeaderRate string          `json:"leader_rate,omitempty"` // Red Leader's WAN rate
	PeerRate   string          `json:"peer_rate,omitempty"`   // everyone else's WAN rate
	LANRate    string          `json:"lan_rate,omitempty"`    // serving peers on the LAN
	Flags      map[string]bool `json:"flags,omitempty"`
}

// clone returns a deep copy of p.
func (p Policy) clone() Policy {
	if p.Flags != nil {
		flags := make(map[string]bool, len(p.Flags))
		for k, v := range p.Flags {
			flags[k] = v
		}
		p.Flags = flags
	}
	return p
}

// Mark is a NotLeaderMaterial mark in the FSM.
type Mark struct {
	Node    string
	Reason  string
	By      MarkSource
	SetAt   time.Time
	Expires time.Time // zero: never (admin marks)
}

// Active reports whether m is in force at now.
func (m Mark) Active(now time.Time) bool {
	return m.Expires.IsZero() || now.Before(m.Expires)
}

// Command is one replicated FSM command. Which fields matter depends on
// Type; build commands with the New*Command functions.
type Command struct {
	Type      CommandType
	RequestID string    // unique per logical request; resubmissions reuse it
	Time      time.Time // the proposer's clock: the only clock Apply uses

	Node   string // appoint, confirm, retire, mark, unmark, note
	Epoch  uint64 // appoint, confirm, retire; init: the first epoch (carried over by a re-bootstrap)
	Reason string

	By  MarkSource    // mark
	TTL time.Duration // mark by MarkAuto: the mark expires TTL after Time

	Policy            *Policy // init, set-policy
	PrevPolicyVersion uint64  // set-policy: if non-zero, must equal the current version

	ClusterID string    // init
	Secret    []byte    // init: SecretSize random bytes
	Marks     []Mark    // init: admin marks carried over by a re-bootstrap
	Severity  Severity  // note
	Mode      AdminMode // init (may be unset: an older agent's), admin-mode

	Catalog *CatalogPart // catalog (Node and Epoch: the committing Red Leader's seat)
}

// NewInitCommand returns the first command of a new cluster.
func NewInitCommand(requestID string, now time.Time, clusterID string, secret []byte, p Policy) Command {
	return Command{Type: CmdInit, RequestID: requestID, Time: now, ClusterID: clusterID,
		Secret: append([]byte(nil), secret...), Policy: &p}
}

// NewAppointCommand appoints node as Red Leader at epoch (current+1).
func NewAppointCommand(requestID string, now time.Time, node string, epoch uint64, reason string) Command {
	return Command{Type: CmdAppoint, RequestID: requestID, Time: now, Node: node, Epoch: epoch, Reason: truncate(reason)}
}

// NewConfirmCommand confirms node's appointment at epoch.
func NewConfirmCommand(requestID string, now time.Time, node string, epoch uint64) Command {
	return Command{Type: CmdConfirm, RequestID: requestID, Time: now, Node: node, Epoch: epoch}
}

// NewRetireCommand vacates node's seat at epoch (graceful stop).
func NewRetireCommand(requestID string, now time.Time, node string, epoch uint64, reason string) Command {
	return Command{Type: CmdRetire, RequestID: requestID, Time: now, Node: node, Epoch: epoch, Reason: truncate(reason)}
}

// NewMarkCommand marks node NotLeaderMaterial. Auto marks expire after
// ttl; admin marks ignore ttl and never expire.
func NewMarkCommand(requestID string, now time.Time, node string, by MarkSource, ttl time.Duration, reason string) Command {
	if by == MarkAdmin {
		ttl = 0
	}
	return Command{Type: CmdMark, RequestID: requestID, Time: now, Node: node, By: by, TTL: ttl, Reason: truncate(reason)}
}

// NewUnmarkCommand clears node's NotLeaderMaterial mark.
func NewUnmarkCommand(requestID string, now time.Time, node, reason string) Command {
	return Command{Type: CmdUnmark, RequestID: requestID, Time: now, Node: node, Reason: truncate(reason)}
}

// NewSetPolicyCommand replaces the policy. If prevVersion is non-zero the
// change applies only on top of that policy version.
func NewSetPolicyCommand(requestID string, now time.Time, p Policy, prevVersion uint64) Command {
	return Command{Type: CmdSetPolicy, RequestID: requestID, Time: now, Policy: &p, PrevPolicyVersion: prevVersion}
}

// NewAdminModeCommand records the cluster's admin mode.
func NewAdminModeCommand(requestID string, now time.Time, mode AdminMode, reason string) Command {
	return Command{Type: CmdAdminMode, RequestID: requestID, Time: now, Mode: mode, Reason: truncate(reason)}
}

// NewNoteCommand adds an event (about node, may be "") to the event log.
func NewNoteCommand(requestID string, now time.Time, node string, sev Severity, reason string) Command {
	return Command{Type: CmdNote, RequestID: requestID, Time: now, Node: node, Severity: sev, Reason: truncate(reason)}
}

// truncate cuts s to MaxReasonLen bytes on a rune boundary.
func truncate(s string) string {
	if len(s) <= MaxReasonLen {
		return s
	}
	s = s[:MaxReasonLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// wireCommand is the JSON body of an encoded command.
type wireCommand struct {
	ID         string       `json:"id"`
	T          int64        `json:"t"` // unix nanoseconds
	Node       string       `json:"node,omitempty"`
	Epoch      uint64       `json:"epoch,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	By         MarkSource   `json:"by,omitempty"`
	TTL        int64        `json:"ttl_ns,omitempty"`
	Policy     *Policy      `json:"policy,omitempty"`
	PrevPolicy uint64       `json:"prev_policy,omitempty"`
	Cluster    string       `json:"cluster,omitempty"`
	Secret     []byte       `json:"secret,omitempty"`
	Marks      []wireMark   `json:"marks,omitempty"`
	Severity   Severity     `json:"sev,omitempty"`
	Mode       AdminMode    `json:"admin,omitempty"`
	Catalog    *wireCatalog `json:"catalog,omitempty"`
}

// wireMark is a Mark in commands and snapshots.
type wireMark struct {
	Node    string     `json:"node"`
	Reason  string     `json:"reason,omitempty"`
	By      MarkSource `json:"by"`
	SetAt   int64      `json:"set,omitempty"`
	Expires int64      `json:"exp,omitempty"`
}

func toWireMark(m Mark) wireMark {
	return wireMark{Node: m.Node, Reason: m.Reason, By: m.By, SetAt: toNanos(m.SetAt), Expires: toNanos(m.Expires)}
}

func (w wireMark) mark() Mark {
	return Mark{Node: w.Node, Reason: w.Reason, By: w.By, SetAt: fromNanos(w.SetAt), Expires: fromNanos(w.Expires)}
}

// toNanos encodes t as unix nanoseconds; the zero time is 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos decodes unix nanoseconds as a UTC time; 0 is the zero time.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// EncodeCommand validates c and encodes it as a log entry: the type byte,
// the version byte (1), then a JSON body.
func EncodeCommand(c Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := wireCommand{
		ID: c.RequestID, T: toNanos(c.Time), Node: c.Node, Epoch: c.Epoch, Reason: c.Reason,
		By: c.By, TTL: int64(c.TTL), Policy: c.Policy, PrevPolicy: c.PrevPolicyVersion,
		Cluster: c.ClusterID, Secret: c.Secret, Severity: c.Severity, Mode: c.Mode,
	}
	for _, m := range c.Marks {
		w.Marks = append(w.Marks, toWireMark(m))
	}
	if p := c.Catalog; p != nil {
		w.Catalog = &wireCatalog{Key: p.Key, Length: p.Length, SHA256: p.SHA256, First: p.First, Segments: toWireSegments(p.Segments)}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Type, err)
	}
	b := make([]byte, 0, 2+len(body))
	b = append(b, byte(c.Type), commandVersion)
	b = append(b, body...)
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %s command of %d bytes exceeds %d", ErrInvalid, c.Type, len(b), MaxEntrySize)
	}
	return b, nil
}

// DecodeCommand decodes and validates a log entry written by EncodeCommand,
// possibly by another version of the agent. An unknown type returns an
// error wrapping ErrUnknownType, unless the type is flagged ignorable: then
// the error wraps errSkip and the command's Type is set.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return Command{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if len(b) > MaxEntrySize {
		return Command{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), MaxEntrySize)
	}
	t, version := CommandType(b[0]), b[1]
	if _, ok := commandNames[t]; !ok {
		if t.Ignorable() {
			return Command{Type: t}, fmt.Errorf("%w 0x%02x", errSkip, byte(t))
		}
		return Command{Type: t}, fmt.Errorf("%w: 0x%02x", ErrUnknownType, byte(t))
	}
	if version == 0 || version > commandVersion {
		if t.Ignorable() {
			return Command{Type: t}, fmt.Errorf("%w %s version %d", errSkip, t, version)
		}
		return Command{Type: t}, fmt.Errorf("%w: %s version %d", ErrUnsupportedVersion, t, version)
	}
	var w wireCommand
	if err := json.Unmarshal(b[2:], &w); err != nil {
		return Command{Type: t}, fmt.Errorf("%w: %s body: %w", ErrMalformed, t, err)
	}
	c := Command{
		Type: t, RequestID: w.ID, Time: fromNanos(w.T), Node: w.Node, Epoch: w.Epoch,
		Reason: w.Reason, By: w.By, TTL: time.Duration(w.TTL), Policy: w.Policy,
		PrevPolicyVersion: w.PrevPolicy, ClusterID: w.Cluster, Secret: w.Secret, Severity: w.Severity,
		Mode: w.Mode,
	}
	for _, m := range w.Marks {
		c.Marks = append(c.Marks, m.mark())
	}
	if p := w.Catalog; p != nil {
		c.Catalog = &CatalogPart{Key: p.Key, Length: p.Length, SHA256: p.SHA256, First: p.First, Segments: fromWireSegments(p.Segments)}
	}
	// Normalise empty to nil so that decode(encode(c)) equals c.
	if len(c.Secret) == 0 {
		c.Secret = nil
	}
	if c.Policy != nil && len(c.Policy.Flags) == 0 {
		c.Policy.Flags = nil
	}
	if err := c.Validate(); err != nil {
		return Command{Type: t}, err
	}
	return c, nil
}

// Validate checks that c carries what its type needs.
func (c Command) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s command: %s", ErrInvalid, c.Type, fmt.Sprintf(format, args...))
	}
	if _, ok := commandNames[c.Type]; !ok {
		return bad("unknown type")
	}
	if err := checkID("request ID", c.RequestID); err != nil {
		return bad("%v", err)
	}
	if c.Time.IsZero() {
		return bad("no time")
	}
	if len(c.Reason) > MaxReasonLen {
		return bad("reason of %d bytes", len(c.Reason))
	}
	switch c.Type {
	case CmdInit:
		if err := checkID("cluster ID", c.ClusterID); err != nil {
			return bad("%v", err)
		}
		if len(c.Secret) != SecretSize {
			return bad("secret of %d bytes, want %d", len(c.Secret), SecretSize)
		}
		if c.Policy == nil {
			return bad("no policy")
		}
		if c.Mode != AdminUnset && !c.Mode.valid() {
			return bad("admin mode %q", c.Mode)
		}
		for _, m := range c.Marks {
			if err := checkID("mark node", m.Node); err != nil {
				return bad("%v", err)
			}
			if m.By != MarkAdmin {
				return bad("carried-over mark for %s is %q, only admin marks carry over", m.Node, m.By)
			}
			if len(m.Reason) > MaxReasonLen {
				return bad("mark reason of %d bytes", len(m.Reason))
			}
		}
	case CmdAppoint, CmdConfirm, CmdRetire:
		if err := checkID("node", c.Node); err != nil {
			return bad("%v", err)
		}
		if c.Epoch == 0 {
			return bad("epoch 0")
		}
	case CmdMark:
		if err := checkID("node", c.Node); err != nil {
			return bad("%v", err)
		}
		switch {
		case c.By == MarkAuto && c.TTL <= 0:
			return bad("auto mark without a positive TTL")
		case c.By == MarkAdmin && c.TTL != 0:
			return bad("admin mark with a TTL")
		case c.By != MarkAuto && c.By != MarkAdmin:
			return bad("mark source %q", c.By)
		}
	case CmdUnmark:
		if err := checkID("node", c.Node); err != nil {
			return bad("%v", err)
		}
	case CmdSetPolicy:
		if c.Policy == nil {
			return bad("no policy")
		}
	case CmdAdminMode:
		if !c.Mode.valid() {
			return bad("admin mode %q", c.Mode)
		}
	case CmdCatalog:
		if err := checkID("node", c.Node); err != nil {
			return bad("%v", err)
		}
		if c.Epoch == 0 {
			return bad("epoch 0")
		}
		if c.Catalog == nil {
			return bad("no catalog part")
		}
		if err := c.Catalog.validate(); err != nil {
			return bad("%v", err)
		}
	case CmdNote:
		if c.Node != "" {
			if err := checkID("node", c.Node); err != nil {
				return bad("%v", err)
			}
		}
		if !c.Severity.valid() {
			return bad("severity %q", c.Severity)
		}
		if c.Reason == "" {
			return bad("empty reason")
		}
	}
	return nil
}

// checkID checks a request, node or cluster ID.
func checkID(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case len(s) > MaxIDLen:
		return fmt.Errorf("%s of %d bytes", what, len(s))
	}
	return nil
}
