package retrieval

import (
	"bytes"
	"container/list"
	"sync"

	"github.com/redleader-p2p/redleader/peer/content"
)

// DefaultCipherCacheBytes is the default size of the server's cache of
// encrypted blocks: 256 blocks, half a segment. Members that fetch one
// content at once follow its holder's progress within seconds of each
// other, so a window this size serves them; a larger one is resident
// memory (64 MiB made a serving Red Leader's RSS 110-180 MiB in the lab).
const DefaultCipherCacheBytes = 16 << 20

// cipherKey names one block.
type cipherKey struct {
	id    content.SegmentID
	index uint32
}

// cipherEntry is an encrypted block and the IV it was encrypted with.
type cipherEntry struct {
	key   cipherKey
	iv    []byte
	ct    []byte
	plain int // plaintext length
}

// cipherCache is an LRU cache of encrypted blocks. Encrypting is the most
// expensive part of serving (AES-CBC encryption is serial), and many peers
// fetch the same blocks from one holder, so each block is encrypted once
// and its ciphertext and IV are replayed. This reveals nothing new: the
// segment ID and block index travel in clear in the request, and a block's
// plaintext is fixed by its hash.
type cipherCache struct {
	mu    sync.Mutex
	max   int
	size  int
	lru   *list.List // of *cipherEntry, most recent first
	index map[cipherKey]*list.Element
}

func newCipherCache(maxBytes int) *cipherCache {
	return &cipherCache{max: maxBytes, lru: list.New(), index: make(map[cipherKey]*list.Element)}
}

// get returns the cached entry of k; it must not be modified.
func (c *cipherCache) get(k cipherKey) (*cipherEntry, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.index[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cipherEntry), true
}

// put stores copies of ct and iv for k, evicting the least recently used
// entries beyond the size cap. The copies are made outside the lock.
func (c *cipherCache) put(k cipherKey, ct, iv []byte, plain int) {
	if c == nil || len(ct) > c.max {
		return
	}
	ent := &cipherEntry{key: k, ct: bytes.Clone(ct), iv: bytes.Clone(iv), plain: plain}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.index[k]; ok {
		return
	}
	c.index[k] = c.lru.PushFront(ent)
	c.size += len(ct)
	for c.size > c.max {
		last := c.lru.Back()
		old := last.Value.(*cipherEntry)
		c.lru.Remove(last)
		delete(c.index, old.key)
		c.size -= len(old.ct)
	}
}
