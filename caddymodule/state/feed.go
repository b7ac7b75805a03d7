package state

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Topic names a kind of state that subscribers cache.
type Topic string

// The topics. A Change's Key is, per topic:
//   - TopicServices: the service's name;
//   - TopicSessions: the session's id;
//   - TopicCredentials: the built-in store's name;
//   - TopicTokenSources: the token source's name (its definition, or
//     the rotated refresh token kept for it, changed).
//
// An empty Key means everything in the topic.
const (
	TopicServices     Topic = "services"
	TopicSessions     Topic = "sessions"
	TopicCredentials  Topic = "credentials"
	TopicTokenSources Topic = "token_sources"
)

// allTopics is every topic, in the order full reloads announce them.
var allTopics = []Topic{TopicServices, TopicCredentials, TopicTokenSources, TopicSessions}

// Change says that something in Topic changed: re-read Key, or the whole
// topic when Key is "". It carries no data, so a subscriber always acts
// on what the database holds now, and a repeated or late Change is
// harmless: subscribers must be idempotent.
type Change struct {
	Topic Topic
	Key   string
}

// notifyChannel is the PostgreSQL LISTEN/NOTIFY channel; payloads are
// "topic:key".
const notifyChannel = "agent_vault"

// maxKeyInPayload keeps a payload under PostgreSQL's 8000-byte limit;
// a longer key is announced as a reload of its whole topic.
const maxKeyInPayload = 7000

func (c Change) payload() string {
	if len(c.Key) > maxKeyInPayload {
		return string(c.Topic) + ":"
	}
	return string(c.Topic) + ":" + c.Key
}

// parsePayload reads a notification; ok is false for one that is not
// ours.
func parsePayload(p string) (Change, bool) {
	topic, key, ok := strings.Cut(p, ":")
	if !ok {
		return Change{}, false
	}
	for _, t := range allTopics {
		if Topic(topic) == t {
			return Change{Topic: t, Key: key}, true
		}
	}
	return Change{}, false
}

// Subscribe calls fn with every Change from now on: this instance's
// writes, other instances' (PostgreSQL), and a full reload of every
// topic each ReloadInterval and after the LISTEN connection comes back.
// Callbacks run on one goroutine, one at a time, in order; a slow one
// delays the others but never a writer. fn may call the DB. cancel stops
// the calls (one already under way finishes) and may be called more
// than once, also from fn.
func (db *DB) Subscribe(fn func(Change)) (cancel func()) {
	return db.feed.subscribe(fn)
}

// feed queues changes and delivers them to the subscribers from one
// goroutine. The queue holds each distinct Change once: a Change that is
// already waiting covers a second one, since the subscriber will read
// the database after both writes. So it never grows beyond the number of
// distinct keys, and writers never wait for subscribers.
type feed struct {
	log *zap.Logger

	mu      sync.Mutex
	subs    []*subscriber
	pending []Change
	queued  map[Change]struct{}
	wake    chan struct{}
}

type subscriber struct {
	fn     func(Change)
	active bool // guarded by feed.mu
}

func newFeed(log *zap.Logger) *feed {
	return &feed{log: log, queued: map[Change]struct{}{}, wake: make(chan struct{}, 1)}
}

func (f *feed) subscribe(fn func(Change)) func() {
	s := &subscriber{fn: fn, active: true}
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		s.active = false
		for i, x := range f.subs {
			if x == s {
				f.subs = append(f.subs[:i:i], f.subs[i+1:]...)
				break
			}
		}
	}
}

// publish queues changes without waiting.
func (f *feed) publish(changes ...Change) {
	if len(changes) == 0 {
		return
	}
	f.mu.Lock()
	for _, c := range changes {
		if _, ok := f.queued[c]; !ok {
			f.queued[c] = struct{}{}
			f.pending = append(f.pending, c)
		}
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// publishReload queues a full reload of every topic.
func (f *feed) publishReload() {
	changes := make([]Change, len(allTopics))
	for i, t := range allTopics {
		changes[i] = Change{Topic: t}
	}
	f.publish(changes...)
}

// run delivers queued changes until ctx ends.
func (f *feed) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		for ctx.Err() == nil {
			f.mu.Lock()
			if len(f.pending) == 0 {
				f.mu.Unlock()
				break
			}
			c := f.pending[0]
			f.pending = f.pending[1:]
			delete(f.queued, c)
			subs := append([]*subscriber(nil), f.subs...)
			f.mu.Unlock()
			for _, s := range subs {
				f.deliver(s, c)
			}
		}
	}
}

// deliver calls one subscriber, unless it was cancelled meanwhile. A
// panic is logged and swallowed: one broken subscriber must not stop
// the feed for the others.
func (f *feed) deliver(s *subscriber, c Change) {
	f.mu.Lock()
	active := s.active
	f.mu.Unlock()
	if !active {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			f.log.Error("state change subscriber panicked", zap.String("topic", string(c.Topic)), zap.Any("panic", r))
		}
	}()
	s.fn(c)
}

// reloadLoop announces a full reload every ReloadInterval: it heals a
// notification lost while a LISTEN connection was down, or a write on
// SQLite by another process.
func (db *DB) reloadLoop(ctx context.Context) {
	t := time.NewTicker(db.s.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			db.feed.publishReload()
		}
	}
}
