// Package clienthello reads the server name (SNI) a TLS client asks
// for from the first bytes of its connection, without answering: what a
// proxy that relays TLS unread needs to check where a tunnel goes. The
// ClientHello is parsed by crypto/tls itself (a server handshake over a
// connection that records what it reads and drops what it writes,
// stopped by GetConfigForClient), so it reads exactly what Go's TLS
// server would accept, and rejects the same malformed input.
package clienthello

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxBytes bounds what Read consumes. A ClientHello is one handshake
// message of at most 64 KiB (crypto/tls's limit) in records of at most
// 16 KiB each, so 64 KiB of message plus the records' headers and one
// read past the end fit.
const MaxBytes = 128 << 10

// errStop ends the handshake once the ClientHello has been parsed.
var errStop = errors.New("clienthello: parsed")

// Read reads one TLS ClientHello from r and returns the host name its
// server_name extension carries ("" when it has none) and every byte
// read from r, which the caller forwards to the server before anything
// else. It reads at most MaxBytes. An error means r did not start with
// a ClientHello crypto/tls accepts (not TLS, malformed, too large, or
// r failed or ended first); consumed is what was read anyway.
func Read(r io.Reader) (serverName string, consumed []byte, err error) {
	rec := &recorder{r: io.LimitReader(r, MaxBytes)}
	parsed := false
	srv := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			serverName, parsed = hello.ServerName, true
			return nil, errStop
		},
	})
	herr := srv.Handshake()
	if parsed {
		return serverName, rec.buf, nil
	}
	if herr == nil { // cannot happen: GetConfigForClient always stops it
		herr = errors.New("handshake ended without a ClientHello")
	}
	return "", rec.buf, fmt.Errorf("no TLS ClientHello: %w", herr)
}

// recorder is the connection the TLS server reads the ClientHello
// from: it keeps every byte it hands over and drops the alert the
// server writes when errStop ends the handshake.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

func (c *recorder) Write(p []byte) (int, error)      { return len(p), nil }
func (c *recorder) Close() error                     { return nil }
func (c *recorder) LocalAddr() net.Addr              { return dummyAddr{} }
func (c *recorder) RemoteAddr() net.Addr             { return dummyAddr{} }
func (c *recorder) SetDeadline(time.Time) error      { return nil }
func (c *recorder) SetReadDeadline(time.Time) error  { return nil }
func (c *recorder) SetWriteDeadline(time.Time) error { return nil }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "clienthello" }
func (dummyAddr) String() string  { return "clienthello" }
