package caddymodule

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/internal/capread"
)

// The response side of the pipeline: the reverse proxy's hooks, and the
// writer that scrubs what it relays outside them.

func exchangeOf(r *http.Request) *exchange { return r.Context().Value(exchangeKey{}).(*exchange) }

// rewrite points the outgoing request at the target the CONNECT line
// or absolute URL fixed; nothing in the request can change it.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In)
	pr.Out.URL.Scheme = "http"
	if x.target.tls {
		pr.Out.URL.Scheme = "https"
	}
	pr.Out.URL.Host = x.target.hostPort()
	pr.Out.Host = pr.In.Host
	pr.Out.URL.User = nil // never on the wire; clients send credentials in headers
	pr.Out.Header.Del("Proxy-Authorization")
}

// scrubResponse keeps secrets the upstream echoes back away from the
// agent. A body it cannot scan is refused rather than passed on.
func (p *Proxy) scrubResponse(res *http.Response) error {
	// Only the proxy's own answers carry it: an upstream's would pass
	// for a refusal (and its text for the proxy's advice).
	res.Header.Del(apiwire.RefusalHeader)
	red := exchangeOf(res.Request).redactor
	if red == nil {
		return nil
	}
	red.Header(res.Header)
	// The trailer names the upstream announced: ReverseProxy writes
	// them in the agent's Trailer header before the body, from these
	// keys. The values arrive with the end of the body and are scrubbed
	// in Close, which also drops a secret-named trailer the transport
	// adds back then.
	red.Header(res.Trailer)
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The handshake is scrubbed. A WebSocket stream is parsed and
		// scanned frame by frame (websocket.go); the stream of a
		// protocol the service lists in allow_upgrades is not.
		if !isWebSocket(res) {
			return nil
		}
		if err := checkWebSocketAnswer(res); err != nil {
			return err
		}
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			res.Body = p.newWSRelay(rwc, exchangeOf(res.Request))
		}
		return nil
	}
	codings := contentCodings(res.Header)
	gzipped := len(codings) == 1 && strings.EqualFold(codings[0], "gzip")
	if gzipped {
		// The agent gets the body decoded, so its length is unknown
		// until it is: whatever the upstream said describes the
		// compressed bytes.
		res.Header.Del("Content-Encoding")
		res.Header.Del("Content-Length")
	}
	if noBody(res) {
		return nil // nothing to decode or scan, whatever the coding
	}
	if len(codings) > 0 && !gzipped {
		return refused(http.StatusBadGateway, "upstream sent a %s-encoded response that cannot be scanned for echoed credentials",
			strings.Join(codings, "+"))
	}
	if p.maxResponseBody > 0 && !gzipped && res.ContentLength > p.maxResponseBody {
		res.Body.Close()
		return p.responseTooLarge()
	}
	src := io.Reader(res.Body)
	buffered := res.ContentLength >= 0 && res.ContentLength <= maxBufferedScan
	if gzipped {
		zr, err := gzip.NewReader(res.Body)
		switch {
		case err == io.EOF:
			src = strings.NewReader("") // an empty body claiming gzip (as Go's own transport reads it)
		case err != nil:
			res.Body.Close()
			return refused(http.StatusBadGateway, "upstream sent a gzip-encoded response that is not valid gzip")
		default:
			src = zr
		}
	}
	if p.maxResponseBody > 0 {
		src = noteCut{&capread.Reader{R: src, Left: p.maxResponseBody, Err: p.responseTooLarge()}, exchangeOf(res.Request)}
	}
	if buffered {
		// A short body of known length is scanned whole, so its length
		// stays known and it leaves in one write. Decoded, it is read
		// only up to the same bound, so a small gzip body that inflates
		// beyond it (a gzip bomb) is streamed instead of held.
		body, err := io.ReadAll(io.LimitReader(src, maxBufferedScan+1))
		if err != nil {
			res.Body.Close()
			var ref *refusal
			if errors.As(err, &ref) {
				return ref // over max_response_body
			}
			return refused(http.StatusBadGateway, "reading the upstream response failed")
		}
		if len(body) <= maxBufferedScan {
			res.Body.Close() // populates res.Trailer
			red.Header(res.Trailer)
			out := red.String(string(body))
			res.Body = io.NopCloser(strings.NewReader(out))
			res.ContentLength = int64(len(out))
			res.Header.Set("Content-Length", strconv.Itoa(len(out)))
			return nil
		}
		src = io.MultiReader(bytes.NewReader(body), src) // only a decoded body gets here
	}
	// A read error (a truncated or corrupt gzip stream among them) ends
	// the relay: ReverseProxy aborts the agent's response rather than
	// finishing it as if it were whole.
	res.Body = &redactedBody{Reader: red.Reader(src), body: res.Body, res: res, redactor: red}
	res.Header.Del("Content-Length") // redaction may change the length
	res.ContentLength = -1
	return nil
}

