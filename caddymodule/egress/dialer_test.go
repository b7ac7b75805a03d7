package egress

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dialRecorder stands in for the network below the egress Dialer. It records
// every address the underlying net.Dialer is about to connect to and vetoes
// anything that is not loopback, so a bug can never make these tests send
// traffic off the machine.
type dialRecorder struct {
	t       *testing.T
	mu      sync.Mutex
	targets []string
}

func (r *dialRecorder) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	r.mu.Lock()
	r.targets = append(r.targets, address)
	r.mu.Unlock()
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		r.t.Errorf("underlying dialer asked to connect to %q; tests may only dial loopback", address)
		return errors.New("test veto: non-loopback dial")
	}
	return nil
}

func (r *dialRecorder) dialed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.targets)
}

// newTestDialer returns an egress Dialer whose underlying net.Dialer is
// guarded by a dialRecorder and whose own Resolver fails the test if it is
// ever used: the egress Dialer must hand it IP literals only.
func newTestDialer(t *testing.T, policy *Policy) (*Dialer, *dialRecorder) {
	rec := &dialRecorder{t: t}
	return &Dialer{
		Policy: policy,
		Dialer: net.Dialer{
			Timeout:        5 * time.Second,
			ControlContext: rec.control,
			Resolver: &net.Resolver{
				PreferGo: true,
				Dial: func(context.Context, string, string) (net.Conn, error) {
					t.Error("underlying net.Dialer resolved a name; it must only get IP literals")
					return nil, errors.New("test veto: underlying resolver used")
				},
			},
		},
	}, rec
}

func mustPolicy(t *testing.T, allowList string) *Policy {
	t.Helper()
	p, err := parseAllowList(allowList)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func listen(t *testing.T, network, address string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, address, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// assertNoConnection checks that nothing connected to ln. Call it only after
// the dial under test has returned: a TCP connect completes before the
// client's dial returns, so a connection made by it would already be queued
// and Accept would return it at once; the deadline only bounds the wait when
// the queue is empty.
func assertNoConnection(t *testing.T, ln *net.TCPListener) {
	t.Helper()
	if err := ln.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err == nil {
		conn.Close()
		t.Fatal("listener accepted a connection; the dial should have been refused before connecting")
	}
	if !isTimeout(err) {
		t.Fatalf("accept: %v", err)
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// acceptOne returns the next connection to ln, failing the test if none
// arrives promptly.
func acceptOne(t *testing.T, ln *net.TCPListener) net.Conn {
	t.Helper()
	if err := ln.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func requireRefused(t *testing.T, err error, host string) *RefusedError {
	t.Helper()
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("dial error = %v, want a *RefusedError", err)
	}
	if refused.Host != host {
		t.Errorf("RefusedError.Host = %q, want %q", refused.Host, host)
	}
	return refused
}

func TestDialLoopbackRefusedByDefault(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	d, rec := newTestDialer(t, nil)

	conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err == nil {
		conn.Close()
		t.Fatal("dial to loopback succeeded with the default policy")
	}
	refused := requireRefused(t, err, "127.0.0.1")
	if refused.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("RefusedError.Addr = %s", refused.Addr)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	assertNoConnection(t, ln)
}

func TestDialMappedLoopbackRefusedByDefault(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	d, rec := newTestDialer(t, nil)
	port := ln.Addr().(*net.TCPAddr).Port

	_, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("::ffff:127.0.0.1", itoa(port)))
	requireRefused(t, err, "::ffff:127.0.0.1")
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	assertNoConnection(t, ln)
}

func TestDialLoopbackAllowed(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))

	conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial with 127.0.0.0/8 allowed: %v", err)
	}
	defer conn.Close()
	server := acceptOne(t, ln)
	if conn.LocalAddr().String() != server.RemoteAddr().String() {
		t.Errorf("accepted connection from %s, dialed from %s", server.RemoteAddr(), conn.LocalAddr())
	}
	if got, want := rec.dialed(), []string{ln.Addr().String()}; !slices.Equal(got, want) {
		t.Errorf("dialed %v, want %v", got, want)
	}
}

