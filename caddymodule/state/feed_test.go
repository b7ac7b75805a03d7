package state

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestReloadInterval(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		cfg.ReloadInterval = MinReloadInterval
		db := open(t, cfg)
		r := subscribe(t, db)
		r.waitFor(t, 5*time.Second, fullReload()...)
		r.reset()
		r.waitFor(t, 5*time.Second, fullReload()...) // and again
	})
}

func TestPayload(t *testing.T) {
	for _, c := range []Change{{TopicServices, "github"}, {TopicSessions, ""}, {TopicCredentials, "a:b"}} {
		got, ok := parsePayload(c.payload())
		if !ok || got != c {
			t.Errorf("%v -> %q -> %v %v", c, c.payload(), got, ok)
		}
	}
	long := Change{TopicSessions, strings.Repeat("x", maxKeyInPayload+1)}
	if got, ok := parsePayload(long.payload()); !ok || got != (Change{Topic: TopicSessions}) {
		t.Errorf("a long key should become a topic reload: %v", got)
	}
	for _, p := range []string{"", "services", "other:x", ":x"} {
		if _, ok := parsePayload(p); ok {
			t.Errorf("%q accepted", p)
		}
	}
}

func TestPanickingSubscriberDoesNotStopTheFeed(t *testing.T) {
	f := newFeed(zap.NewNop())
	done := make(chan struct{})
	defer close(done)
	go f.run(contextUntil(done))
	f.subscribe(func(Change) { panic("boom") })
	got := make(chan Change, 10)
	f.subscribe(func(c Change) { got <- c })
	f.publish(Change{TopicServices, "a"}, Change{TopicServices, "b"})
	for _, want := range []string{"a", "b"} {
		select {
		case c := <-got:
			if c.Key != want {
				t.Fatalf("got %v, want key %s", c, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the feed stopped after a panic")
		}
	}
}

func TestFeedCoalescesPendingDuplicates(t *testing.T) {
	f := newFeed(zap.NewNop())
	f.publish(Change{TopicServices, "a"}, Change{TopicSessions, "x"}, Change{TopicServices, "a"})
	f.publish(Change{TopicSessions, "x"})
	if len(f.pending) != 2 {
		t.Fatalf("pending %v", f.pending)
	}
}
