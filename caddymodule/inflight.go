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
// concurrent use. Counting allocates nothing (it runs for every
// request): the channel wait needs is made only while someone waits.
type inFlight struct {
	mu sync.Mutex
	n  int
	// idle, made by wait while n > 0, is closed (and forgotten) when
	// n returns to 0.
	idle chan struct{}
}

// begin counts one exchange; end (deferred, after the entry is handed
// over) ends it, once for each begin.
func (f *inFlight) begin() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inFlight) end() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// wait returns once no exchange is in flight, or when ctx ends, with
// how many still were.
func (f *inFlight) wait(ctx context.Context) (left int) {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return 0
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return 0
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n
	}
}