func TestDialLocalhostRefusedByDefault(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	d, rec := newTestDialer(t, nil)
	port := ln.Addr().(*net.TCPAddr).Port

	// "localhost" goes through the system resolver (normally /etc/hosts).
	_, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", itoa(port)))
	refused := requireRefused(t, err, "localhost")
	if !refused.Addr.IsLoopback() {
		t.Errorf("RefusedError.Addr = %s, want a loopback address", refused.Addr)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	assertNoConnection(t, ln)
}

func TestDialIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	tcpLn := ln.(*net.TCPListener)

	t.Run("refused by default", func(t *testing.T) {
		d, rec := newTestDialer(t, nil)
		_, err := d.DialContext(context.Background(), "tcp6", ln.Addr().String())
		requireRefused(t, err, "::1")
		if got := rec.dialed(); len(got) != 0 {
			t.Errorf("underlying dialer was called for %v", got)
		}
		assertNoConnection(t, tcpLn)
	})
	t.Run("allowed", func(t *testing.T) {
		d, _ := newTestDialer(t, mustPolicy(t, "::1/128"))
		conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial with ::1/128 allowed: %v", err)
		}
		defer conn.Close()
		acceptOne(t, tcpLn)
	})
}

func TestDialRejectsBadInput(t *testing.T) {
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	// Keep any name lookups on loopback.
	d.Resolver = startFakeDNS(t, "127.0.0.1").resolver()
	tests := []struct {
		network, address string
	}{
		{"udp", "127.0.0.1:53"},
		{"unix", "/tmp/socket"},
		{"ip", "127.0.0.1:80"},
		{"", "127.0.0.1:80"},
		{"tcp", "127.0.0.1"},    // no port
		{"tcp", ":80"},          // empty host would mean the local system
		{"tcp", "[::1]80"},      // malformed
		{"tcp", "example.com"},  // no port
		{"tcp", "[]:80"},        // empty bracketed host
		{"tcp", "a:b:c"},        // too many colons
		{"tcp", "exa mple:443"}, // resolver rejects it
	}
	for _, tt := range tests {
		conn, err := d.DialContext(context.Background(), tt.network, tt.address)
		if err == nil {
			conn.Close()
			t.Errorf("DialContext(%q, %q) succeeded, want error", tt.network, tt.address)
			continue
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			t.Errorf("DialContext(%q, %q) = %v; bad input is not a policy refusal", tt.network, tt.address, err)
		}
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
}

func TestDialZeroValue(t *testing.T) {
	var d Dialer // nil Policy and Resolver
	_, err := d.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	refused := requireRefused(t, err, "169.254.169.254")
	if refused.Reason != "the cloud metadata address (link-local)" {
		t.Errorf("Reason = %q", refused.Reason)
	}
}

// fakeDNS is a minimal DNS server on loopback UDP that answers every A and
// AAAA query with a fixed list of addresses and counts the queries, so tests
// can drive the real net.Resolver code path with chosen answers.
type fakeDNS struct {
	conn     net.PacketConn
	answers  []netip.Addr
	aQueries atomic.Int32
}

const (
	dnsTypeA    = 1
	dnsTypeAAAA = 28
	dnsClassIN  = 1
)

func startFakeDNS(t *testing.T, answers ...string) *fakeDNS {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeDNS{conn: conn}
	for _, a := range answers {
		s.answers = append(s.answers, netip.MustParseAddr(a))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

func (s *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed by cleanup
		}
		if resp := s.respond(buf[:n]); resp != nil {
			s.conn.WriteTo(resp, from)
		}
	}
}

// respond builds the reply to one query, or returns nil to drop a packet it
// does not understand.
func (s *fakeDNS) respond(query []byte) []byte {
	const headerLen = 12
	if len(query) < headerLen || binary.BigEndian.Uint16(query[4:6]) != 1 {
		return nil
	}
	// Skip the question name (uncompressed labels ending in a zero byte).
	end := headerLen
	for end < len(query) && query[end] != 0 {
		end += 1 + int(query[end])
	}
	end += 1 + 4 // zero byte, QTYPE, QCLASS
	if end > len(query) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(query[end-4 : end-2])

	var records [][]byte
	for _, a := range s.answers {
		if (qtype == dnsTypeA && a.Is4()) || (qtype == dnsTypeAAAA && a.Is6()) {
			records = append(records, a.AsSlice())
		}
	}
	if qtype == dnsTypeA {
		s.aQueries.Add(1)
	}

	resp := make([]byte, 0, 512)
	resp = append(resp, query[0:2]...)                 // ID
	resp = binary.BigEndian.AppendUint16(resp, 0x8180) // response, recursion desired+available, NOERROR
	resp = binary.BigEndian.AppendUint16(resp, 1)      // QDCOUNT
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(records)))
	resp = binary.BigEndian.AppendUint16(resp, 0) // NSCOUNT
	resp = binary.BigEndian.AppendUint16(resp, 0) // ARCOUNT
	resp = append(resp, query[headerLen:end]...)  // question, echoed
	for _, rdata := range records {
		resp = append(resp, 0xc0, headerLen) // name: pointer to the question name
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, dnsClassIN)
		resp = binary.BigEndian.AppendUint32(resp, 60) // TTL
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	return resp
}

