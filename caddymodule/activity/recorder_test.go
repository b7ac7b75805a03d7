package activity

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var errDown = errors.New("database down")

// fakeWriter keeps the batches it is given. Before each insert it
// tells entered (if set) and waits for gate (if set); fail makes the
// first fail inserts fail (a negative fail: every insert).
type fakeWriter struct {
	mu      sync.Mutex
	batches [][]Entry
	calls   int
	fail    int
	entered chan struct{}
	gate    chan struct{}
	// blockUntilCancel makes every insert wait for its context.
	blockUntilCancel bool
}

func (w *fakeWriter) InsertActivity(ctx context.Context, es []Entry) error {
	if w.entered != nil {
		w.entered <- struct{}{}
	}
	if w.gate != nil {
		<-w.gate
	}
	if w.blockUntilCancel {
		<-ctx.Done()
		return ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.fail < 0 || w.calls <= w.fail {
		return errDown
	}
	w.batches = append(w.batches, append([]Entry(nil), es...))
	return nil
}

func (w *fakeWriter) sizes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int
	for _, b := range w.batches {
		out = append(out, len(b))
	}
	return out
}

func (w *fakeWriter) all() []Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Entry
	for _, b := range w.batches {
		out = append(out, b...)
	}
	return out
}

// fakeTimers is Options.After by hand: each call is announced on armed
// and its channel fires when the test sends on it.
type fakeTimers struct{ armed chan chan time.Time }

func newFakeTimers() *fakeTimers { return &fakeTimers{armed: make(chan chan time.Time, 100)} }

func (f *fakeTimers) After(time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	f.armed <- c
	return c
}

// next waits for the writer to arm a timer and returns its trigger.
func (f *fakeTimers) next(t *testing.T) chan time.Time {
	t.Helper()
	select {
	case c := <-f.armed:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no timer armed within 10s")
		return nil
	}
}

func closeNow(t *testing.T, r *Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestRecorderBatches(t *testing.T) {
	w := &fakeWriter{entered: make(chan struct{}, 10), gate: make(chan struct{})}
	r := NewRecorder(w, Options{Batch: 500, BatchWait: 5 * time.Millisecond})
	r.Record(Entry{Method: "GET"})
	<-w.entered // the writer holds a batch of one in its insert
	for range 1200 {
		r.Record(Entry{Method: "GET"})
	}
	if q := r.Stats().Queued; q != 1201 {
		t.Fatalf("Queued = %d, want 1201", q)
	}
	close(w.gate)
	closeNow(t, r)
	if got := w.sizes(); len(got) != 4 || got[0] != 1 || got[1] != 500 || got[2] != 500 || got[3] != 200 {
		t.Fatalf("batch sizes %v, want [1 500 500 200]", got)
	}
	if s := r.Stats(); s.Written != 1201 || s.Dropped != 0 || s.Failed != 0 || s.Queued != 0 {
		t.Fatalf("Stats %+v", s)
	}
}

// A batch is written after BatchWait even when it is not full, and
// while it fills its entries count as queued.
func TestRecorderWritesPartialBatch(t *testing.T) {
	w := &fakeWriter{entered: make(chan struct{}, 1)}
	timers := newFakeTimers()
	r := NewRecorder(w, Options{BatchWait: time.Hour, After: timers.After})
	defer closeNow(t, r)
	r.Record(Entry{Method: "GET"})
	fire := timers.next(t) // the writer holds the entry, waiting for more
	if s := r.Stats(); s.Queued != 1 || s.Written != 0 {
		t.Fatalf("Stats while the batch fills %+v, want 1 queued", s)
	}
	fire <- time.Now()
	<-w.entered
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.sizes(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("batches %v, want one of 1", got)
	}
}

// A full batch is written at once, without waiting out BatchWait, and
// the entries after it start the next batch.
func TestRecorderWritesFullBatchAtOnce(t *testing.T) {
	w := &fakeWriter{entered: make(chan struct{}, 10)}
	timers := newFakeTimers()
	r := NewRecorder(w, Options{Batch: 10, BatchWait: time.Hour, After: timers.After})
	for range 10 {
		r.Record(Entry{Method: "GET"})
	}
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch was not written before its wait ended")
	}
	r.Record(Entry{Method: "GET"})
	// The next batch waits for more: end every wait armed (the first
	// batch's too, if the writer armed one before the batch filled)
	// until it is written.
	for written := false; !written; {
		select {
		case fire := <-timers.armed:
			fire <- time.Now()
		case <-w.entered:
			written = true
		case <-time.After(10 * time.Second):
			t.Fatal("the second batch was not written after its wait")
		}
	}
	closeNow(t, r)
	if got := w.sizes(); len(got) != 2 || got[0] != 10 || got[1] != 1 {
		t.Fatalf("batch sizes %v, want [10 1]", got)
	}
}

