package cache

// SetMaxBytes changes the cap (0 or less: none) of an open cache and, when
// it is lower than the bytes held, evicts least recently used segments at
// once. Segments pinned or being written are never evicted: it returns
// false when they alone keep the cache over the new cap (later writes then
// evict them first, once unpinned). The cache in use is not interrupted.
func (c *Cache) SetMaxBytes(n int64) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.maxBytes = max(n, 0)
	trash, ok := c.evictLocked(0, nil)
	c.mu.Unlock()
	c.removeTrash(trash)
	return ok
}
