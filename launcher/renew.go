package launcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// minRenewInterval keeps a server's tiny lease_timeout from turning the
// renewal into a busy loop.
const minRenewInterval = 10 * time.Millisecond

// leaseRenewer is what the renewal needs of the API client.
type leaseRenewer interface {
	RenewSession(ctx context.Context, id string) (*apiwire.LeaseRenewal, error)
}

// renewal keeps one leased session alive.
type renewal struct {
	api   leaseRenewer
	id    string
	every time.Duration // a third of the lease timeout
	lease time.Duration // the lease timeout
	until time.Time     // when the lease lapses unless renewed
	now   func() time.Time
	// wait waits d, false if ctx ends first (a fake in tests).
	wait func(ctx context.Context, d time.Duration) bool
	warn func(format string, args ...any)
}

// startRenewal renews sess's lease every third of its lease_timeout until
// stop is called (which waits for the renewal to end). A session without
// a usable lease_timeout is an error (the caller revokes it): the launcher
// asked for a lease, and a session the broker would not end when the
// launcher dies must not run a command.
func startRenewal(ctx context.Context, cfg *Config, api leaseRenewer, sess *apiwire.Session) (stop func(), err error) {
	warn := func(format string, args ...any) {
		fmt.Fprintf(cfg.Stderr, "%s: warning: "+format+"\n", append([]any{cfg.ProgName}, args...)...)
	}
	r, err := newRenewal(api, sess, time.Now, warn)
	if err != nil {
		return func() {}, err
	}
	// Not cancelled with ctx: the child may outlive a cancelled context
	// for a while (it got SIGTERM), and its session must live as long.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { r.run(rctx) })
	return func() {
		cancel()
		wg.Wait()
	}, nil
}

// errNotLeased is the refusal of a session the server did not lease.
var errNotLeased = errors.New("the server did not lease the session (its answer has no usable lease_timeout): the command runs only in a leased session, which the broker ends soon after this launcher dies; the session was revoked (is the server older than this launcher?)")

// newRenewal reads the lease of sess; errNotLeased if it has none or an
// unusable one.
func newRenewal(api leaseRenewer, sess *apiwire.Session, now func() time.Time, warn func(string, ...any)) (*renewal, error) {
	lease, err := time.ParseDuration(sess.LeaseTimeout)
	if sess.LeaseTimeout == "" || err != nil || lease <= 0 {
		return nil, errNotLeased
	}
	r := &renewal{api: api, id: sess.ID, every: max(lease/3, minRenewInterval), lease: lease, now: now, wait: sleep, warn: warn}
	r.until = now().Add(lease)
	if sess.LeaseExpiresAt != nil {
		r.until = *sess.LeaseExpiresAt
	}
	return r, nil
}

// run renews until ctx is done or the broker ends the session. A renewal
// the server answers 410 (or 404: it no longer knows the session) means
// the session is over: one warning, no more renewals. Other failures are
// retried quietly at half the interval; once a third of the lease or
// less is left, one warning says when it lapses. A refused token (401,
// 403: deleted or rotated) never comes back, so those stop once the
// lease has certainly lapsed (a whole lease timeout past its end, for
// clocks that disagree): the session has ended by then.
func (r *renewal) run(ctx context.Context) {
	warnedLapse := false
	for next := r.every; ; {
		if !r.wait(ctx, next) {
			return
		}
		// No attempt may outlast the interval: a hung server must not
		// hold the renewals back until the lease lapses.
		actx, cancel := context.WithTimeout(ctx, r.every)
		got, err := r.api.RenewSession(actx, r.id)
		cancel()
		next = r.every
		switch status := apiclient.StatusOf(err); {
		case err == nil:
			r.until = r.now().Add(r.lease)
			if got != nil && !got.LeaseExpiresAt.IsZero() {
				r.until = got.LeaseExpiresAt
			}
			warnedLapse = false
		case ctx.Err() != nil:
			return
		case status == http.StatusGone || status == http.StatusNotFound:
			r.warn("the broker ended the session: %s; the command keeps running, but the proxy refuses its requests now", serverWords(err))
			return
		case status == http.StatusConflict:
			r.warn("the server keeps no lease on the session (%s): not renewing it", serverWords(err))
			return
		case (status == http.StatusUnauthorized || status == http.StatusForbidden) && !r.now().Before(r.until.Add(r.lease)):
			r.warn("the session ended: its lease lapsed at %s while the server refused the renewals (%v); the command keeps running, but the proxy refuses its requests now", r.until.Format(time.RFC3339), err)
			return
		default:
			next = max(r.every/2, minRenewInterval)
			if left := r.until.Sub(r.now()); !warnedLapse && left <= r.every {
				r.warn("renewing the session lease failed (%v); the broker ends the session at %s unless a renewal succeeds before", err, r.until.Format(time.RFC3339))
				warnedLapse = true
			}
		}
	}
}

// sleep waits d, false if ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serverWords is the server's message of an *Error, else err's text.
func serverWords(err error) string {
	var e *apiclient.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
