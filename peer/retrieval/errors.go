// Package retrieval implements MS-PCCRR, the BranchCache peer retrieval
// protocol: the message codec, block encryption, an HTTP server that serves
// blocks from a Store, and a client that fetches and verifies blocks from
// peers.
package retrieval

import "errors"

// Sentinel errors.
var (
	// ErrTruncated means a message ends before a field it declares.
	ErrTruncated = errors.New("message truncated")
	// ErrMalformed means a message field holds an impossible value.
	ErrMalformed = errors.New("malformed message")
	// ErrMsgType means the message is not of the expected type.
	ErrMsgType = errors.New("unexpected message type")
	// ErrSegmentIDSize means a segment ID is not 32 bytes long.
	ErrSegmentIDSize = errors.New("unsupported segment ID size")
	// ErrTooLarge means a message exceeds the protocol's size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrNotHeld means the peer does not hold (or is too busy to send) the block.
	ErrNotHeld = errors.New("block not held by peer")
	// ErrBadBlock means a peer sent a block that fails verification or does
	// not answer the request; such a peer is not asked again for the segment.
	ErrBadBlock = errors.New("bad block from peer")
	// ErrPeer means a peer failed at the transport or HTTP level.
	ErrPeer = errors.New("peer request failed")
	// ErrIncomplete means some blocks could not be fetched from any peer.
	ErrIncomplete = errors.New("blocks unavailable from peers")
	// ErrNoStore means a server was configured without a Store.
	ErrNoStore = errors.New("no block store")
)
