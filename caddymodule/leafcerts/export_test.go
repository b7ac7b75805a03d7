package leafcerts

// CachedEntries reports how many leaves m currently caches.
func CachedEntries(m *Minter) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.entries)
}
