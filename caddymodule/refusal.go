package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// refusal is a decision of the pipeline not to forward a request, with
// the status and the reason to give the agent. Reasons never contain
// secret values.
type refusal struct {
	status int
	reason string
	// code is the activity log's word for it (activity.Codes); empty:
	// the one its status implies (codeForStatus).
	code string
	// uncovered is set for a host no service in the session's scope
	// covers: what the agent's answer adds to the reason.
	uncovered *uncoveredDetail
	// retryAfter, when positive, is sent as Retry-After (a 429).
	retryAfter time.Duration
}

// uncoveredDetail is what a refusal of an uncovered host tells the
// agent besides its reason: the host, the session's scope, and how to
// ask for access (empty for a session of no agent, which cannot ask).
type uncoveredDetail struct {
	host  string
	scope []string
	ask   string
}

func (e *refusal) Error() string { return e.reason }

func refused(status int, format string, args ...any) *refusal {
	return &refusal{status: status, reason: fmt.Sprintf(format, args...)}
}

// as sets the refusal's code, where the refusal is made.
func (e *refusal) as(code string) *refusal {
	e.code = code
	return e
}

// codeForStatus is the code of a refusal that names none.
func codeForStatus(status int) string {
	switch status {
	case http.StatusProxyAuthRequired:
		return activity.CodeAuth
	case http.StatusForbidden:
		return activity.CodeForbidden
	case http.StatusMisdirectedRequest:
		return activity.CodeMisdirected
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusHTTPVersionNotSupported:
		return activity.CodeBadRequest
	case http.StatusTooManyRequests:
		return activity.CodeRateLimited
	case http.StatusRequestEntityTooLarge:
		return activity.CodeBodyTooLarge
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return activity.CodeUpstream
	case http.StatusServiceUnavailable:
		return activity.CodeStateUnavailable
	case statusClientClosed:
		return activity.CodeClientClosed
	}
	return activity.CodeInternal
}

// uncoveredHost refuses a request of sess to a host no service in its
// scope covers (what names the target, e.g. "api.example.com:443" or a
// URL), and says what can be done about it: a session of an agent asks
// for access with its own token (an operator approving the request
// grants, or creates, a service for the host); a session of no agent
// cannot file requests, so it is told to ask an operator.
func uncoveredHost(t target, what, why string, sess *sessions.Session) *refusal {
	host := t.host
	if (t.tls && t.port != 443) || (!t.tls && t.port != 80) {
		host = t.hostPort()
	}
	reason := "no service in this session's scope covers " + what
	if why != "" {
		reason += "; " + why
	}
	d := &uncoveredDetail{host: host, scope: append([]string{}, sess.Services...)}
	if sess.Agent == "" {
		reason += "; this session belongs to no agent, so it cannot ask for access itself: ask an operator to add a service for " + host
	} else {
		d.ask = fmt.Sprintf(`POST /api/v1/requests {"host":%q} with your session token`, host)
		reason += "; to ask for access: " + d.ask
	}
	return &refusal{status: http.StatusForbidden, code: activity.CodeUncoveredHost, reason: reason, uncovered: d}
}

// upstreamFailure is a failed exchange with the upstream (dial, TLS,
// reading the answer).
type upstreamFailure struct {
	target target
	err    error
}

func (e *upstreamFailure) Error() string {
	return "upstream " + e.target.String() + " failed: " + upstreamErrorText(e.err)
}

func (e *upstreamFailure) Unwrap() error { return e.err }

// upstreamErrorText drops the *url.Error wrapper, whose text repeats
// the full URL (and so any query credential).
func upstreamErrorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// stateUnavailable refuses every request while the state is unhealthy
// (the database unreachable past max_stale, or a cache that could not
// refresh from it): this broker may have missed a revocation or a
// changed service, so it forwards nothing until the state is back (it
// recovers by itself). Its text is for anyone, unauthenticated clients
// included: it names the backend and how long, never the database's
// own error (user, database, host and port), which is in err for the
// log.
type stateUnavailable struct {
	public string
	err    error
}

