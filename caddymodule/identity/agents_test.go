package identity

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNormalizeAgentServices(t *testing.T) {
	exists := func(s string) bool { return s == "github" || s == "npm" || s == "stripe" }
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"npm", "github", "npm"}, []string{"github", "npm"}},
		{[]string{"*"}, []string{"*"}},
		{[]string{"*", "*"}, []string{"*"}},
	} {
		got, err := NormalizeAgentServices(tc.in, exists)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, `"services" is empty`},
		{[]string{}, `"services" is empty`},
		{[]string{"*", "github"}, `"*" must be the only service`},
		{[]string{"github", "nope"}, `unknown service "nope"`},
		{[]string{""}, `unknown service ""`},
		{[]string{strings.Repeat("y", 1000)}, `unknown service "yyyy`},
	} {
		_, err := NormalizeAgentServices(tc.in, exists)
		var ie *InvalidError
		if !errors.As(err, &ie) || !strings.HasPrefix(ie.Reason, tc.want) || len(ie.Reason) > 200 {
			t.Errorf("%.30q: %v, want %q...", tc.in, err, tc.want)
		}
	}
}

func TestAgentMaxTTL(t *testing.T) {
	const appMax = 24 * time.Hour
	for in, want := range map[time.Duration]time.Duration{0: appMax, time.Second: time.Second, time.Hour: time.Hour, appMax: appMax} {
		if got, err := AgentMaxTTL(in, appMax); err != nil || got != want {
			t.Errorf("AgentMaxTTL(%v) = %v, %v", in, got, err)
		}
	}
	for in, want := range map[time.Duration]string{
		-time.Hour:               "max_session_ttl must be at least 1s",
		time.Millisecond:         "max_session_ttl must be at least 1s",
		appMax + time.Nanosecond: "max_session_ttl 24h0m0.000000001s exceeds the server's max_session_ttl 24h",
		48 * time.Hour:           "max_session_ttl 48h exceeds the server's max_session_ttl 24h",
	} {
		_, err := AgentMaxTTL(in, appMax)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Reason != want {
			t.Errorf("AgentMaxTTL(%v): %v, want %q", in, err, want)
		}
	}
}

