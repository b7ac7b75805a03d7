// Package capread reads a stream up to a cap and fails past it, instead
// of truncating silently: the store clients' response bodies, the
// proxy's request bodies of unknown length and its scanned responses.
package capread

import "io"

// Reader reads R up to Left bytes; a read past them fails with Err.
// Nothing past the cap is returned.
type Reader struct {
	R    io.Reader
	Left int64
	Err  error
}

func (c *Reader) Read(p []byte) (int, error) {
	if c.Left <= 0 {
		// One byte more tells a stream of exactly the cap from a longer one.
		var one [1]byte
		n, err := c.R.Read(one[:])
		if n > 0 {
			return 0, c.Err
		}
		return 0, err
	}
	if int64(len(p)) > c.Left {
		p = p[:c.Left]
	}
	n, err := c.R.Read(p)
	c.Left -= int64(n)
	return n, err
}

// ReadCloser is a Reader that closes what it reads.
type ReadCloser struct {
	Reader
	io.Closer
}

// NewReadCloser caps rc at max bytes, failing past them with err.
func NewReadCloser(rc io.ReadCloser, max int64, err error) *ReadCloser {
	return &ReadCloser{Reader{R: rc, Left: max, Err: err}, rc}
}
