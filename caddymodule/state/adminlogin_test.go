package state

import (
	"testing"
	"time"
)

// TestAdminTokenLogin: a login of AdminTokenLogin needs no operators
// row (and no password hash) and resolves as owner; a login of an
// operator that does not exist is still refused and, once its
// operator is deleted, resolves to nothing.
func TestAdminTokenLogin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		db := open(t, b.config(t))
		now := time.Now()
		must(t, db.InsertLogin(ctx, login(1, AdminTokenLogin, now), ""))
		l, o, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xc0, 1})
		must(t, err)
		if !ok || l.Operator != AdminTokenLogin || l.Via != LoginViaCookie || o.Name != AdminTokenLogin || o.Role != "owner" || o.PasswordHash != "" {
			t.Fatalf("admin token login: %v %+v %+v", ok, l, o)
		}
		if err := db.InsertLogin(ctx, login(2, "ghost", now), ""); err == nil {
			t.Fatal("a login without a checked hash was stored for an operator")
		}
		if err := db.InsertLogin(ctx, login(2, "ghost", now), "$argon2id$x"); err == nil {
			t.Fatal("a login of no operator was stored")
		}
		alice := operator("alice", "admin", now)
		must(t, db.InsertOperator(ctx, alice))
		must(t, db.InsertLogin(ctx, login(3, "alice", now), alice.PasswordHash))
		if _, o, ok, _ := db.LoginByTokenHash(ctx, [32]byte{0xa0, 3}); !ok || o.Role != "admin" || o.PasswordHash != alice.PasswordHash {
			t.Fatalf("alice's login: %v %+v", ok, o)
		}
		if _, err := db.DeleteOperator(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if loggedIn(t, db, 3) {
			t.Fatal("a deleted operator's login resolves")
		}
		must(t, db.DeleteLogin(ctx, l.ID))
		if cookieLoggedIn(t, db, 1) {
			t.Fatal("the admin token login outlived its deletion")
		}
	})
}
