package syncengine

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// snapshot is one immutable view of a store. It is replaced, never
// modified, so readers need no lock.
type snapshot struct {
	entries map[string]entry
	metas   []storebackends.Meta // sorted by name
}

var emptySnapshot = &snapshot{entries: map[string]entry{}}

// entry is one accepted credential.
type entry struct {
	value     string
	version   string
	derived   bool // version is the content hash, not the backend's
	source    string
	updatedAt time.Time
}

// same reports whether a and b look identical to every reader.
func (a entry) same(b entry) bool {
	return a.value == b.value && a.version == b.version &&
		a.source == b.source && a.updatedAt.Equal(b.updatedAt)
}

// sync fetches once and swaps in a new snapshot if the content changed.
// The caller holds the sync semaphore. It reports whether a new
// snapshot was swapped in; its error does not name the store.
func (e *Engine) sync(ctx context.Context) (changed bool, err error) {
	started := e.now()
	fetchCtx, cancel := context.WithTimeout(ctx, e.timeout)
	batch, err := e.fetch(fetchCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			// Stopped or abandoned by the caller: not the store's fault.
			return false, fmt.Errorf("fetch aborted: %w", ctx.Err())
		}
		err = fmt.Errorf("fetch failed: %w", err)
		e.recordFailure(started, err, false, nil)
		return false, err
	}

	prev := e.snap.Load()
	entries, problems := ingest(batch, prev, e.now())
	// An empty batch is refused unless the backend explained the
	// removals (deleted secrets are reported as problems): then removing
	// them at once is the point, e.g. after a leak.
	if len(entries) == 0 && len(prev.entries) > 0 && !e.allowEmpty && !explainsRemovals(prev, problems) {
		err := fmt.Errorf("refused a sync that would remove all %d credentials (allow_empty is off); still serving the last good snapshot", len(prev.entries))
		e.recordFailure(started, err, true, problems)
		return false, err
	}

	changes := diff(prev, entries)
	if len(changes) > 0 {
		e.snap.Store(newSnapshot(e.name, entries))
		e.log.Info("credentials changed", zap.Int("credentials", len(entries)), zap.Strings("changes", changes))
	}
	e.recordSuccess(started, len(changes) > 0, problems)
	return len(changes) > 0, nil
}

// fetch calls the fetcher, turning a panic into an error so that one
// bad response cannot take the server down.
func (e *Engine) fetch(ctx context.Context) (batch storebackends.Batch, err error) {
	defer func() {
		if r := recover(); r != nil {
			// The panic value is not logged: it could hold anything the
			// fetcher had in hand, including a secret.
			batch, err = storebackends.Batch{}, fmt.Errorf("fetcher panicked (%T)", r)
		}
	}()
	return e.fetcher.Fetch(ctx)
}

// ingest validates a batch and returns its usable credentials by name
// plus every problem found (the fetcher's first). prev supplies
// versions and update times of unchanged credentials; now is the update
// time of credentials first seen without one from the backend.
//
// A name that occurs more than once is dropped entirely: the engine
// cannot tell which value is meant, and injecting the wrong secret is
// worse than injecting none.
func ingest(batch storebackends.Batch, prev *snapshot, now time.Time) (map[string]entry, []storebackends.Problem) {
	problems := slices.Clone(batch.Problems)
	entries := make(map[string]entry, len(batch.Items))
	// Names rejected for their value stay in entries (marked) until the
	// end, so that a duplicate of them is still recognised.
	rejected := map[string]bool{}
	var dupSources map[string][]string
	for _, it := range batch.Items {
		// A name already in the snapshot passed this check before; the
		// regular expression is most of the cost of an unchanged sync.
		if _, known := prev.entries[it.Name]; !known && storebackends.ValidateName(it.Name) != nil {
			problems = append(problems, storebackends.Problem{Source: it.Source, Name: clip(it.Name),
				Reason: "invalid name: use letters, digits and '_', not starting with a digit, at most 128 characters"})
			continue
		}
		if first, dup := entries[it.Name]; dup || dupSources[it.Name] != nil {
			if dupSources == nil {
				dupSources = map[string][]string{}
			}
			if dup {
				dupSources[it.Name] = []string{first.source}
				delete(entries, it.Name)
			}
			dupSources[it.Name] = append(dupSources[it.Name], it.Source)
			continue
		}
		if reason := checkValue(it.Value); reason != "" {
			problems = append(problems, storebackends.Problem{Source: it.Source, Name: it.Name, Reason: reason})
			entries[it.Name] = entry{source: it.Source}
			rejected[it.Name] = true
			continue
		}
		entries[it.Name] = newEntry(it, prev.entries, now)
	}
	for name := range rejected {
		delete(entries, name)
	}
	for _, name := range slices.Sorted(maps.Keys(dupSources)) {
		problems = append(problems, storebackends.Problem{
			Source: strings.Join(dupSources[name], ", "), Name: name,
			Reason: fmt.Sprintf("name defined %d times; none is used, as the engine cannot tell which value is meant", len(dupSources[name])),
		})
	}
	return entries, problems
}