func TestSessionServices(t *testing.T) {
	existing := []string{"github", "npm", "stripe"}
	for _, tc := range []struct {
		requested, allowed, want []string
	}{
		{nil, []string{"github", "npm", "gone"}, []string{"github", "npm"}},
		{nil, []string{"*"}, existing},
		{[]string{"npm"}, []string{"github", "npm"}, []string{"npm"}},
		{[]string{"npm", "github", "npm"}, []string{"github", "npm"}, []string{"github", "npm"}},
		{[]string{"stripe"}, []string{"*"}, []string{"stripe"}},
	} {
		got, err := SessionServices("ci-bot", tc.requested, tc.allowed, existing)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("requested %q allowed %q: %q, %v; want %q", tc.requested, tc.allowed, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		requested, allowed []string
		forbidden          bool
		want               string
	}{
		{[]string{"stripe"}, []string{"github"}, true, `agent ci-bot may not use service stripe: ask with POST /api/v1/requests {"service":"stripe"}`},
		{[]string{"github", "stripe"}, []string{"github"}, true, `agent ci-bot may not use service stripe: ask with POST /api/v1/requests {"service":"stripe"}`},
		{[]string{"nope"}, []string{"*"}, false, `unknown service "nope"`},
		// Allowed first: a service the agent may not use is refused
		// the same whether it exists or not.
		{[]string{"nope"}, []string{"github"}, true, `agent ci-bot may not use service nope: ask with POST /api/v1/requests {"service":"nope"}`},
		{[]string{"nope", "stripe"}, []string{"github", "nope"}, true, `agent ci-bot may not use service stripe: ask with POST /api/v1/requests {"service":"stripe"}`},
		{[]string{"nope", "github"}, []string{"github", "nope"}, false, `unknown service "nope"`},
		{[]string{"*"}, []string{"*"}, false, `invalid service name "*"`},
		{[]string{""}, []string{"*"}, false, `invalid service name ""`},
		{[]string{"github", `x"}`}, []string{"github"}, false, `invalid service name "x\"}"`},
		{[]string{strings.Repeat("Q", 1000)}, []string{"github"}, false, `invalid service name "` + strings.Repeat("Q", 64) + `"...`},
		{[]string{}, []string{"*"}, false, `"services" is empty: name at least one service, or omit it for every service agent ci-bot may use`},
		{nil, []string{"gone"}, true, "agent ci-bot may use no service that exists now: ask with POST /api/v1/requests"},
		{nil, nil, true, "agent ci-bot may use no service that exists now: ask with POST /api/v1/requests"},
	} {
		got, err := SessionServices("ci-bot", tc.requested, tc.allowed, existing)
		var fe *ForbiddenError
		var ie *InvalidError
		switch {
		case got != nil:
			t.Errorf("requested %q allowed %q: a scope %q with the error %v", tc.requested, tc.allowed, got, err)
		case tc.forbidden && !errors.As(err, &fe), !tc.forbidden && !errors.As(err, &ie):
			t.Errorf("requested %q allowed %q: %T %v, want forbidden=%v", tc.requested, tc.allowed, err, err, tc.forbidden)
		case err.Error() != tc.want:
			t.Errorf("requested %q allowed %q: %q, want %q", tc.requested, tc.allowed, err, tc.want)
		}
	}
}

func TestSessionTTL(t *testing.T) {
	for _, tc := range []struct {
		requested, agentMax, appDefault, want time.Duration
	}{
		{0, 24 * time.Hour, time.Hour, time.Hour},
		{0, 30 * time.Minute, time.Hour, 30 * time.Minute},
		{0, 30 * time.Minute, 0, 30 * time.Minute},
		{10 * time.Minute, time.Hour, time.Hour, 10 * time.Minute},
		{time.Hour, time.Hour, time.Hour, time.Hour},
	} {
		got, err := SessionTTL("ci-bot", tc.requested, tc.agentMax, tc.appDefault)
		if err != nil || got != tc.want {
			t.Errorf("%+v: %v, %v", tc, got, err)
		}
	}
	_, err := SessionTTL("ci-bot", 2*time.Hour, time.Hour, time.Hour)
	var fe *ForbiddenError
	if !errors.As(err, &fe) || fe.Reason != "ttl 2h exceeds agent ci-bot's max_session_ttl 1h" {
		t.Errorf("over the max: %v", err)
	}
	for _, ttl := range []time.Duration{-time.Second, time.Nanosecond, 999 * time.Millisecond} {
		_, err = SessionTTL("ci-bot", ttl, time.Hour, time.Hour)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Reason != "ttl must be at least 1s" {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
	if got, err := SessionTTL("ci-bot", time.Second, time.Hour, time.Hour); err != nil || got != time.Second {
		t.Errorf("ttl 1s: %v %v", got, err)
	}
	var ie *InvalidError
	if _, err := SessionTTL("ci-bot", 0, 0, time.Hour); err == nil || errors.As(err, &fe) || errors.As(err, &ie) {
		t.Errorf("an agent without a max: %v, want a server error", err)
	}
}

func TestOutOfLimits(t *testing.T) {
	for _, tc := range []struct {
		services  []string
		remaining time.Duration
		allowed   []string
		max       time.Duration
		want      bool
	}{
		{[]string{"github"}, time.Minute, []string{"github", "npm"}, time.Hour, false},
		{[]string{"github", "npm"}, time.Minute, []string{"github"}, time.Hour, true},
		{[]string{"github"}, 2 * time.Hour, []string{"github"}, time.Hour, true},
		{[]string{"github"}, time.Hour, []string{"github"}, time.Hour, false},
		{[]string{"stripe"}, time.Minute, []string{"*"}, time.Hour, false},
		{[]string{"stripe"}, time.Minute, nil, time.Hour, true},
		{nil, time.Minute, nil, time.Hour, false},
		{[]string{"github"}, -time.Minute, []string{"github"}, time.Hour, false},
	} {
		if got := OutOfLimits(tc.services, tc.remaining, tc.allowed, tc.max); got != tc.want {
			t.Errorf("%+v: %v", tc, got)
		}
	}
}

func TestCovers(t *testing.T) {
	if !Covers([]string{"*"}, "x") || !Covers([]string{"a", "x"}, "x") || Covers([]string{"a"}, "x") || Covers(nil, "x") {
		t.Error("Covers")
	}
}

func TestOperatorSessionServices(t *testing.T) {
	existing := []string{"npm", "github", "stripe"}
	for _, tc := range []struct{ requested, want []string }{
		{nil, []string{"github", "npm", "stripe"}},
		{[]string{"stripe", "github", "stripe"}, []string{"github", "stripe"}},
	} {
		got, err := OperatorSessionServices(tc.requested, existing)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("requested %q: %q, %v; want %q", tc.requested, got, err, tc.want)
		}
	}
	if !slices.Equal(existing, []string{"npm", "github", "stripe"}) {
		t.Errorf("the existing list was changed: %q", existing)
	}
	for requested, want := range map[string][]string{
		`"services" is empty: name at least one service, or omit it for all services`: {},
		`unknown service "nope"`:                               {"github", "nope"},
		`unknown service "` + strings.Repeat("Q", 64) + `"...`: {strings.Repeat("Q", 100)},
	} {
		got, err := OperatorSessionServices(want, existing)
		var ie *InvalidError
		if got != nil || !errors.As(err, &ie) || ie.Reason != requested {
			t.Errorf("requested %q: %q %v, want %q", want, got, err, requested)
		}
	}
}
