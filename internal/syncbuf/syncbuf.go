// Package syncbuf is a bytes.Buffer that many goroutines may write at
// once: tests hand it to loggers and child processes as their output,
// and read it while those still write.
package syncbuf

import (
	"bytes"
	"io"
	"sync"
)

// Buffer collects what is written to it. The zero Buffer is empty and
// ready; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var _ io.Writer = (*Buffer)(nil)

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