// Entries are written in the order recorded, across the blocks of a
// backlog, and the blocks are reused after it.
func TestRecorderKeepsOrderAcrossBlocks(t *testing.T) {
	w := &fakeWriter{entered: make(chan struct{}, 100), gate: make(chan struct{})}
	r := NewRecorder(w, Options{Batch: 7, BatchWait: time.Millisecond})
	n := 0
	record := func(k int) {
		for range k {
			r.Record(Entry{Port: n})
			n++
		}
	}
	record(1)
	<-w.entered // the writer holds a batch of one
	record(50)  // a backlog of 8 blocks
	close(w.gate)
	for range 8 { // the backlog's batches: 7 of 7 and one of 1
		<-w.entered
	}
	record(30) // into the blocks the backlog used
	closeNow(t, r)
	got := w.all()
	if len(got) != n {
		t.Fatalf("%d written, want %d", len(got), n)
	}
	for i, e := range got {
		if e.Port != i {
			t.Fatalf("entry %d is the %dth recorded", i, e.Port)
		}
	}
	for _, size := range w.sizes() {
		if size > 7 {
			t.Fatalf("batch sizes %v, want none over 7", w.sizes())
		}
	}
}

// Records racing Close are each written or counted as dropped: none
// is lost uncounted.
func TestRecorderCloseWhileRecording(t *testing.T) {
	for range 300 {
		w := &fakeWriter{}
		r := NewRecorder(w, Options{BatchWait: time.Hour})
		const goroutines, each = 8, 500
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range goroutines {
			wg.Go(func() {
				<-start
				for range each {
					r.Record(Entry{})
				}
			})
		}
		close(start)
		runtime.Gosched()
		closeNow(t, r)
		wg.Wait()
		if s := r.Stats(); s.Written+s.Dropped != goroutines*each || s.Queued != 0 {
			t.Fatalf("Stats %+v: %d of %d entries neither written nor dropped", s, goroutines*each-int(s.Written+s.Dropped), goroutines*each)
		}
	}
}

