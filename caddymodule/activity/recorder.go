package activity

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultBuffer       = 8192
	DefaultBatch        = 500
	DefaultBatchWait    = 200 * time.Millisecond
	DefaultRetries      = 3
	DefaultRetryWait    = 100 * time.Millisecond
	DefaultWriteTimeout = 10 * time.Second
)

// dropLogEvery bounds how often the writer logs that entries were
// dropped: a flood of drops must not become a flood of log lines.
const dropLogEvery = time.Minute

// Options tune a Recorder; every zero field is its default.
type Options struct {
	// Buffer is how many entries wait for the writer (DefaultBuffer);
	// beyond it Record drops them.
	Buffer int
	// Batch is the most entries one transaction writes (DefaultBatch);
	// BatchWait the longest the writer waits for a batch to fill after
	// its first entry (DefaultBatchWait).
	Batch     int
	BatchWait time.Duration
	// Retries is how many times a failed batch is tried again
	// (DefaultRetries; negative: never), waiting RetryWait, then twice
	// that, and so on (DefaultRetryWait), before it is dropped and
	// counted as Failed.
	Retries   int
	RetryWait time.Duration
	// WriteTimeout bounds each insert (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Instance fills an entry's empty Instance (the broker's id).
	Instance string
	// Now is the clock for an entry's zero At and for the id (nil:
	// time.Now).
	Now func() time.Time
	// After is the timer of the batch and retry waits (nil:
	// time.After); tests fire it by hand.
	After func(time.Duration) <-chan time.Time
	// Logger gets failed batches and drops (never an entry's fields);
	// nil logs nothing.
	Logger *zap.Logger
}

// Stats are a Recorder's counts since it was made.
type Stats struct {
	// Written entries are stored.
	Written uint64
	// Dropped entries found the buffer full (or the Recorder closed).
	Dropped uint64
	// Failed entries were in batches the store refused every time.
	Failed uint64
	// Queued entries wait in the buffer or in the batch being written.
	Queued int
}

// Recorder writes entries to a Writer asynchronously: Record only puts
// the entry in a bounded buffer (never blocking, never doing I/O), and
// one goroutine writes batches of them, each in one transaction. It is
// safe for concurrent use; Close flushes what is buffered.
//
// The buffer is a queue of blocks of up to Batch entries each: Record
// appends to the last block, the writer takes the first one whole. So
// the writer is woken once a batch (by its first entry, and when its
// block fills), not once an entry as a channel receive would wake it,
// and the memory the garbage collector scans at every cycle is the two
// blocks in use, not a whole buffer of empty slots.
type Recorder struct {
	w    Writer
	o    Options
	done chan struct{} // closed by Close: drain and exit
	// abort is closed when Close's deadline passes: the write in
	// flight is cancelled and the rest is given up.
	abort  chan struct{}
	base   context.Context // cancelled with abort
	cancel context.CancelFunc
	exited chan struct{}
	// wake tells the writer that entries wait: the buffer was empty,
	// or a block filled. One signal waiting is enough (the writer
	// looks at the buffer itself), so a Record never blocks on it.
	wake      chan struct{}
	closeOnce sync.Once
	abortOnce sync.Once

	// mu guards the buffer and closed: Record appends under it, so
	// once Close has set closed no Record is in flight and every entry
	// is in the buffer, to be written or counted.
	mu     sync.Mutex
	closed bool
	blocks [][]Entry // the buffer, oldest first; each block 1..Batch entries
	queued int       // entries in blocks, at most Buffer
	free   [][]Entry // emptied blocks for reuse (at most spareBlocks)

	written, dropped, failed atomic.Uint64
	// held is how many entries the writer has taken from the buffer:
	// the batch being written.
	held atomic.Int64

	// The writer goroutine's own state.
	failing        bool
	droppedLogged  uint64
	lastDropLogged time.Time
	unwritten      int // entries taken but not written when Close aborted
}

// spareBlocks is how many emptied blocks the Recorder keeps: one being
// filled while the writer writes the other, the steady state; the
// blocks a backlog needed beyond them go to the garbage collector.
const spareBlocks = 2

