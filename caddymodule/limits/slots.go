package limits

import "sync"

// Slots caps the requests each key (a session) has in flight.
type Slots struct {
	mu sync.Mutex
	m  map[string]int
}

// Acquire takes a slot of key unless it holds max already; release
// (call it once) gives it back.
func (s *Slots) Acquire(key string, max int) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]int)
	}
	if s.m[key] >= max {
		return nil, false
	}
	s.m[key]++
	var once sync.Once
	return func() { once.Do(func() { s.release(key) }) }, true
}

func (s *Slots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key]--; s.m[key] <= 0 {
		delete(s.m, key)
	}
}

// InFlight is how many slots key holds.
func (s *Slots) InFlight(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key]
}
