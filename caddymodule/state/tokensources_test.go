package state

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// A token source's writes announce it; a redefinition keeps the kept
// refresh token and the generation when the refresh token comes from
// the same place, drops both otherwise; a write under an old
// generation is not kept.
func TestTokenSourceRows(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		db := open(t, b.config(t))
		rec := subscribe(t, db)
		other := func([]byte) bool { return false }
		gen, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":1}`), "", other)
		must(t, err)
		if gen != 1 {
			t.Fatalf("new source: generation %d", gen)
		}
		rec.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
		rec.reset()
		ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, 0, []byte("sealed-1"))
		must(t, err)
		if !ok {
			t.Fatal("not written")
		}
		// A write that read an older refresh_version is not kept.
		if ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, 0, []byte("sealed-stale")); err != nil || ok {
			t.Fatalf("stale refresh_version written: %v %v", ok, err)
		}
		rec.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})

		var sawOld []byte
		gen2, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":2}`), "", func(old []byte) bool { sawOld = old; return true })
		must(t, err)
		r, found, err := db.GetTokenSource(ctx, "MAIL")
		must(t, err)
		if gen2 != gen || !found || string(r.Doc) != `{"v":2}` || !bytes.Equal(r.RefreshSealed, []byte("sealed-1")) || r.Generation != gen || string(sawOld) != `{"v":1}` || r.RefreshVersion != 1 {
			t.Fatalf("same refresh: gen %d row %+v found %v old %q", gen2, r, found, sawOld)
		}

		gen3, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":3}`), "", other)
		must(t, err)
		r, _, err = db.GetTokenSource(ctx, "MAIL")
		must(t, err)
		if gen3 <= gen || r.RefreshSealed != nil || r.Generation != gen3 {
			t.Fatalf("changed refresh: gen %d row %+v", gen3, r)
		}
		// A fetch of the old definition finishing now is not kept.
		if ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, 1, []byte("sealed-old")); err != nil || ok {
			t.Fatalf("old generation written: %v %v", ok, err)
		}
		if r, _, _ = db.GetTokenSource(ctx, "MAIL"); r.RefreshSealed != nil {
			t.Fatalf("row %+v", r)
		}

		rec.reset()
		found, err = db.DeleteTokenSource(ctx, "MAIL")
		must(t, err)
		if !found {
			t.Fatal("not found")
		}
		rec.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
		if _, found, err := db.GetTokenSource(ctx, "MAIL"); err != nil || found {
			t.Fatalf("after delete: %v %v", found, err)
		}
	})
}

// On PostgreSQL another broker hears of a rotation and a delete.
func TestTokenSourceFeedReachesOtherInstances(t *testing.T) {
	cfg := backends[1].config(t)
	a := open(t, cfg)
	b := open(t, cfg)
	onB := subscribe(t, b)
	gen, err := a.PutTokenSource(ctx, "MAIL", []byte(`{}`), "", nil)
	must(t, err)
	onB.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
	onB.reset()
	_, err = a.SetTokenSourceRefresh(ctx, "MAIL", gen, 0, []byte("sealed"))
	must(t, err)
	onB.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
	if r, _, err := b.GetTokenSource(ctx, "MAIL"); err != nil || string(r.RefreshSealed) != "sealed" {
		t.Fatalf("B reads %+v %v", r, err)
	}
	onB.reset()
	_, err = a.DeleteTokenSource(ctx, "MAIL")
	must(t, err)
	onB.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
}

// A source deleted and defined again never gets a generation it had:
// a fetch still running under the old definition cannot write into
// the new one.
func TestTokenSourceGenerationNeverReused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		db := open(t, b.config(t))
		gen, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":1}`), "RT", nil)
		must(t, err)
		_, err = db.DeleteTokenSource(ctx, "MAIL")
		must(t, err)
		gen2, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":2}`), "RT2", nil)
		must(t, err)
		if gen2 == gen {
			t.Fatalf("recreated source reuses generation %d", gen)
		}
		if ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, 0, []byte("old-def")); err != nil || ok {
			t.Fatalf("old definition's rotation written into the new one: %v %v", ok, err)
		}
	})
}

// One token source per refresh_token credential, checked in the write.
func TestTokenSourceOneReaderPerRefreshToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		db := open(t, b.config(t))
		_, err := db.PutTokenSource(ctx, "A", []byte(`{}`), "RT", nil)
		must(t, err)
		if _, err := db.PutTokenSource(ctx, "B", []byte(`{}`), "RT", nil); !errors.Is(err, ErrRefreshTaken) {
			t.Fatalf("second reader of RT: %v", err)
		}
		// Redefining A with the same credential, and B with another, work.
		_, err = db.PutTokenSource(ctx, "A", []byte(`{"v":2}`), "RT", nil)
		must(t, err)
		_, err = db.PutTokenSource(ctx, "B", []byte(`{}`), "RT2", nil)
		must(t, err)
		_, err = db.PutTokenSource(ctx, "C", []byte(`{}`), "", nil)
		must(t, err)
		_, err = db.PutTokenSource(ctx, "D", []byte(`{}`), "", nil)
		must(t, err)
	})
}