func (e *stateUnavailable) Error() string {
	return "the state database is unreachable, so agent-vault refuses requests until it is back: " + e.public
}

func (e *stateUnavailable) Unwrap() error { return e.err }

// stateHealth is what the proxy and the API ask the state database.
type stateHealth interface {
	Healthy() error
}

// stateHealthy is nil while h (nil: no database) is healthy, and a
// *stateUnavailable otherwise.
func stateHealthy(h stateHealth) error {
	if h == nil {
		return nil
	}
	if err := h.Healthy(); err != nil {
		return &stateUnavailable{public: publicStateReason(err), err: err}
	}
	return nil
}

// stateDown is an unhealthy state: public says what and for how long,
// fit for any client; detail is the database's own error, for the log.
type stateDown struct {
	public string
	detail error
}

func (e *stateDown) Error() string { return e.public }
func (e *stateDown) Unwrap() error { return e.detail }

// publicStateReason is the text clients get for an unhealthy state:
// a stateDown's public text, or a fixed one for any other error.
func publicStateReason(err error) string {
	var down *stateDown
	if errors.As(err, &down) {
		return down.public
	}
	return "state database unreachable"
}

// stateDetail is the whole story of an unhealthy state, for the log.
func stateDetail(err error) string {
	var down *stateDown
	if errors.As(err, &down) && down.detail != nil {
		return down.detail.Error()
	}
	return err.Error()
}

// dbHealth is the state database's health as clients may see it: it
// wraps the database's error (which names its user, database, host
// and port) in a stateDown saying only the backend and for how long.
type dbHealth struct {
	db       stateHealth
	backend  string
	maxStale time.Duration
	now      func() time.Time
	badSince atomic.Int64 // unix nanoseconds of the first failure seen; 0 while healthy
}

// Healthy is the database's health; the duration is max_stale plus the
// time since this broker first saw it fail.
func (h *dbHealth) Healthy() error {
	err := h.db.Healthy()
	if err == nil {
		h.badSince.Store(0)
		return nil
	}
	now := h.now().UnixNano()
	h.badSince.CompareAndSwap(0, now)
	down := h.maxStale + time.Duration(now-h.badSince.Load())
	return &stateDown{public: fmt.Sprintf("state %s: database unreachable for more than %v", h.backend, down.Round(time.Second)), detail: err}
}

// statusClientClosed is logged when the agent went away mid-request;
// nobody reads the answer.
const statusClientClosed = 499

// errorResponse is the one place that turns an error of the pipeline
// into the status and reason the agent sees, and the activity log's
// code for it (activity.Codes). Anything it does not know is an
// internal error: refused, never forwarded.
func errorResponse(err error) (status int, reason, code string) {
	var (
		down        *stateUnavailable
		stateErr    *stateError
		ref         *refusal
		unavailable *credentials.UnavailableError
		unusable    *services.UnusableCredentialError
		rewrite     *services.RewriteError
		denied      *egress.RefusedError
		upstream    *upstreamFailure
	)
	switch {
	case errors.As(err, &down):
		return http.StatusServiceUnavailable, down.Error(), activity.CodeStateUnavailable
	case errors.As(err, &stateErr):
		// The database's own error (user, host, database) is for the log.
		return http.StatusServiceUnavailable, "state database error; the broker's log has the details", activity.CodeStateUnavailable
	case errors.As(err, &ref):
		code := ref.code
		if code == "" {
			code = codeForStatus(ref.status)
		}
		return ref.status, ref.reason, code
	case errors.As(err, &unavailable):
		code := activity.CodeStoreStale
		if unavailable.Err == nil {
			code = activity.CodeInternal // no store holds it: the configuration is wrong
		}
		return http.StatusServiceUnavailable, unavailable.Public(), code
	case errors.As(err, &unusable):
		return http.StatusInternalServerError, unusable.Error(), activity.CodeInternal
	case errors.As(err, &rewrite):
		return http.StatusForbidden, "request refused: " + rewrite.Error(), activity.CodePlaceholder
	case errors.As(err, &denied):
		return http.StatusForbidden, denied.Error(), activity.CodeEgressPolicy
	case errors.Is(err, context.Canceled):
		return statusClientClosed, "the client went away", activity.CodeClientClosed
	case errors.As(err, &upstream):
		return http.StatusBadGateway, upstream.Error(), activity.CodeUpstream
	}
	return http.StatusInternalServerError, "internal error", activity.CodeInternal
}