// resolver returns a pure-Go resolver that sends every query to s.
func (s *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp4", s.conn.LocalAddr().String())
		},
	}
}

func TestDialRefusesMixedAnswersWithoutDialing(t *testing.T) {
	// The public address comes first: one refused answer anywhere must
	// refuse the whole name. 93.184.216.34 is data only; the dialRecorder
	// would veto it.
	dns := startFakeDNS(t, "93.184.216.34", "10.0.0.7")
	d, rec := newTestDialer(t, nil)
	d.Resolver = dns.resolver()

	conn, err := d.DialContext(context.Background(), "tcp", "mixed.test:443")
	if err == nil {
		conn.Close()
		t.Fatal("dial succeeded for a name with a private answer")
	}
	refused := requireRefused(t, err, "mixed.test")
	if refused.Addr != netip.MustParseAddr("10.0.0.7") {
		t.Errorf("RefusedError.Addr = %s, want 10.0.0.7", refused.Addr)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	if got := dns.aQueries.Load(); got != 1 {
		t.Errorf("resolver sent %d A queries, want exactly 1", got)
	}
}

func TestDialResolvesOnceAndDialsCheckedAddresses(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	port := itoa(ln.Addr().(*net.TCPAddr).Port)
	// 127.0.0.2 has no listener on this port, so the dialer must fall
	// through to the next checked answer.
	dns := startFakeDNS(t, "127.0.0.2", "127.0.0.1")
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	d.Resolver = dns.resolver()

	conn, err := d.DialContext(context.Background(), "tcp4", net.JoinHostPort("upstream.test", port))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	acceptOne(t, ln)

	want := []string{"127.0.0.2:" + port, "127.0.0.1:" + port}
	if got := rec.dialed(); !slices.Equal(got, want) {
		t.Errorf("dialed %v, want %v (resolved answers, in order)", got, want)
	}
	if got := dns.aQueries.Load(); got != 1 {
		t.Errorf("resolver sent %d A queries, want exactly 1", got)
	}
}

func TestDialReturnsLastErrorWhenAllFail(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	port := itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // nothing listens on this port any more
	dns := startFakeDNS(t, "127.0.0.2", "127.0.0.3")
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	d.Resolver = dns.resolver()

	_, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("down.test", port))
	if err == nil {
		t.Fatal("dial succeeded with no listener")
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		t.Fatalf("unreachable upstream reported as refused: %v", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Addr == nil || opErr.Addr.String() != "127.0.0.3:"+port {
		t.Errorf("error = %v, want the dial error for the last address", err)
	}
	if got := len(rec.dialed()); got != 2 {
		t.Errorf("dialed %d addresses, want 2", got)
	}
}

func TestDialNoAnswers(t *testing.T) {
	dns := startFakeDNS(t) // NOERROR with no records
	d, rec := newTestDialer(t, mustPolicy(t, "0.0.0.0/0"))
	d.Resolver = dns.resolver()

	_, err := d.DialContext(context.Background(), "tcp", "empty.test:443")
	if err == nil {
		t.Fatal("dial succeeded for a name without addresses")
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		t.Errorf("error = %v; an empty answer is not a policy refusal", err)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
}

func TestDialHonoursCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	if _, err := d.DialContext(ctx, "tcp", "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
}

func itoa(port int) string { return strconv.Itoa(port) }
