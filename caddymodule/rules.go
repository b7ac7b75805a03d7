package caddymodule

// The services' rules, as a step of the pipeline (prepare, right after
// match): methods and paths, the rate limit and the request body cap;
// and the per-session cap on requests in flight (forward). Each refuses
// before anything leaves.

import (
	"net/http"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/internal/capread"
)

// checkRules applies the matched service's rules to the request (none
// without a service: an uncovered host under `unmatched tunnel`). The
// rate limit counts only requests the other rules let through.
func (p *Proxy) checkRules(x *exchange) error {
	svc := x.svc
	if svc == nil {
		return nil
	}
	name := svc.Service.Name
	if !svc.AllowsMethod(x.r.Method) {
		return refused(http.StatusForbidden, "service %s does not allow method %s (its methods: %v)", name, x.r.Method, svc.Service.Methods).
			as(activity.CodeMethodNotAllowed)
	}
	if !svc.AllowsPath(x.path) {
		return refused(http.StatusForbidden, "service %s does not allow this path (its paths: %v)", name, svc.Service.Paths).
			as(activity.CodePathNotAllowed)
	}
	if max := svc.MaxRequestBody(); max > 0 {
		if x.r.ContentLength > max {
			return tooLarge(name, svc.Service.MaxRequestBody)
		}
		if x.r.ContentLength < 0 && x.r.Body != nil && x.r.Body != http.NoBody {
			x.r.Body = capread.NewReadCloser(x.r.Body, max, tooLarge(name, svc.Service.MaxRequestBody))
		}
	}
	if rate := svc.RateLimit(); !rate.IsZero() {
		if ok, wait := p.rates.Take(x.sess.ID+"\x00"+name, rate.Count, rate.Per); !ok {
			r := refused(http.StatusTooManyRequests, "service %s allows %s per session; try again later", name, svc.Service.RateLimit).
				as(activity.CodeRateLimited)
			r.retryAfter = wait
			return r
		}
	}
	return nil
}

func tooLarge(service, max string) *refusal {
	return refused(http.StatusRequestEntityTooLarge, "the request body is larger than service %s allows (%s)", service, max).
		as(activity.CodeBodyTooLarge)
}

// acquireSlot takes one of the session's slots for requests in flight,
// or refuses with 429.
func (p *Proxy) acquireSlot(x *exchange) (release func(), err error) {
	release, ok := p.slots.Acquire(x.sess.ID, p.MaxConcurrentPerSession)
	if !ok {
		r := refused(http.StatusTooManyRequests, "this session already has %d requests in flight (max_concurrent_per_session)", p.MaxConcurrentPerSession).
			as(activity.CodeConcurrency)
		r.retryAfter = time.Second
		return nil, r
	}
	return release, nil
}