func TestRecorderDropsWhenFullNeverBlocks(t *testing.T) {
	w := &fakeWriter{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	r := NewRecorder(w, Options{Buffer: 10, BatchWait: time.Millisecond})
	r.Record(Entry{})
	<-w.entered // one entry in the stuck insert
	done := make(chan struct{})
	go func() {
		for range 100 {
			r.Record(Entry{})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Record blocked on a full buffer")
	}
	if s := r.Stats(); s.Dropped != 90 || s.Queued != 11 {
		t.Fatalf("Stats %+v, want 90 dropped and 11 queued", s)
	}
	close(w.gate)
	closeNow(t, r)
	if s := r.Stats(); s.Written != 11 || s.Dropped != 90 {
		t.Fatalf("Stats after close %+v", s)
	}
	r.Record(Entry{}) // after Close: dropped, no panic
	if s := r.Stats(); s.Dropped != 91 {
		t.Fatalf("Record after Close: %+v", s)
	}
}

func TestRecorderCloseFlushes(t *testing.T) {
	w := &fakeWriter{}
	r := NewRecorder(w, Options{BatchWait: time.Hour})
	for range 50 {
		r.Record(Entry{})
	}
	closeNow(t, r)
	if n := len(w.all()); n != 50 {
		t.Fatalf("%d written at Close, want 50", n)
	}
	closeNow(t, r) // twice is fine
}

func TestRecorderCloseIsBounded(t *testing.T) {
	w := &fakeWriter{blockUntilCancel: true}
	r := NewRecorder(w, Options{BatchWait: time.Hour})
	for range 7 {
		r.Record(Entry{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "7 buffered entries not written") {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if s := r.Stats(); s.Dropped != 7 || s.Written != 0 {
		t.Fatalf("Stats %+v", s)
	}
}

// A batch the writer is in the middle of when Close's deadline passes
// is counted with what is still buffered: every entry is written or
// counted as dropped, and Close says how many were lost.
func TestRecorderCloseCountsBatchInFlight(t *testing.T) {
	timers := newFakeTimers()
	w := &fakeWriter{entered: make(chan struct{}, 10), blockUntilCancel: true}
	r := NewRecorder(w, Options{After: timers.After, Retries: -1})
	for range 5 {
		r.Record(Entry{})
	}
	timers.next(t) <- time.Time{} // the batch wait ends: the writer writes
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not start a batch")
	}
	for range 3 {
		r.Record(Entry{}) // buffered behind the batch in flight
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed
	err := r.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "8 buffered entries not written") {
		t.Fatalf("Close: %v, want 8 entries not written", err)
	}
	if s := r.Stats(); s.Dropped != 8 || s.Written != 0 || s.Failed != 0 || s.Queued != 0 {
		t.Fatalf("Stats %+v, want the 8 entries counted as dropped", s)
	}
}

func TestRecorderRetries(t *testing.T) {
	w := &fakeWriter{fail: 2}
	r := NewRecorder(w, Options{BatchWait: time.Hour, Retries: 3, RetryWait: time.Millisecond})
	r.Record(Entry{})
	closeNow(t, r)
	if s := r.Stats(); s.Written != 1 || s.Failed != 0 || w.calls != 3 {
		t.Fatalf("Stats %+v after %d calls", s, w.calls)
	}

	w = &fakeWriter{fail: -1}
	r = NewRecorder(w, Options{BatchWait: time.Hour, Retries: 2, RetryWait: time.Millisecond})
	for range 3 {
		r.Record(Entry{})
	}
	closeNow(t, r)
	if s := r.Stats(); s.Written != 0 || s.Failed != 3 || w.calls != 3 {
		t.Fatalf("Stats %+v after %d calls, want 3 failed after 3 calls", s, w.calls)
	}
}

func TestRecorderPrepares(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	w := &fakeWriter{}
	r := NewRecorder(w, Options{BatchWait: time.Hour, Instance: "inst-1", Now: func() time.Time { return at }})
	creds := []string{"ok", "bad\x1b[2J"}
	r.Record(Entry{Path: "/a\x00b", Reason: strings.Repeat("r", 2000), Credentials: creds})
	r.Record(Entry{ID: "given", Instance: "other", At: at.Add(time.Second)})
	closeNow(t, r)
	got := w.all()
	if len(got) != 2 {
		t.Fatalf("%d entries", len(got))
	}
	e := got[0]
	if !strings.HasPrefix(e.ID, "act_") || len(e.ID) != 36 || !e.At.Equal(at) || e.Instance != "inst-1" {
		t.Fatalf("filled in: %+v", e)
	}
	if e.Path != "/ab" || len(e.Reason) != maxReason || !strings.HasSuffix(e.Reason, "...") || e.Credentials[1] != "bad[2J" {
		t.Fatalf("cleaned: path %q reason %d creds %q", e.Path, len(e.Reason), e.Credentials)
	}
	if creds[1] != "bad\x1b[2J" {
		t.Fatal("the caller's slice was changed")
	}
	if got[1].ID != "given" || got[1].Instance != "other" {
		t.Fatalf("kept: %+v", got[1])
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	a := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	if x, y := NewID(a), NewID(a.Add(time.Nanosecond)); x >= y || x == NewID(a) {
		t.Fatalf("%s %s", x, y)
	}
}

// Record is the proxy's hot path: no allocation.
func TestRecordAllocatesNothing(t *testing.T) {
	// The writer is held at its first batch so that only Observe runs
	// while allocations are counted (AllocsPerRun counts every
	// goroutine's, and the writer's batch copies would be counted too).
	// One block holds every entry (a block is allocated only for a
	// backlog beyond the two the Recorder keeps).
	w := &fakeWriter{gate: make(chan struct{})}
	r := NewRecorder(w, Options{BatchWait: time.Hour, Buffer: 1 << 16, Batch: 1 << 12})
	defer closeNow(t, r)
	defer close(w.gate)
	e := &Entry{Method: "GET", Host: "api.example.com", Credentials: []string{"K"}}
	if n := testing.AllocsPerRun(1000, func() { r.Observe(e) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(&fakeWriter{}, Options{BatchWait: time.Millisecond})
	defer r.Close(context.Background())
	e := &Entry{Method: "GET", Host: "api.example.com"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Observe(e)
		}
	})
}
