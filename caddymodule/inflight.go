package caddymodule

// Exchanges in flight: the proxy holds one from the start of each
// request or relayed tunnel until its activity entry is handed over, so
// that shutdown can let the exchanges its closing tunnels cut short
// record their entries before the activity Recorder's final flush.

import (
	"context"
	"sync"
)

// inFlight counts the exchanges whose activity entry is still to come.
// The zero inFlight is ready; a nil one counts nothing. It is safe for
// concurrent use.
type inFlight struct {
	mu sync.Mutex
	n  int
	// idle is closed while n is 0 (nil stands for closed); a new one is
	// made when n leaves 0.
	idle chan struct{}
}

// begin counts one exchange; the function it returns (to defer, after
// the entry is handed over) ends it, once however often it is called.
func (f *inFlight) begin() (end func()) {
	if f == nil {
		return func() {}
	}
	f.mu.Lock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
	return sync.OnceFunc(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.n--; f.n == 0 {
			close(f.idle)
		}
	})
}

// wait returns once no exchange is in flight, or when ctx ends, with
// how many still were.
func (f *inFlight) wait(ctx context.Context) (left int) {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	idle := f.idle
	f.mu.Unlock()
	if idle == nil {
		return 0
	}
	select {
	case <-idle:
		return 0
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n
	}
}
