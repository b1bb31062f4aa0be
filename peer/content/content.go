// Package content implements MS-PCCRC content information: the segment and
// block hashes, segment secrets (Kp) and segment IDs (HoHoDk) that identify
// content exactly as BranchCache does.
//
// Version 1 (SHA-256, 32 MiB segments of 64 KiB blocks) can be generated from
// a stream, parsed and serialized. Version 2 (SHA-512 truncated to 32 bytes,
// one unit per segment) can be parsed and serialized. Other v1 hash
// algorithms (SHA-384, SHA-512) are rejected: Windows peers only retrieve
// with 32-byte segment IDs.
package content

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf16"
)

// Sentinel errors.
var (
	// ErrTruncated means the content information ends before a field it declares.
	ErrTruncated = errors.New("content information truncated")
	// ErrTrailingData means bytes follow the last declared structure.
	ErrTrailingData = errors.New("trailing data after content information")
	// ErrVersion means the content information version is not 1.0 or 2.0.
	ErrVersion = errors.New("unsupported content information version")
	// ErrHashAlgo means the hash algorithm is not supported.
	ErrHashAlgo = errors.New("unsupported hash algorithm")
	// ErrMalformed means a field holds an impossible value.
	ErrMalformed = errors.New("malformed content information")
	// ErrHoDMismatch means a segment's HoD does not match its block hashes.
	ErrHoDMismatch = errors.New("segment hash of data does not match block hashes")
	// ErrBlockIndex means a block index is outside the segment's listed blocks.
	ErrBlockIndex = errors.New("block index out of range")
	// ErrBlockLength means a block has the wrong length.
	ErrBlockLength = errors.New("wrong block length")
	// ErrBlockHash means a block's data does not match its hash.
	ErrBlockHash = errors.New("block hash mismatch")
	// ErrFinished means data was written to a Generator after Info was called.
	ErrFinished = errors.New("generator already finished")
)

// Sizes fixed by MS-PCCRC version 1.
const (
	// BlockSize is the v1 block size (cbBlockSize MUST be 65536).
	BlockSize = 64 << 10
	// SegmentSize is the v1 segment size; only the content's last segment is shorter.
	SegmentSize = 32 << 20
	// BlocksPerSegment is the number of blocks in a full v1 segment.
	BlocksPerSegment = SegmentSize / BlockSize
	// DigestSize is the size of every digest this package handles.
	DigestSize = 32
)

// segmentIDMagic is "MS_P2P_CACHING" in UTF-16LE including its 16-bit NUL
// terminator (30 bytes); the spec prose ("ASCII") is wrong, see reference §2.2.
const segmentIDMagic = "M\x00S\x00_\x00P\x002\x00P\x00_\x00C\x00A\x00C\x00H\x00I\x00N\x00G\x00\x00\x00"

// Version is a content information version.
type Version uint8

// Content information versions.
const (
	// V1 is content information version 1.0 (little-endian, block hashes).
	V1 Version = 1
	// V2 is content information version 2.0 (big-endian, no block hashes).
	V2 Version = 2
)

// String returns "1.0" or "2.0".
func (v Version) String() string { return fmt.Sprintf("%d.0", uint8(v)) }

// HashAlgo is the hash algorithm identifier carried in content information:
// dwHashAlgo for v1, bHashAlgo for v2.
type HashAlgo uint32

// Hash algorithms.
const (
	// SHA256 is the v1 SHA-256 algorithm (0x800C).
	SHA256 HashAlgo = 0x800C
	// SHA512Trunc is the v2 algorithm: SHA-512 truncated to 32 bytes (0x04).
	SHA512Trunc HashAlgo = 0x04
)

// String names the algorithm.
func (a HashAlgo) String() string {
	switch a {
	case SHA256:
		return "SHA-256"
	case SHA512Trunc:
		return "SHA-512/trunc32"
	default:
		return fmt.Sprintf("hash(0x%x)", uint32(a))
	}
}

// Digest is a 32-byte hash value: a block hash, HoD or Kp.
type Digest [DigestSize]byte

// String returns the digest in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// SegmentID is a segment's public identifier, HoHoDk, as probed for in
// MS-PCCRD and requested in MS-PCCRR.
type SegmentID [DigestSize]byte

// String returns the ID in lower-case hex.
func (id SegmentID) String() string { return hex.EncodeToString(id[:]) }

// hashData returns the digest of data under algo (SHA256 or SHA512Trunc).
func hashData(algo HashAlgo, data ...[]byte) Digest {
	var d Digest
	if algo == SHA512Trunc {
		h := sha512.New()
		for _, p := range data {
			h.Write(p)
		}
		copy(d[:], h.Sum(nil))
		return d
	}
	h := sha256.New()
	for _, p := range data {
		h.Write(p)
	}
	copy(d[:], h.Sum(nil))
	return d
}

// hmacData returns HMAC(key, msg) under algo, truncated to 32 bytes for v2
// (the full HMAC-SHA512 is computed, then truncated).
func hmacData(algo HashAlgo, key []byte, msg ...[]byte) Digest {
	var m = hmac.New(sha256.New, key)
	if algo == SHA512Trunc {
		m = hmac.New(sha512.New, key)
	}
	for _, p := range msg {
		m.Write(p)
	}
	var d Digest
	copy(d[:], m.Sum(nil))
	return d
}

// HashBlock returns the hash of one block (v1: SHA-256 of the block; v2:
// truncated SHA-512 of the segment, which is its HoD).
func HashBlock(algo HashAlgo, data []byte) Digest { return hashData(algo, data) }

// HoDV1 returns a v1 segment's hash of data: SHA-256 over the concatenation
// of all its block hashes.
func HoDV1(blockHashes []Digest) Digest {
	h := sha256.New()
	for i := range blockHashes {
		h.Write(blockHashes[i][:])
	}
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

// HoHoDk derives a segment ID: HMAC(key = Kp, msg = HoD || magic), where
// magic is "MS_P2P_CACHING" in UTF-16LE with its terminator.
func HoHoDk(algo HashAlgo, kp, hod Digest) SegmentID {
	return SegmentID(hmacData(algo, kp[:], hod[:], []byte(segmentIDMagic)))
}

// ServerSecret is a content server's secret key. Ks, the key the segment
// secrets are derived from, is its hash. The zero value is the empty key.
type ServerSecret struct {
	ks1 Digest // SHA-256(key)
	ks2 Digest // first 32 bytes of SHA-512(key)
}

// NewServerSecret returns the server secret for raw key bytes (for example
// the key decrypted from "netsh branchcache exportkey" output).
func NewServerSecret(key []byte) ServerSecret {
	return ServerSecret{ks1: hashData(SHA256, key), ks2: hashData(SHA512Trunc, key)}
}

// PassphraseSecret returns the server secret Windows derives from
// "netsh branchcache set key PASSPHRASE": the key bytes are the passphrase in
// UTF-16LE without terminator.
func PassphraseSecret(passphrase string) ServerSecret {
	units := utf16.Encode([]rune(passphrase))
	b := make([]byte, 0, 2*len(units))
	for _, u := range units {
		b = append(b, byte(u), byte(u>>8))
	}
	return NewServerSecret(b)
}

// SegmentSecret derives Kp = HMAC(key = Ks, msg = HoD) for algo.
func (s ServerSecret) SegmentSecret(algo HashAlgo, hod Digest) Digest {
	if algo == SHA512Trunc {
		return hmacData(algo, s.ks2[:], hod[:])
	}
	return hmacData(algo, s.ks1[:], hod[:])
}