// decisionFor is the activity log's decision for a request the proxy
// did not forward, by its code: the broker tried and failed, or it
// refused.
func decisionFor(code string) activity.Decision {
	switch code {
	case activity.CodeUpstream, activity.CodeInternal, activity.CodeClientClosed:
		return activity.Failed
	}
	return activity.Refused
}

// refusalAnswer is what the agent is told of a refusal: errorResponse's
// status, reason and code, and the details an uncovered host adds.
type refusalAnswer struct {
	status       int
	reason, code string
	uncovered    *uncoveredDetail
	retryAfter   time.Duration
}

// answerFor is the answer for an error of the pipeline.
func answerFor(err error) refusalAnswer {
	a := refusalAnswer{}
	a.status, a.reason, a.code = errorResponse(err)
	var ref *refusal
	if errors.As(err, &ref) {
		a.uncovered, a.retryAfter = ref.uncovered, ref.retryAfter
	}
	return a
}

// refuseEarly answers a request refused before any secret was involved
// (authentication, the CONNECT target, the tunnel's Host), and returns
// what the activity log records of it.
func refuseEarly(w http.ResponseWriter, r *http.Request, err error) refusalAnswer {
	a := answerFor(err)
	writeRefusal(w, r, a, nil)
	return a
}

// writeRefusal answers the agent's request r with a's status, the
// RefusalHeader, and a short body saying why: JSON when r's Accept
// prefers it, text otherwise. Texts are scrubbed by red (nil: nothing
// secret was sent) in case an error quotes something that came back
// from the upstream.
func writeRefusal(w http.ResponseWriter, r *http.Request, a refusalAnswer, red *scrub.Redactor) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(apiwire.RefusalHeader, a.code)
	h.Del("Content-Length")
	if a.retryAfter > 0 {
		// Whole seconds, rounded up: a client that waits that long
		// finds its token back.
		h.Set("Retry-After", strconv.FormatInt(int64((a.retryAfter+time.Second-1)/time.Second), 10))
	}
	d := apiwire.RefusalDetail{Status: a.status, Code: a.code, Reason: red.String(a.reason)}
	if u := a.uncovered; u != nil {
		d.Host, d.Scope, d.RequestAccess = u.host, u.scope, u.ask
	}
	if prefersJSON(r.Header.Get("Accept")) {
		body, _ := json.Marshal(apiwire.ProxyRefusal{Error: d})
		h.Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		w.Write(append(body, '\n'))
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(a.status)
	io.WriteString(w, refusalText(d))
}

// refusalText is the text body of a refusal: the reason on the first
// line (what curl -v and git show), then the facts one per line.
func refusalText(d apiwire.RefusalDetail) string {
	var b strings.Builder
	b.WriteString("agent-vault: " + d.Reason + "\n")
	b.WriteString("refusal: " + d.Code + "\n")
	if d.Host != "" {
		b.WriteString("host: " + d.Host + "\n")
		scope := "(none)"
		if len(d.Scope) > 0 {
			scope = strings.Join(d.Scope, ", ")
		}
		b.WriteString("this session's services: " + scope + "\n")
	}
	if d.RequestAccess != "" {
		b.WriteString("to ask for access: " + d.RequestAccess + "\n")
	}
	return b.String()
}
