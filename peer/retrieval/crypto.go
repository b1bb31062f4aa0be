package retrieval

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"github.com/redleader-p2p/redleader/peer/content"
)

// ServerCrypto is the algorithm the server encrypts blocks with: AES-256 in
// CBC mode keyed with the whole 32-byte Kp, so the key is the same whether
// a client truncates Kp to the algorithm's key size (iPXE) or uses all of it
// (Microsoft's test suite). See DESIGN.md.
const ServerCrypto = CryptoAES256

// encryptInPlace PKCS#7-pads the plaintext at buf[start:] and encrypts it in
// place with AES-CBC under the whole key, returning buf grown by the padding.
func encryptInPlace(buf []byte, start int, key content.Digest, iv []byte) ([]byte, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("encrypt block: %w", err)
	}
	n := aes.BlockSize - (len(buf)-start)%aes.BlockSize
	for range n {
		buf = append(buf, byte(n))
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf[start:], buf[start:])
	return buf, nil
}

// EncryptBlock returns the block encrypted as the server sends it:
// AES-256-CBC under Kp with PKCS#7 padding.
func EncryptBlock(kp content.Digest, iv, plain []byte) ([]byte, error) {
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("encrypt block: IV of %d bytes: %w", len(iv), ErrMalformed)
	}
	buf := append(make([]byte, 0, len(plain)+aes.BlockSize), plain...)
	return encryptInPlace(buf, 0, kp, iv)
}

// decryptBlock decrypts and verifies block index of seg from blk. With AES
// it first uses Kp truncated to the algorithm's key size, then, if the
// block hash does not match and the key was shorter, the whole Kp. Padding
// beyond the block length is ignored. Every failure is ErrBadBlock.
func decryptBlock(seg *content.Segment, index int, blk *Blk) ([]byte, error) {
	n := seg.BlockLen(index)
	if blk.Crypto == CryptoNone {
		if len(blk.Block) < n {
			return nil, fmt.Errorf("plain block of %d bytes, want %d: %w", len(blk.Block), n, ErrBadBlock)
		}
		data := blk.Block[:n]
		if err := content.VerifyBlock(seg, index, data); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadBlock, err)
		}
		return data, nil
	}
	keyLen := blk.Crypto.keyLen()
	ct := blk.Block
	switch {
	case keyLen == 0:
		return nil, fmt.Errorf("crypto algorithm %d: %w", blk.Crypto, ErrBadBlock)
	case len(blk.IV) != aes.BlockSize:
		return nil, fmt.Errorf("IV of %d bytes: %w", len(blk.IV), ErrBadBlock)
	case len(ct)%aes.BlockSize != 0 || len(ct) < n:
		return nil, fmt.Errorf("ciphertext of %d bytes for a %d-byte block: %w", len(ct), n, ErrBadBlock)
	}
	plain := make([]byte, len(ct))
	var err error
	for _, kl := range []int{keyLen, content.DigestSize} {
		var c cipher.Block
		c, err = aes.NewCipher(seg.Kp[:kl])
		if err != nil {
			return nil, fmt.Errorf("decrypt block: %w", err)
		}
		cipher.NewCBCDecrypter(c, blk.IV).CryptBlocks(plain, ct)
		if err = content.VerifyBlock(seg, index, plain[:n]); err == nil {
			return plain[:n], nil
		}
		if kl == content.DigestSize {
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrBadBlock, err)
}
