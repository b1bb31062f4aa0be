package discovery

import (
	"errors"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Sentinel errors of the PCCRD codec, prober and responder. Callers test
// them with errors.Is; the returned errors wrap them with context.
var (
	// ErrMalformed marks a datagram that claims to be a PCCRD message but
	// is not well-formed (bad XML, bad Scopes, missing fields, ...).
	ErrMalformed = errors.New("malformed PCCRD message")
	// ErrNotPCCRD marks a well-formed SOAP/WS-Discovery message that is not
	// a PCCRD Probe or ProbeMatch (Hello, Bye, Resolve, other Types, ...).
	ErrNotPCCRD = errors.New("not a PCCRD message")
	// ErrTooLarge marks a datagram longer than MaxMessageSize.
	ErrTooLarge = errors.New("PCCRD message too large")
	// ErrInvalidMessage marks a Probe or ProbeMatch value that cannot be
	// encoded (no segments, bad segment length, missing XAddrs, ...).
	ErrInvalidMessage = errors.New("invalid PCCRD message value")
	// ErrInvalidConfig marks a ProberConfig or ResponderConfig with a value
	// out of range.
	ErrInvalidConfig = errors.New("invalid discovery config")
	// ErrClosed is returned by a Prober or Responder that was closed.
	ErrClosed = errors.New("closed")
	// ErrNotStarted is returned by Prober.Probe before Start.
	ErrNotStarted = errors.New("not started")
)

// Wire constants of MS-PCCRD (WS-Discovery 2005/04 over SOAP-over-UDP).
const (
	// DefaultPort is the WS-Discovery UDP port responders listen on.
	DefaultPort = 3702
	// MulticastIPv4 is the WS-Discovery IPv4 multicast group.
	MulticastIPv4 = "239.255.255.250"
	// MulticastIPv6 is the WS-Discovery IPv6 link-local multicast group.
	MulticastIPv6 = "ff02::c"

	// MaxMessageSize bounds every PCCRD datagram this package accepts.
	// Larger datagrams are rejected before any parsing. A v1 Probe for
	// MaxSegments 32-byte segments is about 17 KiB.
	MaxMessageSize = 32 << 10
	// MaxSegments bounds the segment IDs in one message (the v2 Scopes
	// count field is one byte).
	MaxSegments = 255
	// maxXAddrs bounds the transport addresses in one ProbeMatch.
	maxXAddrs = 16
	// maxURILen bounds MessageID, RelatesTo, Address and each XAddr.
	maxURILen = 256
	// maxDepth bounds XML element nesting.
	maxDepth = 16
)

// Namespace URIs used by PCCRD messages.
const (
	nsSOAP     = "http://www.w3.org/2003/05/soap-envelope"
	nsWSA      = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	nsWSD      = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
	nsPeerDist = "http://schemas.microsoft.com/p2p/2007/09/PeerDistributionDiscovery"
)

// Fixed strings of PCCRD messages.
const (
	toProbe         = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
	toAnonymous     = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
	actionProbe     = "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"
	actionMatches   = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"
	typeV1Local     = "PeerDistData"
	typeV2Local     = "PeerDistDataV2"
	matchByV1       = "http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0"
	matchByV2       = "http://schemas.microsoft.com/p2p/2010/05/PeerDistV2MatchingRule"
	uuidURNPrefix   = "urn:uuid:"
	segmentAgesVer  = 1
	segmentAgeUnits = 3 // hundredths of a second
)

// segmentID converts a wire HoHoDk to a content.SegmentID (the 32-byte
// HoHoDk of SHA-256 v1 and truncated-SHA-512 v2 content information); ok
// is false for other lengths (v1 content hashed with SHA-384/512).
func segmentID(b []byte) (content.SegmentID, bool) {
	var id content.SegmentID
	if len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// Version is the PCCRD message format version.
type Version uint8

// PCCRD message versions.
const (
	// V1 uses Types PeerDist:PeerDistData, hex Scopes and BlockCount.
	V1 Version = 1
	// V2 uses Types PeerDist:PeerDistDataV2, base64 Scopes and SegmentAges.
	V2 Version = 2
)

// String returns "v1" or "v2".
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	default:
		return "v?"
	}
}