// responseTooLarge refuses a scanned response over max_response_body.
func (p *Proxy) responseTooLarge() *refusal {
	return refused(http.StatusBadGateway, "the upstream's response is larger than the proxy scans (max_response_body %s)", p.MaxResponseBody).
		as(activity.CodeResponseTooLarge)
}

// noteCut records on the exchange why the relay of its scanned body
// was cut (over max_response_body once the headers went out), so that
// its log line and activity entry say so; the status sent stays.
type noteCut struct {
	io.Reader
	x *exchange
}

func (n noteCut) Read(b []byte) (int, error) {
	k, err := n.Reader.Read(b)
	var ref *refusal
	if err != nil && errors.As(err, &ref) {
		n.x.refusal, n.x.code = ref.reason, ref.code
	}
	return k, err
}

// contentCodings lists the codings applied to a body, over every
// Content-Encoding line in order; identity, which is no coding, is left
// out.
func contentCodings(h http.Header) []string {
	var codings []string
	for _, v := range h.Values("Content-Encoding") {
		for ce := range strings.SplitSeq(v, ",") {
			if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
				codings = append(codings, ce)
			}
		}
	}
	return codings
}

// maxBufferedScan is the largest known-length response body scanned in
// one piece; longer or unknown-length bodies are scanned as a stream.
const maxBufferedScan = 256 << 10

// redactedBody streams a scanned body. ReverseProxy copies trailers
// after closing the body, so Close scans them too.
type redactedBody struct {
	io.Reader
	body     io.Closer
	res      *http.Response
	redactor *scrub.Redactor
}

func (b *redactedBody) Close() error {
	err := b.body.Close()
	b.redactor.Header(b.res.Trailer)
	return err
}

// noBody reports responses that carry no body whatever their headers say.
func noBody(res *http.Response) bool {
	return res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified || (res.StatusCode >= 100 && res.StatusCode < 200)
}

// upstreamError answers a refused answer (from scrubResponse) or a
// failed upstream exchange, without leaking the request URL (which may
// hold an injected query credential).
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r)
	var ref *refusal
	if !errors.As(err, &ref) {
		err = &upstreamFailure{target: x.target, err: err}
	}
	p.refuse(w, x, err)
}

// copyBuffers recycles the reverse proxy's copy buffers; allocating
// 32 KiB per response showed up in the proxy's CPU profile (GC).
var copyBuffers = &bufferPool{sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return b.p.Get().(*[32 << 10]byte)[:] }
func (b *bufferPool) Put(x []byte) { b.p.Put((*[32 << 10]byte)(x)) }

// statusRecorder remembers the status and body size for the log line,
// and scrubs informational responses, which ReverseProxy relays
// straight from the transport, bypassing ModifyResponse.
type statusRecorder struct {
	http.ResponseWriter
	x     *exchange
	code  int
	bytes int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// 103 Early Hints and the like: not the final status.
		s.x.redactor.Header(s.Header())
		s.ResponseWriter.WriteHeader(code)
		return
	}
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