// newEntry versions it, reusing what prev knows about the same content.
func newEntry(it storebackends.Item, prev map[string]entry, now time.Time) entry {
	old, had := prev[it.Name]
	ent := entry{value: it.Value, version: it.Version, source: it.Source, updatedAt: it.UpdatedAt}
	if ent.version == "" {
		ent.derived = true
		if had && old.derived && old.value == it.Value {
			ent.version = old.version // skip rehashing unchanged content
		} else {
			ent.version = contentVersion(it.Value)
		}
	}
	if ent.updatedAt.IsZero() {
		if had && old.version == ent.version && old.value == ent.value {
			ent.updatedAt = old.updatedAt
		} else {
			ent.updatedAt = now
		}
	}
	return ent
}

// versionKey keys contentVersion. It is random per process: versions
// are only compared within one run, and a plain hash of a short value
// (a PIN, a password) could be brute-forced from the API or the logs.
var versionKey = func() []byte {
	k := make([]byte, 32)
	if _, err := crand.Read(k); err != nil {
		panic(err)
	}
	return k
}()

// contentVersion derives a version from a value, so that a rotation in
// a backend without versions (KV v1) is still seen.
func contentVersion(value string) string {
	m := hmac.New(sha256.New, versionKey)
	m.Write([]byte(value))
	return "hmac:" + hex.EncodeToString(m.Sum(nil)[:8])
}

// checkValue returns why value cannot be injected, or "".
func checkValue(value string) string {
	if value == "" {
		return "empty value"
	}
	for i := 0; i < len(value); i++ {
		// Values go into HTTP headers, where control characters other
		// than tab are invalid or enable header injection.
		if c := value[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return "value contains a control character"
		}
	}
	return ""
}

// clip shortens an invalid name for a problem report, so a garbage key
// cannot bloat health output.
func clip(name string) string {
	const maxLen = 160
	if len(name) <= maxLen {
		return name
	}
	return strings.ToValidUTF8(name[:maxLen], "") + "…"
}

// diff lists what changed from prev to next as "+NAME@version",
// "~NAME@version" and "-NAME", sorted by name; empty when nothing did.
func diff(prev *snapshot, next map[string]entry) []string {
	var changes []string
	for name, ent := range next {
		old, had := prev.entries[name]
		switch {
		case !had:
			changes = append(changes, "+"+name+"@"+ent.version)
		case !old.same(ent):
			changes = append(changes, "~"+name+"@"+ent.version)
		}
	}
	for name := range prev.entries {
		if _, ok := next[name]; !ok {
			changes = append(changes, "-"+name)
		}
	}
	slices.SortFunc(changes, func(a, b string) int { return strings.Compare(a[1:], b[1:]) })
	return changes
}