func (v Version) valid() bool { return v == V1 || v == V2 }

func (v Version) typeLocal() string {
	if v == V2 {
		return typeV2Local
	}
	return typeV1Local
}

func (v Version) matchBy() string {
	if v == V2 {
		return matchByV2
	}
	return matchByV1
}

// validHoHoDkLen reports whether n is a possible HoHoDk length in bytes
// (SHA-256, SHA-384 or SHA-512 digest).
func validHoHoDkLen(n int) bool { return n == 32 || n == 48 || n == 64 }

// Probe is a WS-Discovery Probe for PeerDist segments.
type Probe struct {
	// Version selects v1 (hex Scopes) or v2 (base64 Scopes) format.
	Version Version
	// MessageID is the wsa:MessageID, normally "urn:uuid:<uuid>".
	MessageID string
	// Segments are the probed HoHoDks in Scopes order, each 32, 48 or 64
	// bytes long (all of one length in v2).
	Segments [][]byte
}

// SegmentAge is one entry of a v2 ProbeMatch SegmentAges blob.
type SegmentAge struct {
	// Index is the position of the segment in the Probe's Scopes.
	Index uint8
	// Age is the segment's age in units of the blob (see ProbeMatch.AgeUnits).
	Age uint32
}

// ProbeMatch is a WS-Discovery ProbeMatches message carrying one PeerDist
// ProbeMatch.
type ProbeMatch struct {
	// Version selects v1 or v2 format.
	Version Version
	// MessageID is the reply's own wsa:MessageID.
	MessageID string
	// RelatesTo is the MessageID of the Probe this answers.
	RelatesTo string
	// InstanceID and MessageNumber are the wsd:AppSequence attributes.
	InstanceID    uint32
	MessageNumber uint32
	// Address is the responder's wsa:EndpointReference/wsa:Address.
	Address string
	// XAddrs are the responder's transport addresses ("host:port").
	XAddrs []string
	// MetadataVersion is 1 for v1 and 2 for v2 when built by this package.
	MetadataVersion uint32

	// Segments (v1) are the matched HoHoDks in Scopes order.
	Segments [][]byte
	// BlockCounts (v1) holds one block count per entry of Segments.
	BlockCounts []uint32

	// Availability (v2) is the Scopes bit array: two bits per segment of
	// the Probe, see Has.
	Availability []byte
	// AgeUnits (v2) is the SegmentAgeUnits of the SegmentAges blob
	// (1 s, 2 1/10 s, 3 1/100 s, 4 ms); 0 when the blob was absent or invalid.
	AgeUnits uint8
	// Ages (v2) are the decoded SegmentAges entries.
	Ages []SegmentAge
}

// Has reports, for a v2 ProbeMatch, whether the responder holds segment i
// of the Probe (has) and all of its blocks (full). Segment i uses two bits,
// most significant first within each byte: bit 7-2*(i%4) = has, the next
// lower bit = full. (The spec does not state the bit order; for 0xFF bytes,
// as in its example, it does not matter.)
func (m *ProbeMatch) Has(i int) (has, full bool) {
	if i < 0 || i/4 >= len(m.Availability) {
		return false, false
	}
	b := m.Availability[i/4]
	shift := 6 - 2*uint(i%4)
	return b>>(shift+1)&1 == 1, b>>shift&1 == 1
}

// setAvailability sets the two bits of segment i in a v2 bit array.
func setAvailability(bits []byte, i int, has, full bool) {
	shift := 6 - 2*uint(i%4)
	if has {
		bits[i/4] |= 1 << (shift + 1)
	}
	if full {
		bits[i/4] |= 1 << shift
	}
}
