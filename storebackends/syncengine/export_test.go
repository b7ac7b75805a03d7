package syncengine

import "time"

// Done is closed when the loop goroutine has exited.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Backoff exposes the back-off computation.
func (e *Engine) Backoff(failures int) time.Duration { return e.backoff(failures) }

// SnapshotID identifies the current snapshot, to tell whether a sync
// swapped in a new one.
func (e *Engine) SnapshotID() any { return e.snap.Load() }

// ContentVersionForTest exposes the derived version of a value.
func ContentVersionForTest(value string) string { return contentVersion(value) }
