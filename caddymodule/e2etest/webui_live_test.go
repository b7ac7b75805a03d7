package e2etest

import (
	"testing"
	"time"
)

// TestWebUILiveViewEnds: when the login ends, the server ends the
// activity stream (event "end") and the page says so and stops, instead
// of reconnecting for ever.
func TestWebUILiveViewEnds(t *testing.T) {
	s := startServer(t, newTestCA(t), serverOpts{})
	const pass = "live view ends pass phrase"
	s.createOperator("lena", pass, "viewer")
	b := newBrowser(t, "http://"+s.apiAddr)
	b.secret("an operator's password", pass)
	b.signIn("/activity", "lena", pass)
	b.waitText("#activity-live", "Live view: on", 15*time.Second)
	// End the login from outside the page (another tab signing out).
	if p := s.uiRequest(t, "POST", "/api/v1/logout", b.cookie(loginCookie), "", nil); p.status >= 400 {
		t.Fatalf("logout: %d %s", p.status, p.body)
	}
	b.waitText("#activity-live", "Live view: ended", 15*time.Second)
	if st := b.attr("#activity-live", "data-state"); st != "ended" {
		t.Fatalf("after the login ended the live view has data-state %q, want ended", st)
	}
}