// NewRecorder starts a Recorder writing to w.
func NewRecorder(w Writer, o Options) *Recorder {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.BatchWait <= 0 {
		o.BatchWait = DefaultBatchWait
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.RetryWait <= 0 {
		o.RetryWait = DefaultRetryWait
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
	r := &Recorder{w: w, o: o, done: make(chan struct{}), abort: make(chan struct{}), exited: make(chan struct{}),
		wake: make(chan struct{}, 1)}
	// The steady state's blocks, made now so that Record does not
	// allocate (a block is allocated only for a backlog).
	for range spareBlocks {
		r.free = append(r.free, make([]Entry, 0, r.blockSize()))
	}
	r.base, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r
}

// blockSize is the capacity of a block: a batch, unless the whole
// buffer is smaller.
func (r *Recorder) blockSize() int { return min(r.o.Batch, r.o.Buffer) }

// Record queues e for writing. It never blocks and does no I/O: when
// the buffer is full (the database is slow or down) or the Recorder is
// closed, e is dropped and counted. The writer fills in an empty ID,
// a zero At and an empty Instance, and cleans the text fields.
func (r *Recorder) Record(e Entry) { r.record(&e) }

// Observe is Record for the proxy's observer (it copies *e).
func (r *Recorder) Observe(e *Entry) { r.record(e) }

func (r *Recorder) record(e *Entry) {
	r.mu.Lock()
	if r.closed || r.queued >= r.o.Buffer {
		r.mu.Unlock()
		r.dropped.Add(1)
		return
	}
	n := len(r.blocks)
	if n == 0 || len(r.blocks[n-1]) == cap(r.blocks[n-1]) {
		r.blocks = append(r.blocks, r.newBlock())
		n++
	}
	last := &r.blocks[n-1]
	*last = append(*last, *e)
	r.queued++
	signal := r.queued == 1 || len(*last) == cap(*last)
	r.mu.Unlock()
	if signal {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// newBlock is an empty block, a spare one if any (r.mu held).
func (r *Recorder) newBlock() []Entry {
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free = r.free[:n-1]
		return b
	}
	return make([]Entry, 0, r.blockSize())
}

// Stats returns the counts.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	queued := r.queued
	r.mu.Unlock()
	return Stats{Written: r.written.Load(), Dropped: r.dropped.Load(), Failed: r.failed.Load(),
		Queued: queued + int(r.held.Load())}
}

// Close stops taking entries and writes what is buffered, until done
// or ctx ends (give it a deadline): then the write in flight is
// cancelled, and the error says how many entries were not written.
// Later calls return nil at once.
func (r *Recorder) Close(ctx context.Context) error {
	first := false
	r.closeOnce.Do(func() {
		first = true
		r.mu.Lock() // waits for the Record in flight
		r.closed = true
		r.mu.Unlock()
		close(r.done)
	})
	if !first {
		<-r.exited
		return nil
	}
	select {
	case <-r.exited:
	case <-ctx.Done():
		r.abortOnce.Do(func() {
			close(r.abort)
			r.cancel()
		})
		<-r.exited
	}
	r.cancel()
	// The writer has exited: its unwritten is ours to read, and what
	// is left in the buffer (no Record adds any more) is emptied, so
	// Stats counts it once, as dropped, not also as queued.
	r.mu.Lock()
	left := r.unwritten + r.queued
	r.blocks, r.queued = nil, 0
	r.mu.Unlock()
	if left > 0 {
		r.dropped.Add(uint64(left))
		return fmt.Errorf("activity: %d buffered entries not written before shutdown: %w", left, context.Cause(ctx))
	}
	return nil
}

// run is the writer goroutine.
func (r *Recorder) run() {
	defer close(r.exited)
	var batch []Entry
	for {
		if !r.waitForBatch() {
			r.drain(batch)
			return
		}
		batch = r.take(batch)
		if !r.write(batch) {
			// Close's deadline passed while this batch was written
			// (Close ran while the batch was in flight): Close counts
			// it, with what is still buffered, as not written.
			r.unwritten = len(batch)
			return
		}
		r.logDrops()
	}
}

// waitForBatch waits for an entry, then up to BatchWait for its batch
// (the first block) to fill. It reports false when Close has begun.
func (r *Recorder) waitForBatch() bool {
	for r.firstBlock() == 0 {
		select {
		case <-r.wake:
		case <-r.done:
			return false
		}
	}
	if r.firstBlock() == r.blockSize() {
		return true
	}
	wait := r.o.After(r.o.BatchWait)
	for {
		select {
		case <-r.wake:
			if r.firstBlock() == r.blockSize() {
				return true
			}
		case <-wait:
			return true
		case <-r.done:
			return false
		}
	}
}

// firstBlock is how many entries the first block holds: the next batch.
func (r *Recorder) firstBlock() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.blocks) == 0 {
		return 0
	}
	return len(r.blocks[0])
}

