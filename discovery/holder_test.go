package discovery

import (
	"sync"

	"github.com/redleader-p2p/redleader/peer/content"
)

// memoryHolder is an in-memory Holder for tests, safe for concurrent use.
// The agent's Holder is its segment cache.
type memoryHolder struct {
	mu       sync.RWMutex
	segments map[content.SegmentID]uint32
}

func newMemoryHolder() *memoryHolder {
	return &memoryHolder{segments: map[content.SegmentID]uint32{}}
}

// Add marks id as held with the given number of blocks (0 removes it).
func (h *memoryHolder) Add(id content.SegmentID, blocks uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if blocks == 0 {
		delete(h.segments, id)
		return
	}
	h.segments[id] = blocks
}

// BlockCount implements Holder.
func (h *memoryHolder) BlockCount(id content.SegmentID) (uint32, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n, ok := h.segments[id]
	return n, ok
}
