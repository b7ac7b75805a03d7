package state

import (
	"bytes"
	"testing"
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
		gen, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":1}`), other)
		must(t, err)
		if gen != 1 {
			t.Fatalf("new source: generation %d", gen)
		}
		rec.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
		rec.reset()
		ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, []byte("sealed-1"))
		must(t, err)
		if !ok {
			t.Fatal("not written")
		}
		rec.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})

		var sawOld []byte
		gen2, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":2}`), func(old []byte) bool { sawOld = old; return true })
		must(t, err)
		r, found, err := db.GetTokenSource(ctx, "MAIL")
		must(t, err)
		if gen2 != gen || !found || string(r.Doc) != `{"v":2}` || !bytes.Equal(r.RefreshSealed, []byte("sealed-1")) || r.Generation != gen || string(sawOld) != `{"v":1}` {
			t.Fatalf("same refresh: gen %d row %+v found %v old %q", gen2, r, found, sawOld)
		}

		gen3, err := db.PutTokenSource(ctx, "MAIL", []byte(`{"v":3}`), other)
		must(t, err)
		r, _, err = db.GetTokenSource(ctx, "MAIL")
		must(t, err)
		if gen3 != gen+1 || r.RefreshSealed != nil || r.Generation != gen3 {
			t.Fatalf("changed refresh: gen %d row %+v", gen3, r)
		}
		// A fetch of the old definition finishing now is not kept.
		if ok, err := db.SetTokenSourceRefresh(ctx, "MAIL", gen, []byte("sealed-old")); err != nil || ok {
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
	gen, err := a.PutTokenSource(ctx, "MAIL", []byte(`{}`), nil)
	must(t, err)
	onB.waitFor(t, feedPromise, Change{TopicTokenSources, "MAIL"})
	onB.reset()
	_, err = a.SetTokenSourceRefresh(ctx, "MAIL", gen, []byte("sealed"))
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