func newSnapshot(store string, entries map[string]entry) *snapshot {
	metas := make([]storebackends.Meta, 0, len(entries))
	for name, ent := range entries {
		metas = append(metas, storebackends.Meta{
			Name: name, Store: store, Version: ent.version, UpdatedAt: ent.updatedAt, Source: ent.source,
		})
	}
	slices.SortFunc(metas, func(a, b storebackends.Meta) int { return strings.Compare(a.Name, b.Name) })
	return &snapshot{entries: entries, metas: metas}
}

// recordSuccess notes a successful sync. Logging happens after the
// lock is released, so that a slow log sink never holds up Fresh.
func (e *Engine) recordSuccess(started time.Time, changed bool, problems []storebackends.Problem) {
	e.mu.Lock()
	st := &e.state
	recovered := st.failures
	newProblems := e.setProblems(problems)
	// The fetch's start, not its end, bounds the data's age: staleness
	// is measured conservatively.
	st.lastSuccess, st.lastAttempt, st.lastError = started, started, ""
	st.failures, st.retryIn, st.staleLogged = 0, e.interval, false
	st.syncs++
	if changed {
		st.changes++
	}
	e.mu.Unlock()

	if recovered > 0 {
		e.log.Info("store sync recovered", zap.Int("failed_attempts", recovered))
	}
	e.logProblems(newProblems)
	if !changed {
		e.log.Debug("store unchanged")
	}
}

// recordFailure notes a failed attempt. fetched says whether a batch
// was read (and refused), whose problems then replace the last ones.
func (e *Engine) recordFailure(started time.Time, err error, fetched bool, problems []storebackends.Problem) {
	e.mu.Lock()
	st := &e.state
	st.failures++
	st.lastAttempt, st.lastError = started, err.Error()
	st.retryIn = e.backoff(st.failures)
	var newProblems []storebackends.Problem
	if fetched {
		newProblems = e.setProblems(problems)
	}
	failures, retryIn, lastSuccess := st.failures, st.retryIn, st.lastSuccess
	becameStale := !st.staleLogged && e.staleAt(e.now())
	if becameStale {
		st.staleLogged = true
	}
	e.mu.Unlock()

	e.logProblems(newProblems)
	e.log.Warn("store sync failed", zap.Error(err),
		zap.Int("consecutive_failures", failures), zap.Duration("next_attempt_in", retryIn))
	if becameStale {
		e.log.Error("store is stale: requests needing its credentials fail until a sync succeeds",
			zap.Time("last_success", lastSuccess), zap.Duration("max_staleness", e.maxStaleness))
	}
}

// setProblems records the latest problems and returns them if they
// differ from the last ones (so they are worth a log line). The caller
// holds e.mu.
func (e *Engine) setProblems(problems []storebackends.Problem) []storebackends.Problem {
	old := e.state.problems
	e.state.problems = problems
	if slices.Equal(problems, old) {
		return nil
	}
	return problems
}

func (e *Engine) logProblems(problems []storebackends.Problem) {
	if len(problems) > 0 {
		e.log.Warn("store reported problems with some credentials", zap.Any("problems", problems))
	}
}

// backoff is the wait after the given number of consecutive failures:
// Interval, doubling per failure up to MaxBackoff, then ±10% jitter so
// that many instances do not retry in lockstep.
func (e *Engine) backoff(failures int) time.Duration {
	d := e.interval
	for i := 1; i < failures && d < e.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, e.maxBackoff)
	spread := int64(d) / 5
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread+1))
}

// staleAt reports whether the snapshot is too old to serve at now. The
// caller holds e.mu.
func (e *Engine) staleAt(now time.Time) bool {
	return e.state.lastSuccess.IsZero() || now.Sub(e.state.lastSuccess) > e.maxStaleness
}

// explainsRemovals reports whether every credential of prev is named in
// a problem of the new batch (deleted, destroyed, invalid now).
func explainsRemovals(prev *snapshot, problems []storebackends.Problem) bool {
	named := make(map[string]bool, len(problems))
	for _, p := range problems {
		named[p.Name] = true
	}
	for name := range prev.entries {
		if !named[name] {
			return false
		}
	}
	return true
}