// The fetch lease: one owner at a time, per generation, until released
// or expired.
func TestTokenSourceFetchLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		db := open(t, b.config(t))
		gen, err := db.PutTokenSource(ctx, "MAIL", []byte(`{}`), "RT", nil)
		must(t, err)
		ok, r, found, err := db.AcquireTokenSourceFetch(ctx, "MAIL", gen, "one", time.Minute)
		must(t, err)
		if !ok || !found || r.Generation != gen {
			t.Fatalf("first: %v %v %+v", ok, found, r)
		}
		if ok, _, found, err := db.AcquireTokenSourceFetch(ctx, "MAIL", gen, "two", time.Minute); err != nil || ok || !found {
			t.Fatalf("second while held: %v %v %v", ok, found, err)
		}
		if ok, _, found, err := db.AcquireTokenSourceFetch(ctx, "MAIL", gen+100, "two", time.Minute); err != nil || ok || found {
			t.Fatalf("other generation: %v %v %v", ok, found, err)
		}
		must(t, db.ReleaseTokenSourceFetch(ctx, "MAIL", "two")) // not the owner: nothing
		if ok, _, _, _ := db.AcquireTokenSourceFetch(ctx, "MAIL", gen, "two", time.Minute); ok {
			t.Fatal("released by a non-owner")
		}
		must(t, db.ReleaseTokenSourceFetch(ctx, "MAIL", "one"))
		if ok, _, _, err := db.AcquireTokenSourceFetch(ctx, "MAIL", gen, "two", -time.Second); err != nil || !ok {
			t.Fatalf("after release: %v %v", ok, err)
		}
		// two's lease is already expired: three takes it.
		if ok, _, _, err := db.AcquireTokenSourceFetch(ctx, "MAIL", gen, "three", time.Minute); err != nil || !ok {
			t.Fatalf("after expiry: %v %v", ok, err)
		}
	})
}

// Two brokers PUT the same names at once on PostgreSQL: no duplicate
// key errors, and two redefinitions get two generations.
func TestTokenSourceConcurrentPutPostgres(t *testing.T) {
	cfg := backends[1].config(t)
	a, b := open(t, cfg), open(t, cfg)
	other := func([]byte) bool { return false }
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("S%d", i)
		var wg sync.WaitGroup
		var ea, eb error
		var ga, gb int64
		wg.Add(2)
		go func() { defer wg.Done(); _, ea = a.PutTokenSource(ctx, name, []byte(`{"v":"a"}`), "", nil) }()
		go func() { defer wg.Done(); _, eb = b.PutTokenSource(ctx, name, []byte(`{"v":"b"}`), "", nil) }()
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatalf("concurrent create of %s: %v / %v", name, ea, eb)
		}
		wg.Add(2)
		go func() { defer wg.Done(); ga, ea = a.PutTokenSource(ctx, name, []byte(`{"v":"a2"}`), "", other) }()
		go func() { defer wg.Done(); gb, eb = b.PutTokenSource(ctx, name, []byte(`{"v":"b2"}`), "", other) }()
		wg.Wait()
		if ea != nil || eb != nil || ga == gb {
			t.Fatalf("concurrent redefinition of %s: %d %v / %d %v", name, ga, ea, gb, eb)
		}
	}
}

// Two brokers define two sources on one refresh token at once on
// PostgreSQL: one wins, the other gets ErrRefreshTaken (not a
// duplicate key error).
func TestTokenSourceConcurrentRefreshReadersPostgres(t *testing.T) {
	cfg := backends[1].config(t)
	a, b := open(t, cfg), open(t, cfg)
	for i := 0; i < 10; i++ {
		cred := fmt.Sprintf("RT%d", i)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, db := range []*DB{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = db.PutTokenSource(ctx, fmt.Sprintf("S%d_%d", i, j), []byte(`{}`), cred, nil)
			}()
		}
		wg.Wait()
		taken := 0
		for _, err := range errs {
			switch {
			case errors.Is(err, ErrRefreshTaken):
				taken++
			case err != nil:
				t.Fatalf("%s: %v", cred, err)
			}
		}
		if taken != 1 {
			t.Fatalf("%s: errors %v", cred, errs)
		}
	}
}
