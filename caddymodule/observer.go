package caddymodule

// What the proxy tells about each request: one activity.Entry, handed
// to the app's observer (the metrics; helper A's activity Recorder
// joins the tee). STOPGAP until the activity branch lands: its hooks
// (forward.go logExchange, the 407s, the CONNECT refusals) and its
// refusal codes replace observeExchange and stopgapCode.

import (
	"net/http"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
)

// activityObserver is what the proxy calls for every entry. Observe must be
// cheap and never block: it runs on the request's goroutine.
type activityObserver interface {
	Observe(*activity.Entry)
}

// observers is a tee: each entry goes to every observer, in order.
type observers []activityObserver

func (o observers) Observe(e *activity.Entry) {
	for _, x := range o {
		x.Observe(e)
	}
}

// observeExchange hands the finished exchange to the proxy's observer.
func (p *Proxy) observeExchange(x *exchange, rec *statusRecorder, svc string) {
	if p.deps.observer == nil {
		return
	}
	status := rec.status()
	e := activity.Entry{
		At: x.start, Session: x.sess.ID, Agent: x.sess.Agent, Service: svc,
		Method: x.r.Method, Host: x.target.host, Port: x.target.port, Path: x.path,
		Status: status, Decision: activity.Forwarded, Reason: x.refusal,
		BytesOut: rec.bytes, Duration: time.Since(x.start), Credentials: x.resolved,
		Client: clientAddr(x.r),
	}
	if x.refusal != "" {
		e.Decision, e.Code = activity.Refused, stopgapCode(status)
		if e.Code == activity.CodeUpstream || e.Code == activity.CodeInternal || e.Code == activity.CodeClientClosed {
			e.Decision = activity.Failed
		}
	}
	p.deps.observer.Observe(&e)
}

// stopgapCode is a refusal's code from its status alone.
func stopgapCode(status int) string {
	switch status {
	case http.StatusProxyAuthRequired:
		return activity.CodeAuth
	case http.StatusForbidden:
		return activity.CodeForbidden
	case http.StatusMisdirectedRequest:
		return activity.CodeMisdirected
	case http.StatusTooManyRequests:
		return activity.CodeRateLimited
	case http.StatusServiceUnavailable:
		return activity.CodeStoreStale
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return activity.CodeUpstream
	case statusClientClosed:
		return activity.CodeClientClosed
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusHTTPVersionNotSupported:
		return activity.CodeBadRequest
	}
	return activity.CodeInternal
}