// take returns the first block as the next batch (none: empty), which
// Stats then counts as held, and gives the previous batch's block back
// for reuse.
func (r *Recorder) take(prev []Entry) []Entry {
	clear(prev) // the entries' strings are not kept alive by a spare block
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev != nil && len(r.free) < spareBlocks {
		r.free = append(r.free, prev[:0])
	}
	if len(r.blocks) == 0 {
		return nil
	}
	batch := r.blocks[0]
	// Shifted down (a few slice headers), so the spine's array is
	// reused rather than regrown by Record.
	n := copy(r.blocks, r.blocks[1:])
	r.blocks[n] = nil
	r.blocks = r.blocks[:n]
	r.queued -= len(batch)
	r.held.Store(int64(len(batch)))
	return batch
}

// drain writes everything buffered, batch by batch, unless Close's
// deadline passes.
func (r *Recorder) drain(batch []Entry) {
	for {
		batch = r.take(batch)
		if len(batch) == 0 {
			return
		}
		if r.aborted() || !r.write(batch) && r.aborted() {
			r.unwritten = len(batch)
			r.held.Store(0) // Close counts them as dropped
			return
		}
	}
}

// write stores batch in one transaction, trying again after a failure
// with a doubling wait, then gives it up (Failed).
// It reports false when Close's deadline cut it short.
func (r *Recorder) write(batch []Entry) bool {
	defer r.held.Store(0) // written, or given up and counted
	for i := range batch {
		r.prepare(&batch[i])
	}
	wait := r.o.RetryWait
	var err error
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(r.base, r.o.WriteTimeout)
		err = r.w.InsertActivity(ctx, batch)
		cancel()
		if err == nil {
			r.written.Add(uint64(len(batch)))
			if r.failing && r.o.Logger != nil {
				r.o.Logger.Info("activity entries are written again")
			}
			r.failing = false
			return true
		}
		if attempt >= r.o.Retries || r.aborted() {
			break
		}
		select {
		case <-r.o.After(wait):
		case <-r.abort:
		}
		wait *= 2
	}
	if r.aborted() {
		return false // Close counts what is left
	}
	n := r.failed.Add(uint64(len(batch)))
	if !r.failing && r.o.Logger != nil {
		r.o.Logger.Error("activity entries not written and dropped: the store refused the batch",
			zap.Int("entries", len(batch)), zap.Int("attempts", r.o.Retries+1), zap.Uint64("failed_total", n), zap.Error(err))
	}
	r.failing = true
	return true
}

func (r *Recorder) aborted() bool {
	select {
	case <-r.abort:
		return true
	default:
		return false
	}
}

// logDrops logs, at most once per dropLogEvery, that entries were
// dropped since the last such line.
func (r *Recorder) logDrops() {
	d := r.dropped.Load()
	if d == r.droppedLogged || r.o.Logger == nil {
		return
	}
	now := r.o.Now()
	if !r.lastDropLogged.IsZero() && now.Sub(r.lastDropLogged) < dropLogEvery {
		return
	}
	r.o.Logger.Warn("activity entries dropped: the buffer was full (the state database is slow or down)",
		zap.Uint64("dropped", d-r.droppedLogged), zap.Uint64("dropped_total", d), zap.Int("buffer", r.o.Buffer))
	r.droppedLogged, r.lastDropLogged = d, now
}
