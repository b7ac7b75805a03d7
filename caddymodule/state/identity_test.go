package state

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// The identity tables of migration 0002: agents, operators and their
// logins, access requests, the audit trail, and session leases.
var identityBehaviours = []behaviour{
	{"agents round trip", testAgentsRoundTrip},
	{"agent inserts conflict on name and token hash", testAgentConflicts},
	{"agent rows are validated", testAgentValidation},
	{"agent update", testAgentUpdate},
	{"agent token rotation", testAgentRotate},
	{"agent deletion revokes its sessions", testAgentDelete},
	{"agent grants", testAgentGrant},
	{"operators round trip", testOperatorsRoundTrip},
	{"operator updates and logins", testOperatorUpdateLogins},
	{"operator deletion ends logins", testOperatorDelete},
	{"login insert checks the operator", testLoginInsert},
	{"expired logins are deleted", testLoginsExpired},
	{"access requests round trip", testAccessRequests},
	{"access requests are decided once", testAccessRequestDecide},
	{"access requests check their agent and its quota", testAccessRequestAgentChecks},
	{"access request retention", testAccessRequestRetention},
	{"list limits are bounded", testListLimits},
	{"audit round trip and filters", testAudit},
	{"audit pages visit every entry once", testAuditPaging},
	{"audit retention", testAuditRetention},
	{"session lease round trip", testLeaseRoundTrip},
	{"session lease renewal", testLeaseRenew},
}

func TestIdentityBehaviours(t *testing.T) { runBehaviours(t, identityBehaviours) }

// The stored words are the API's.
func TestStoredWordsAreTheAPIs(t *testing.T) {
	for stored, wire := range map[string]string{
		allServices:     apiwire.AllServices,
		requestPending:  apiwire.RequestPending,
		requestApproved: apiwire.RequestApproved,
		requestDenied:   apiwire.RequestDenied,
	} {
		if stored != wire {
			t.Errorf("stored %q, the API says %q", stored, wire)
		}
	}
}

func agent(name string, hashByte byte, services []string, at time.Time) AgentRow {
	return AgentRow{Name: name, TokenHash: [32]byte{0xa6, hashByte, 7}, Services: services, MaxSessionTTL: time.Hour, CreatedAt: at, UpdatedAt: at}
}

func getAgent(t *testing.T, db *DB, name string) AgentRow {
	t.Helper()
	a, ok, err := db.Agent(ctx, name)
	if err != nil || !ok {
		t.Fatalf("Agent(%s) = %v %v", name, ok, err)
	}
	return a
}

// conflict fails the test unless err is ErrConflict, wrapped with the
// backend's name.
func conflict(t *testing.T, db *DB, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), "state "+db.Backend()+": ") {
		t.Fatalf("%s: %v, want ErrConflict", what, err)
	}
}

// refused fails the test unless err is a refusal (not a conflict) that
// names the backend.
func refused(t *testing.T, db *DB, what string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), "state "+db.Backend()+": ") {
		t.Fatalf("%s: %v, want a refusal", what, err)
	}
}

func testAgentsRoundTrip(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.Agent(ctx, "ci-bot"); err != nil || ok {
		t.Fatalf("missing agent: %v %v", ok, err)
	}
	if list, err := db.ListAgents(ctx); err != nil || len(list) != 0 {
		t.Fatalf("ListAgents on a new database: %v %v", list, err)
	}
	ci := agent("ci-bot", 1, []string{"github", "npm"}, clk.Now())
	ci.MaxSessionTTL = 90 * time.Minute
	clk.Add(time.Second)
	ci.UpdatedAt = clk.Now()
	local := agent("local", 2, []string{"*"}, clk.Now())
	must(t, db.InsertAgent(ctx, local))
	must(t, db.InsertAgent(ctx, ci))
	if got := getAgent(t, db, "ci-bot"); !reflect.DeepEqual(got, ci) {
		t.Fatalf("Agent = %+v, want %+v", got, ci)
	}
	got, ok, err := db.AgentByTokenHash(ctx, local.TokenHash)
	if err != nil || !ok || !reflect.DeepEqual(got, local) {
		t.Fatalf("AgentByTokenHash = %+v %v %v, want %+v", got, ok, err, local)
	}
	if _, ok, err := db.AgentByTokenHash(ctx, [32]byte{9}); err != nil || ok {
		t.Fatalf("unknown token hash: %v %v", ok, err)
	}
	list, err := db.ListAgents(ctx)
	must(t, err)
	if want := []AgentRow{ci, local}; !reflect.DeepEqual(list, want) {
		t.Fatalf("ListAgents = %+v, want %+v (by name)", list, want)
	}
}

func testAgentConflicts(t *testing.T, db *DB, clk *clock) {
	must(t, db.InsertAgent(ctx, agent("a", 1, []string{"x"}, clk.Now())))
	conflict(t, db, "same name", db.InsertAgent(ctx, agent("a", 2, []string{"y"}, clk.Now())))
	conflict(t, db, "same token hash", db.InsertAgent(ctx, agent("b", 1, []string{"y"}, clk.Now())))
	err := db.InsertAgent(ctx, agent("a", 3, []string{"y"}, clk.Now()))
	if want := "state " + db.Backend() + ": insert agent a: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q does not start with %q", err, want)
	}
	// The first agent is as it was.
	if got := getAgent(t, db, "a"); got.Services[0] != "x" || got.TokenHash[1] != 1 {
		t.Fatalf("the conflicting insert changed %+v", got)
	}
	if list, _ := db.ListAgents(ctx); len(list) != 1 {
		t.Fatalf("agents after conflicts: %+v", list)
	}
}

func testAgentValidation(t *testing.T, db *DB, clk *clock) {
	for what, mod := range map[string]func(*AgentRow){
		"no services":         func(a *AgentRow) { a.Services = nil },
		"empty services":      func(a *AgentRow) { a.Services = []string{} },
		"an empty name":       func(a *AgentRow) { a.Services = []string{"x", ""} },
		"a repeated service":  func(a *AgentRow) { a.Services = []string{"x", "y", "x"} },
		"* and a service":     func(a *AgentRow) { a.Services = []string{"*", "x"} },
		"a service and *":     func(a *AgentRow) { a.Services = []string{"x", "*"} },
		"a zero max ttl":      func(a *AgentRow) { a.MaxSessionTTL = 0 },
		"a negative max ttl":  func(a *AgentRow) { a.MaxSessionTTL = -time.Second },
		"a zero created time": func(a *AgentRow) { a.CreatedAt = time.Time{} },
		"updated in 2300":     func(a *AgentRow) { a.UpdatedAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		a := agent("v", 1, []string{"x"}, clk.Now())
		mod(&a)
		refused(t, db, what, db.InsertAgent(ctx, a))
	}
	if list, _ := db.ListAgents(ctx); len(list) != 0 {
		t.Fatalf("refused agents stored: %+v", list)
	}
	// A row that does not say what it allows fails to read rather than
	// allowing something.
	must(t, db.InsertAgent(ctx, agent("v", 1, []string{"x"}, clk.Now())))
	_, err := db.exec(ctx, `UPDATE agents SET services = '["*","x"]' WHERE name = 'v'`)
	must(t, err)
	if _, _, err := db.Agent(ctx, "v"); err == nil {
		t.Fatal("an agent with services [*, x] was read")
	}
}

func testAgentUpdate(t *testing.T, db *DB, clk *clock) {
	created := clk.Now()
	must(t, db.InsertAgent(ctx, agent("a", 1, []string{"github", "npm"}, created)))
	clk.Add(time.Minute)
	if _, ok, err := db.UpdateAgent(ctx, "a", []string{"npm"}, 0, clk.Now()); err != nil || !ok {
		t.Fatalf("update services: %v %v", ok, err)
	}
	got := getAgent(t, db, "a")
	if !reflect.DeepEqual(got.Services, []string{"npm"}) || got.MaxSessionTTL != time.Hour || !got.UpdatedAt.Equal(clk.Now()) || !got.CreatedAt.Equal(created) {
		t.Fatalf("after updating the services: %+v", got)
	}
	clk.Add(time.Minute)
	// The answer is the committed row, the services a concurrent grant
	// added included (a TTL-only update writes no services back).
	if _, err := db.GrantAgentService(ctx, "a", "stripe", clk.Now()); err != nil {
		t.Fatal(err)
	}
	committed, ok, err := db.UpdateAgent(ctx, "a", nil, 10*time.Minute, clk.Now())
	if err != nil || !ok || !reflect.DeepEqual(committed, getAgent(t, db, "a")) || !reflect.DeepEqual(committed.Services, []string{"npm", "stripe"}) {
		t.Fatalf("update ttl: %+v %v %v, want the stored row with npm and stripe", committed, ok, err)
	}
	if _, _, err := db.UpdateAgent(ctx, "a", []string{"npm"}, 0, clk.Now()); err != nil {
		t.Fatal(err)
	}
	got = getAgent(t, db, "a")
	if !reflect.DeepEqual(got.Services, []string{"npm"}) || got.MaxSessionTTL != 10*time.Minute || !got.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("after updating the ttl: %+v", got)
	}
	if _, ok, err := db.UpdateAgent(ctx, "a", []string{"*"}, 2*time.Hour, clk.Now()); err != nil || !ok {
		t.Fatalf("update both: %v %v", ok, err)
	}
	if got = getAgent(t, db, "a"); !reflect.DeepEqual(got.Services, []string{"*"}) || got.MaxSessionTTL != 2*time.Hour {
		t.Fatalf("after updating both: %+v", got)
	}
	if row, ok, err := db.UpdateAgent(ctx, "nobody", []string{"x"}, time.Hour, clk.Now()); err != nil || ok || row.Name != "" {
		t.Fatalf("update of an unknown agent: %+v %v %v", row, ok, err)
	}
	for what, services := range map[string][]string{"empty": {}, "* and x": {"*", "x"}, "repeated": {"x", "x"}} {
		_, _, err := db.UpdateAgent(ctx, "a", services, 0, clk.Now())
		refused(t, db, "services "+what, err)
	}
	_, _, err = db.UpdateAgent(ctx, "a", nil, -time.Second, clk.Now())
	refused(t, db, "a negative ttl", err)
	if got := getAgent(t, db, "a"); !reflect.DeepEqual(got.Services, []string{"*"}) || got.MaxSessionTTL != 2*time.Hour {
		t.Fatalf("refused updates changed %+v", got)
	}
}

func testAgentRotate(t *testing.T, db *DB, clk *clock) {
	old := agent("a", 1, []string{"x"}, clk.Now())
	must(t, db.InsertAgent(ctx, old))
	other := agent("b", 2, []string{"x"}, clk.Now())
	must(t, db.InsertAgent(ctx, other))
	clk.Add(time.Minute)
	fresh := [32]byte{0xa6, 3, 7}
	mk := func(id string, hashByte byte) {
		s := session(id, hashByte, clk.Now())
		s.Agent = "a"
		must(t, db.InsertSession(ctx, s))
	}
	mk("a1", 1)
	rotated, ok, revoked, err := db.RotateAgentToken(ctx, "a", fresh, clk.Now(), false)
	if err != nil || !ok || revoked != nil || rotated.TokenHash != fresh || !reflect.DeepEqual(rotated, getAgent(t, db, "a")) {
		t.Fatalf("rotate: %+v %v %v %v", rotated, ok, revoked, err)
	}
	// Without revokeSessions, the agent's sessions live on.
	if s, _, _ := db.Session(ctx, "a1"); s.RevokedAt != nil {
		t.Fatal("a rotation without revoke_sessions revoked a session")
	}
	if _, ok, err := db.AgentByTokenHash(ctx, old.TokenHash); err != nil || ok {
		t.Fatalf("the old token hash still finds the agent: %v %v", ok, err)
	}
	got, ok, err := db.AgentByTokenHash(ctx, fresh)
	if err != nil || !ok || got.Name != "a" || !got.UpdatedAt.Equal(clk.Now()) || !got.CreatedAt.Equal(old.CreatedAt) {
		t.Fatalf("the new token hash: %+v %v %v", got, ok, err)
	}
	if _, ok, _, err := db.RotateAgentToken(ctx, "nobody", [32]byte{4}, clk.Now(), true); err != nil || ok {
		t.Fatalf("rotate an unknown agent: %v %v", ok, err)
	}
	_, _, _, err = db.RotateAgentToken(ctx, "a", other.TokenHash, clk.Now(), false)
	conflict(t, db, "rotate to another agent's hash", err)
	if got, _, _ := db.AgentByTokenHash(ctx, fresh); got.Name != "a" {
		t.Fatalf("the conflicting rotation changed a's token: %+v", got)
	}
	// With revokeSessions, its sessions end in the same transaction,
	// announced; other agents' stay.
	mk("a2", 2)
	s := session("b1", 3, clk.Now())
	s.Agent = "b"
	must(t, db.InsertSession(ctx, s))
	r := subscribe(t, db)
	clk.Add(time.Minute)
	third := [32]byte{0xa6, 9, 7}
	rotated, ok, revoked, err = db.RotateAgentToken(ctx, "a", third, clk.Now(), true)
	if err != nil || !ok || rotated.TokenHash != third || !reflect.DeepEqual(revoked, []string{"a1", "a2"}) {
		t.Fatalf("rotate and revoke: %+v %v %v %v", rotated, ok, revoked, err)
	}
	r.waitFor(t, time.Second, Change{TopicSessions, "a1"}, Change{TopicSessions, "a2"})
	for id, want := range map[string]bool{"a1": true, "a2": true, "b1": false} {
		if s, _, _ := db.Session(ctx, id); (s.RevokedAt != nil) != want {
			t.Errorf("session %s revoked %v, want %v", id, s.RevokedAt != nil, want)
		}
	}
}

func testAgentDelete(t *testing.T, db *DB, clk *clock) {
	must(t, db.InsertAgent(ctx, agent("a", 1, []string{"x"}, clk.Now())))
	must(t, db.InsertAgent(ctx, agent("b", 2, []string{"x"}, clk.Now())))
	mk := func(id, agentName string, hashByte byte) {
		s := session(id, hashByte, clk.Now())
		s.Agent = agentName
		must(t, db.InsertSession(ctx, s))
	}
	mk("a1", "a", 1)
	mk("a2", "a", 2)
	mk("a-old", "a", 3)
	mk("b1", "b", 4)
	mk("none", "", 5)
	earlier := clk.Now().Add(time.Second)
	if ok, err := db.RevokeSession(ctx, "a-old", earlier); err != nil || !ok {
		t.Fatal(ok, err)
	}
	must(t, insertRequest(db, request("req_a_pending", "a", "x", "", clk.Now())))
	must(t, insertRequest(db, request("req_a_decided", "a", "y", "", clk.Now())))
	must(t, insertRequest(db, request("req_b_pending", "b", "x", "", clk.Now())))
	if _, _, err := db.DecideAccessRequest(ctx, "req_a_decided", requestDenied, "alice", "", clk.Now()); err != nil {
		t.Fatal(err)
	}

	r := subscribe(t, db)
	at := clk.Now().Add(time.Minute)
	found, revoked, err := db.DeleteAgent(ctx, "a", at)
	if err != nil || !found || !reflect.DeepEqual(revoked, []string{"a1", "a2"}) {
		t.Fatalf("DeleteAgent = %v %v %v, want true [a1 a2]", found, revoked, err)
	}
	r.waitFor(t, time.Second, Change{TopicSessions, "a1"}, Change{TopicSessions, "a2"})
	if _, ok, _ := db.Agent(ctx, "a"); ok {
		t.Fatal("the agent is still there")
	}
	for id, want := range map[string]*time.Time{"a1": &at, "a2": &at, "a-old": &earlier, "b1": nil, "none": nil} {
		s, _, err := db.Session(ctx, id)
		must(t, err)
		if (s.RevokedAt == nil) != (want == nil) || (want != nil && !s.RevokedAt.Equal(*want)) {
			t.Errorf("session %s revoked at %v, want %v", id, s.RevokedAt, want)
		}
	}
	// The deleted agent's pending request is gone (a later agent of the
	// same name must not inherit it); its decided one and b's stay.
	for id, want := range map[string]bool{"req_a_pending": false, "req_a_decided": true, "req_b_pending": true} {
		if _, ok, err := db.AccessRequest(ctx, id); err != nil || ok != want {
			t.Errorf("request %s there: %v %v, want %v", id, ok, err, want)
		}
	}
	if _, ok, _ := db.Agent(ctx, "b"); !ok {
		t.Fatal("b was deleted too")
	}

	// An unknown agent: nothing found, nothing revoked, nothing announced.
	mk("ghost1", "ghost", 6)
	settle(t, db, r)
	r.reset()
	found, revoked, err = db.DeleteAgent(ctx, "ghost", at)
	if err != nil || found || revoked != nil {
		t.Fatalf("DeleteAgent(unknown) = %v %v %v", found, revoked, err)
	}
	if s, _, _ := db.Session(ctx, "ghost1"); s.RevokedAt != nil {
		t.Fatal("deleting an unknown agent revoked a session with its name")
	}
	// Deleting again finds nothing.
	if found, revoked, err := db.DeleteAgent(ctx, "a", at); err != nil || found || revoked != nil {
		t.Fatalf("DeleteAgent again = %v %v %v", found, revoked, err)
	}
	_, _, err = db.DeleteAgent(ctx, "b", time.Time{})
	refused(t, db, "a deletion at the zero time", err)
	if _, ok, _ := db.Agent(ctx, "b"); !ok {
		t.Fatal("the refused deletion deleted b")
	}
	settle(t, db, r)
	if c := r.sessionChanges(); len(c) != 0 {
		t.Fatalf("deleting nothing announced %v", c)
	}
}

func testAgentGrant(t *testing.T, db *DB, clk *clock) {
	created := clk.Now()
	must(t, db.InsertAgent(ctx, agent("a", 1, []string{"github"}, created)))
	must(t, db.InsertAgent(ctx, agent("all", 2, []string{"*"}, created)))
	clk.Add(time.Minute)
	if ok, err := db.GrantAgentService(ctx, "a", "stripe", clk.Now()); err != nil || !ok {
		t.Fatalf("grant: %v %v", ok, err)
	}
	got := getAgent(t, db, "a")
	if !reflect.DeepEqual(got.Services, []string{"github", "stripe"}) || !got.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("after the grant: %+v", got)
	}
	granted := clk.Now()
	clk.Add(time.Minute)
	// Already there: nothing changes, updated_at included.
	if ok, err := db.GrantAgentService(ctx, "a", "github", clk.Now()); err != nil || !ok {
		t.Fatalf("grant again: %v %v", ok, err)
	}
	if got := getAgent(t, db, "a"); !reflect.DeepEqual(got.Services, []string{"github", "stripe"}) || !got.UpdatedAt.Equal(granted) {
		t.Fatalf("a repeated grant changed %+v", got)
	}
	if ok, err := db.GrantAgentService(ctx, "all", "stripe", clk.Now()); err != nil || !ok {
		t.Fatalf("grant to *: %v %v", ok, err)
	}
	if got := getAgent(t, db, "all"); !reflect.DeepEqual(got.Services, []string{"*"}) || !got.UpdatedAt.Equal(created) {
		t.Fatalf("a grant to an agent with * changed %+v", got)
	}
	if ok, err := db.GrantAgentService(ctx, "nobody", "stripe", clk.Now()); err != nil || ok {
		t.Fatalf("grant to an unknown agent: %v %v", ok, err)
	}
	for _, svc := range []string{"", "*"} {
		_, err := db.GrantAgentService(ctx, "a", svc, clk.Now())
		refused(t, db, fmt.Sprintf("granting %q", svc), err)
	}
}

// TestGrantAgentServiceConcurrently: two brokers (two handles on one
// database) grant services to one agent from many goroutines at once,
// some of them the same service. Every service ends up in the list
// exactly once: no grant is lost to another's read-modify-write.
func TestGrantAgentServiceConcurrently(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		brokers := []*DB{open(t, cfg), open(t, cfg)}
		now := time.Now()
		must(t, brokers[0].InsertAgent(ctx, agent("a", 1, []string{"base"}, now)))
		const goroutines, each = 16, 5
		var wg sync.WaitGroup
		errs := make(chan error, goroutines*each*2)
		for g := range goroutines {
			db := brokers[g%2]
			wg.Go(func() {
				for i := range each {
					ok, err := db.GrantAgentService(ctx, "a", fmt.Sprintf("s%02d-%d", g, i), now)
					if err == nil && !ok {
						err = errors.New("agent not found")
					}
					errs <- err
					// Everyone also grants the same one.
					_, err = db.GrantAgentService(ctx, "a", "shared", now)
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		want := []string{"base", "shared"}
		for g := range goroutines {
			for i := range each {
				want = append(want, fmt.Sprintf("s%02d-%d", g, i))
			}
		}
		got := getAgent(t, brokers[1], "a").Services
		slices.Sort(got)
		slices.Sort(want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("services after %d concurrent grants: %d of them %v\nwant %d: %v", goroutines*each, len(got), got, len(want), want)
		}
	})
}

func operator(name, role string, at time.Time) OperatorRow {
	return OperatorRow{Name: name, PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$" + name, Role: role, CreatedAt: at, UpdatedAt: at}
}

// login is the two secrets of login number hashByte: its bearer
// token's hash {0xa0, hashByte} and its cookie's {0xc0, hashByte}.
func login(hashByte byte, op string, at time.Time) []LoginRow {
	l := LoginRow{ID: fmt.Sprint("login-", hashByte), TokenHash: [32]byte{0xa0, hashByte}, Via: LoginViaBearer, Operator: op, CreatedAt: at, ExpiresAt: at.Add(12 * time.Hour)}
	c := l
	c.TokenHash, c.Via = [32]byte{0xc0, hashByte}, LoginViaCookie
	return []LoginRow{l, c}
}

// insertRequest stores r for its agent as it is stored (made first if
// there is none), allowing many pending requests.
func insertRequest(db *DB, r AccessRequestRow) error {
	var created time.Time
	if r.Agent != "" {
		a, ok, err := db.Agent(ctx, r.Agent)
		if err != nil {
			return err
		}
		if !ok {
			a = agent(r.Agent, 0, []string{"x"}, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
			a.TokenHash = sha256.Sum256([]byte(r.Agent))
			if err := db.InsertAgent(ctx, a); err != nil {
				return err
			}
		}
		created = a.CreatedAt
	}
	return db.InsertAccessRequest(ctx, r, created, 1000)
}

// loggedIn reports whether the login with that hash authenticates.
func loggedIn(t *testing.T, db *DB, hashByte byte) bool {
	t.Helper()
	_, _, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xa0, hashByte})
	must(t, err)
	return ok
}

func testOperatorsRoundTrip(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.Operator(ctx, "alice"); err != nil || ok {
		t.Fatalf("missing operator: %v %v", ok, err)
	}
	alice := operator("alice", "owner", clk.Now())
	clk.Add(time.Second)
	bob := operator("bob", "viewer", clk.Now())
	must(t, db.InsertOperator(ctx, bob))
	must(t, db.InsertOperator(ctx, alice))
	if got, ok, err := db.Operator(ctx, "alice"); err != nil || !ok || !reflect.DeepEqual(got, alice) {
		t.Fatalf("Operator = %+v %v %v, want %+v", got, ok, err, alice)
	}
	list, err := db.ListOperators(ctx)
	must(t, err)
	if want := []OperatorRow{alice, bob}; !reflect.DeepEqual(list, want) {
		t.Fatalf("ListOperators = %+v, want %+v", list, want)
	}
	conflict(t, db, "same name", db.InsertOperator(ctx, operator("alice", "viewer", clk.Now())))
	if got, _, _ := db.Operator(ctx, "alice"); got.Role != "owner" {
		t.Fatalf("the conflicting insert changed alice: %+v", got)
	}
	for what, o := range map[string]OperatorRow{
		"no password hash": {Name: "c", Role: "admin", CreatedAt: clk.Now(), UpdatedAt: clk.Now()},
		"no role":          {Name: "c", PasswordHash: "h", CreatedAt: clk.Now(), UpdatedAt: clk.Now()},
		"no created time":  {Name: "c", PasswordHash: "h", Role: "admin", UpdatedAt: clk.Now()},
	} {
		refused(t, db, what, db.InsertOperator(ctx, o))
	}
	// The login joins its operator as stored now.
	must(t, db.InsertLogin(ctx, login(1, "alice", clk.Now()), alice.PasswordHash))
	l, o, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xa0, 1})
	if want := login(1, "alice", clk.Now())[0]; err != nil || !ok || !reflect.DeepEqual(l, want) || !reflect.DeepEqual(o, alice) {
		t.Fatalf("LoginByTokenHash = %+v %+v %v %v, want %+v %+v", l, o, ok, err, want, alice)
	}
	if loggedIn(t, db, 99) {
		t.Fatal("an unknown login authenticates")
	}
}

func testOperatorUpdateLogins(t *testing.T, db *DB, clk *clock) {
	alice, bob := operator("alice", "admin", clk.Now()), operator("bob", "admin", clk.Now())
	must(t, db.InsertOperator(ctx, alice))
	must(t, db.InsertOperator(ctx, bob))
	must(t, db.InsertLogin(ctx, login(1, "alice", clk.Now()), alice.PasswordHash))
	must(t, db.InsertLogin(ctx, login(2, "alice", clk.Now()), alice.PasswordHash))
	must(t, db.InsertLogin(ctx, login(3, "bob", clk.Now()), bob.PasswordHash))

	// A role change keeps the logins, and they see the new role at once.
	clk.Add(time.Minute)
	viewer := "viewer"
	if _, ok, err := db.UpdateOperator(ctx, "alice", &viewer, nil, clk.Now()); err != nil || !ok {
		t.Fatalf("role change: %v %v", ok, err)
	}
	_, o, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xa0, 1})
	if err != nil || !ok || o.Role != "viewer" || o.PasswordHash != alice.PasswordHash || !o.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("after the role change: %+v %v %v", o, ok, err)
	}
	// A password change ends all of alice's logins and none of bob's.
	clk.Add(time.Minute)
	newHash := "$argon2id$v=19$m=19456,t=2,p=1$bmV3$new"
	if _, ok, err := db.UpdateOperator(ctx, "alice", nil, &newHash, clk.Now()); err != nil || !ok {
		t.Fatalf("password change: %v %v", ok, err)
	}
	if loggedIn(t, db, 1) || loggedIn(t, db, 2) {
		t.Fatal("alice's logins survived her password change")
	}
	if !loggedIn(t, db, 3) {
		t.Fatal("alice's password change ended bob's login")
	}
	got, _, _ := db.Operator(ctx, "alice")
	if got.PasswordHash != newHash || got.Role != "viewer" || !got.UpdatedAt.Equal(clk.Now()) || !got.CreatedAt.Equal(alice.CreatedAt) {
		t.Fatalf("after the password change: %+v", got)
	}
	// Both at once.
	admin, third := "admin", "$argon2id$third"
	must(t, db.InsertLogin(ctx, login(4, "alice", clk.Now()), newHash))
	if _, ok, err := db.UpdateOperator(ctx, "alice", &admin, &third, clk.Now()); err != nil || !ok {
		t.Fatalf("role and password: %v %v", ok, err)
	}
	if got, _, _ := db.Operator(ctx, "alice"); got.Role != "admin" || got.PasswordHash != third || loggedIn(t, db, 4) {
		t.Fatalf("after role and password: %+v, login 4 %v", got, loggedIn(t, db, 4))
	}
	// The answer is the committed row.
	if row, ok, err := db.UpdateOperator(ctx, "alice", &viewer, nil, clk.Now()); err != nil || !ok || row.Role != "viewer" || row.PasswordHash != third {
		t.Fatalf("the committed row: %+v %v %v", row, ok, err)
	}
	// A rehash (same password, new parameters) ends no login and moves
	// no updated_at; only from the hash the login matched.
	must(t, db.InsertLogin(ctx, login(5, "alice", clk.Now()), third))
	before, _, _ := db.Operator(ctx, "alice")
	clk.Add(time.Minute)
	rehashed := "$argon2id$rehashed"
	if ok, err := db.RehashOperatorPassword(ctx, "alice", "$argon2id$stale", rehashed); err != nil || ok {
		t.Fatalf("rehash from a hash that is no longer hers: %v %v", ok, err)
	}
	if ok, err := db.RehashOperatorPassword(ctx, "alice", third, rehashed); err != nil || !ok {
		t.Fatalf("rehash: %v %v", ok, err)
	}
	if got, _, _ := db.Operator(ctx, "alice"); got.PasswordHash != rehashed || !got.UpdatedAt.Equal(before.UpdatedAt) || !loggedIn(t, db, 5) {
		t.Fatalf("after the rehash: %+v (updated_at before %v), login 5 %v", got, before.UpdatedAt, loggedIn(t, db, 5))
	}
	if ok, err := db.RehashOperatorPassword(ctx, "nobody", third, rehashed); err != nil || ok {
		t.Fatalf("rehash of an unknown operator: %v %v", ok, err)
	}
	_, err = db.RehashOperatorPassword(ctx, "alice", rehashed, "")
	refused(t, db, "a rehash to nothing", err)
	role := "admin"
	if _, _, err := db.UpdateOperator(ctx, "alice", &role, nil, clk.Now()); err != nil {
		t.Fatal(err)
	}
	// Nothing to change: reports whether the operator exists.
	if _, ok, err := db.UpdateOperator(ctx, "alice", nil, nil, clk.Now()); err != nil || !ok {
		t.Fatalf("empty update: %v %v", ok, err)
	}
	if _, ok, err := db.UpdateOperator(ctx, "nobody", &admin, &third, clk.Now()); err != nil || ok {
		t.Fatalf("update of an unknown operator: %v %v", ok, err)
	}
	if _, ok, err := db.UpdateOperator(ctx, "nobody", nil, nil, clk.Now()); err != nil || ok {
		t.Fatalf("empty update of an unknown operator: %v %v", ok, err)
	}
	empty := ""
	_, _, err = db.UpdateOperator(ctx, "alice", &empty, nil, clk.Now())
	refused(t, db, "an empty role", err)
	_, _, err = db.UpdateOperator(ctx, "alice", nil, &empty, clk.Now())
	refused(t, db, "an empty password hash", err)
}

func testOperatorDelete(t *testing.T, db *DB, clk *clock) {
	alice, bob := operator("alice", "admin", clk.Now()), operator("bob", "admin", clk.Now())
	must(t, db.InsertOperator(ctx, alice))
	must(t, db.InsertOperator(ctx, bob))
	must(t, db.InsertLogin(ctx, login(1, "alice", clk.Now()), alice.PasswordHash))
	must(t, db.InsertLogin(ctx, login(2, "bob", clk.Now()), bob.PasswordHash))
	if ok, err := db.DeleteOperator(ctx, "alice"); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if loggedIn(t, db, 1) {
		t.Fatal("a deleted operator's login authenticates")
	}
	if !loggedIn(t, db, 2) {
		t.Fatal("deleting alice ended bob's login")
	}
	// A new operator of the same name does not inherit anything.
	must(t, db.InsertOperator(ctx, operator("alice", "owner", clk.Now())))
	if loggedIn(t, db, 1) {
		t.Fatal("the old alice's login authenticates as the new alice")
	}
	if ok, err := db.DeleteOperator(ctx, "nobody"); err != nil || ok {
		t.Fatalf("delete an unknown operator: %v %v", ok, err)
	}
	if list, _ := db.ListOperators(ctx); len(list) != 2 {
		t.Fatalf("operators: %+v", list)
	}
}

func testLoginInsert(t *testing.T, db *DB, clk *clock) {
	alice := operator("alice", "admin", clk.Now())
	must(t, db.InsertOperator(ctx, alice))
	must(t, db.InsertLogin(ctx, login(1, "alice", clk.Now()), alice.PasswordHash))
	conflict(t, db, "same token hash", db.InsertLogin(ctx, login(1, "alice", clk.Now()), alice.PasswordHash))
	// The operator went away, or changed password, between the
	// password check and the insert: no login.
	conflict(t, db, "an unknown operator", db.InsertLogin(ctx, login(2, "nobody", clk.Now()), alice.PasswordHash))
	conflict(t, db, "a password hash that is no longer the operator's", db.InsertLogin(ctx, login(3, "alice", clk.Now()), "$argon2id$old"))
	for what, mod := range map[string]func([]LoginRow) []LoginRow{
		"expiring when created": func(l []LoginRow) []LoginRow {
			l[0].ExpiresAt, l[1].ExpiresAt = l[0].CreatedAt, l[0].CreatedAt
			return l
		},
		"expired before": func(l []LoginRow) []LoginRow {
			l[0].ExpiresAt, l[1].ExpiresAt = l[0].CreatedAt.Add(-time.Second), l[0].CreatedAt.Add(-time.Second)
			return l
		},
		"no created time":          func(l []LoginRow) []LoginRow { l[0].CreatedAt, l[1].CreatedAt = time.Time{}, time.Time{}; return l },
		"one secret":               func(l []LoginRow) []LoginRow { return l[:1] },
		"no secret":                func([]LoginRow) []LoginRow { return nil },
		"two bearer secrets":       func(l []LoginRow) []LoginRow { l[1].Via = LoginViaBearer; return l },
		"another via":              func(l []LoginRow) []LoginRow { l[1].Via = "header"; return l },
		"the same secret twice":    func(l []LoginRow) []LoginRow { l[1].TokenHash = l[0].TokenHash; return l },
		"secrets of two logins":    func(l []LoginRow) []LoginRow { l[1].ID = "login-other"; return l },
		"secrets of two operators": func(l []LoginRow) []LoginRow { l[1].Operator = "bob"; return l },
		"secrets of two times":     func(l []LoginRow) []LoginRow { l[1].ExpiresAt = l[1].ExpiresAt.Add(time.Hour); return l },
		"no id":                    func(l []LoginRow) []LoginRow { l[0].ID, l[1].ID = "", ""; return l },
		"no hash":                  func(l []LoginRow) []LoginRow { l[1].TokenHash = [32]byte{}; return l },
	} {
		refused(t, db, what, db.InsertLogin(ctx, mod(login(4, "alice", clk.Now())), alice.PasswordHash))
	}
	// A login id taken already (with fresh secrets) is a conflict.
	again := login(5, "alice", clk.Now())
	again[0].ID, again[1].ID = "login-1", "login-1"
	conflict(t, db, "same login id", db.InsertLogin(ctx, again, alice.PasswordHash))
	refused(t, db, "no checked hash", db.InsertLogin(ctx, login(7, "alice", clk.Now()), ""))
	for _, b := range []byte{2, 3, 4, 5, 6, 7} {
		if loggedIn(t, db, b) || cookieLoggedIn(t, db, b) {
			t.Errorf("refused login %d stored", b)
		}
	}
	// Each secret finds the login and says which it is.
	for hash, via := range map[[32]byte]string{{0xa0, 1}: LoginViaBearer, {0xc0, 1}: LoginViaCookie} {
		l, _, ok, err := db.LoginByTokenHash(ctx, hash)
		if err != nil || !ok || l.ID != "login-1" || l.Via != via || l.TokenHash != hash {
			t.Fatalf("LoginByTokenHash(%x) = %+v %v %v, want login-1 via %s", hash[:2], l, ok, err, via)
		}
	}
	// Logout ends both secrets.
	must(t, db.InsertLogin(ctx, login(8, "alice", clk.Now()), alice.PasswordHash))
	must(t, db.DeleteLogin(ctx, "login-1"))
	if loggedIn(t, db, 1) || cookieLoggedIn(t, db, 1) {
		t.Fatal("a deleted login authenticates")
	}
	if !loggedIn(t, db, 8) || !cookieLoggedIn(t, db, 8) {
		t.Fatal("logging out ended another login")
	}
	must(t, db.DeleteLogin(ctx, "login-1"))
	refused(t, db, "a logout without an id", db.DeleteLogin(ctx, ""))
}

// cookieLoggedIn reports whether the cookie secret of that login
// authenticates.
func cookieLoggedIn(t *testing.T, db *DB, hashByte byte) bool {
	t.Helper()
	_, _, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xc0, hashByte})
	must(t, err)
	return ok
}

// TestLoginInsertRacesPasswordChange: logins stored while the password
// changes, from two brokers. Each login was checked against the old
// password, so none may outlive the change: it is either stored first
// and deleted by the change, or refused.
func TestLoginInsertRacesPasswordChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		brokers := []*DB{open(t, cfg), open(t, cfg)}
		now := time.Now()
		alice := operator("alice", "admin", now)
		must(t, brokers[0].InsertOperator(ctx, alice))
		const n = 40
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				err := brokers[i%2].InsertLogin(ctx, login(byte(i), "alice", now), alice.PasswordHash)
				if err != nil && !errors.Is(err, ErrConflict) {
					t.Error(err)
				}
			})
		}
		wg.Go(func() {
			<-start
			newHash := "$argon2id$new"
			if _, _, err := brokers[1].UpdateOperator(ctx, "alice", nil, &newHash, now); err != nil {
				t.Error(err)
			}
		})
		close(start)
		wg.Wait()
		for i := range n {
			if loggedIn(t, brokers[0], byte(i)) {
				t.Fatalf("login %d, checked against the old password, outlived the change", i)
			}
		}
	})
}

func testLoginsExpired(t *testing.T, db *DB, clk *clock) {
	alice := operator("alice", "admin", clk.Now())
	must(t, db.InsertOperator(ctx, alice))
	now := clk.Now()
	for i, expires := range []time.Duration{time.Minute, time.Hour, 2 * time.Hour} {
		l := login(byte(i), "alice", now)
		l[0].ExpiresAt, l[1].ExpiresAt = now.Add(expires), now.Add(expires)
		must(t, db.InsertLogin(ctx, l, alice.PasswordHash))
	}
	n, err := db.DeleteLoginsExpiredBefore(ctx, now.Add(time.Hour))
	if err != nil || n != 2 || cookieLoggedIn(t, db, 0) {
		t.Fatalf("deleted %d %v, want the 2 secrets of one login (strictly before)", n, err)
	}
	// An expired login is still returned, with its expiry, until
	// deleted: the caller compares.
	l, _, ok, err := db.LoginByTokenHash(ctx, [32]byte{0xa0, 1})
	if err != nil || !ok || !l.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("login 1: %+v %v %v", l, ok, err)
	}
	if n, err := db.DeleteLoginsExpiredBefore(ctx, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil || n != 4 {
		t.Fatalf("deleted %d %v, want 4", n, err)
	}
	if loggedIn(t, db, 1) || loggedIn(t, db, 2) {
		t.Fatal("expired logins left")
	}
}

func request(id, agentName, service, host string, at time.Time) AccessRequestRow {
	return AccessRequestRow{ID: id, Agent: agentName, Service: service, Host: host, Status: requestPending, CreatedAt: at}
}

func testAccessRequests(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.AccessRequest(ctx, "req_x"); err != nil || ok {
		t.Fatalf("missing request: %v %v", ok, err)
	}
	svc := request("req_1", "ci-bot", "stripe", "", clk.Now())
	svc.Session = "sess1"
	svc.Reason = "billing job"
	must(t, insertRequest(db, svc))
	clk.Add(time.Second)
	host := request("req_2", "ci-bot", "", "api.stripe.com", clk.Now())
	host.Status = "" // stored as pending
	must(t, insertRequest(db, host))
	host.Status = requestPending
	clk.Add(time.Second)
	other := request("req_3", "other", "stripe", "", clk.Now())
	must(t, insertRequest(db, other))
	if got, ok, err := db.AccessRequest(ctx, "req_1"); err != nil || !ok || !reflect.DeepEqual(got, svc) {
		t.Fatalf("AccessRequest = %+v %v %v, want %+v", got, ok, err, svc)
	}
	conflict(t, db, "same id", insertRequest(db, request("req_1", "x", "y", "", clk.Now())))
	for what, mod := range map[string]func(*AccessRequestRow){
		"no id":             func(r *AccessRequestRow) { r.ID = "" },
		"no agent":          func(r *AccessRequestRow) { r.Agent = "" },
		"service and host":  func(r *AccessRequestRow) { r.Host = "h.example" },
		"neither":           func(r *AccessRequestRow) { r.Service = "" },
		"already approved":  func(r *AccessRequestRow) { r.Status = requestApproved },
		"a decision":        func(r *AccessRequestRow) { r.DecidedBy = "alice" },
		"a decision time":   func(r *AccessRequestRow) { now := clk.Now(); r.DecidedAt = &now },
		"no creation time":  func(r *AccessRequestRow) { r.CreatedAt = time.Time{} },
		"a decision reason": func(r *AccessRequestRow) { r.DecisionReason = "no" },
	} {
		r := request("req_bad", "a", "s", "", clk.Now())
		mod(&r)
		refused(t, db, what, insertRequest(db, r))
	}

	ids := func(f AccessRequestFilter) []string {
		t.Helper()
		list, err := db.ListAccessRequests(ctx, f)
		must(t, err)
		var out []string
		for _, r := range list {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    AccessRequestFilter
		want []string
	}{
		{AccessRequestFilter{}, []string{"req_3", "req_2", "req_1"}}, // newest first
		{AccessRequestFilter{Agent: "ci-bot"}, []string{"req_2", "req_1"}},
		{AccessRequestFilter{Status: requestPending, Limit: 2}, []string{"req_3", "req_2"}},
		{AccessRequestFilter{Status: requestDenied}, nil},
		{AccessRequestFilter{Agent: "nobody"}, nil},
	} {
		if got := ids(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListAccessRequests(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}

	// The pending one for exactly that agent, service and host.
	for _, tc := range []struct {
		agent, service, host, want string
	}{
		{"ci-bot", "stripe", "", "req_1"},
		{"ci-bot", "", "api.stripe.com", "req_2"},
		{"other", "stripe", "", "req_3"},
		{"ci-bot", "github", "", ""},
		{"ci-bot", "", "api.github.com", ""},
		{"nobody", "stripe", "", ""},
	} {
		got, ok, err := db.PendingAccessRequest(ctx, tc.agent, tc.service, tc.host)
		if err != nil || ok != (tc.want != "") || got.ID != tc.want {
			t.Errorf("PendingAccessRequest(%q, %q, %q) = %q %v %v, want %q", tc.agent, tc.service, tc.host, got.ID, ok, err, tc.want)
		}
	}
	if _, _, err := db.DecideAccessRequest(ctx, "req_1", requestApproved, "alice", "", clk.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.PendingAccessRequest(ctx, "ci-bot", "stripe", ""); err != nil || ok {
		t.Fatalf("a decided request is still pending: %v %v", ok, err)
	}
	if got := ids(AccessRequestFilter{Status: requestApproved}); !reflect.DeepEqual(got, []string{"req_1"}) {
		t.Fatalf("approved: %v", got)
	}
}

func testAccessRequestAgentChecks(t *testing.T, db *DB, clk *clock) {
	old := agent("ci-bot", 1, []string{"x"}, clk.Now())
	must(t, db.InsertAgent(ctx, old))
	clk.Add(time.Second)
	must(t, db.InsertAccessRequest(ctx, request("req_old", "ci-bot", "", "a.example", clk.Now()), old.CreatedAt, 3))
	if _, _, err := db.DecideAccessRequest(ctx, "req_old", requestApproved, "alice", "", clk.Now()); err != nil {
		t.Fatal(err)
	}
	// Deleted, and made again under the same name: a request of the old
	// agent, filed across the change, is refused.
	if _, _, err := db.DeleteAgent(ctx, "ci-bot", clk.Now()); err != nil {
		t.Fatal(err)
	}
	gone := db.InsertAccessRequest(ctx, request("req_gone", "ci-bot", "", "b.example", clk.Now()), old.CreatedAt, 3)
	if !errors.Is(gone, ErrAgentGone) {
		t.Fatalf("a request for a deleted agent: %v, want ErrAgentGone", gone)
	}
	clk.Add(time.Second)
	fresh := agent("ci-bot", 2, []string{"x"}, clk.Now())
	must(t, db.InsertAgent(ctx, fresh))
	if err := db.InsertAccessRequest(ctx, request("req_gone", "ci-bot", "", "b.example", clk.Now()), old.CreatedAt, 3); !errors.Is(err, ErrAgentGone) {
		t.Fatalf("a request of the old agent for the new one of its name: %v, want ErrAgentGone", err)
	}
	if _, ok, _ := db.AccessRequest(ctx, "req_gone"); ok {
		t.Fatal("a refused request was stored")
	}
	// The quota of pending requests, in the same transaction.
	for i := range 3 {
		clk.Add(time.Second)
		must(t, db.InsertAccessRequest(ctx, request(fmt.Sprint("req_", i), "ci-bot", "", fmt.Sprint(i, ".example"), clk.Now()), fresh.CreatedAt, 3))
	}
	if err := db.InsertAccessRequest(ctx, request("req_4", "ci-bot", "", "4.example", clk.Now()), fresh.CreatedAt, 3); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("a fourth pending request: %v, want ErrTooManyPending", err)
	}
	// A decided one frees its place.
	if _, _, err := db.DecideAccessRequest(ctx, "req_0", requestDenied, "alice", "", clk.Now()); err != nil {
		t.Fatal(err)
	}
	must(t, db.InsertAccessRequest(ctx, request("req_4", "ci-bot", "", "4.example", clk.Now()), fresh.CreatedAt, 3))
	refused(t, db, "no quota", db.InsertAccessRequest(ctx, request("req_5", "ci-bot", "", "5.example", clk.Now()), fresh.CreatedAt, 0))
	refused(t, db, "no agent creation time", db.InsertAccessRequest(ctx, request("req_5", "ci-bot", "", "5.example", clk.Now()), time.Time{}, 3))
	// Since keeps those made at or after a time: the new agent's.
	list, err := db.ListAccessRequests(ctx, AccessRequestFilter{Agent: "ci-bot", Since: fresh.CreatedAt})
	must(t, err)
	var ids []string
	for _, r := range list {
		ids = append(ids, r.ID)
	}
	if want := []string{"req_4", "req_2", "req_1", "req_0"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("the new agent's requests: %v, want %v", ids, want)
	}
}

func testAccessRequestDecide(t *testing.T, db *DB, clk *clock) {
	must(t, insertRequest(db, request("req_1", "a", "stripe", "", clk.Now())))
	must(t, insertRequest(db, request("req_2", "a", "", "h.example", clk.Now())))
	clk.Add(time.Minute)
	at := clk.Now()
	got, ok, err := db.DecideAccessRequest(ctx, "req_1", requestApproved, "alice", "ok for billing", at)
	want := request("req_1", "a", "stripe", "", at.Add(-time.Minute))
	want.Status, want.DecidedAt, want.DecidedBy, want.DecisionReason = requestApproved, &at, "alice", "ok for billing"
	if err != nil || !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("approve = %+v %v %v, want %+v", got, ok, err, want)
	}
	// Only from pending: the first decision stands.
	for _, status := range []string{requestApproved, requestDenied} {
		_, ok, err := db.DecideAccessRequest(ctx, "req_1", status, "bob", "changed my mind", at.Add(time.Hour))
		if !ok {
			t.Errorf("deciding a decided request again: not found")
		}
		conflict(t, db, "deciding a decided request "+status, err)
	}
	if stored, _, _ := db.AccessRequest(ctx, "req_1"); !reflect.DeepEqual(stored, want) {
		t.Fatalf("after the refused decisions: %+v, want %+v", stored, want)
	}
	got, ok, err = db.DecideAccessRequest(ctx, "req_2", requestDenied, "bob", "", at)
	if err != nil || !ok || got.Status != requestDenied || got.DecidedBy != "bob" || got.DecidedAt == nil || !got.DecidedAt.Equal(at) {
		t.Fatalf("deny = %+v %v %v", got, ok, err)
	}
	if _, ok, err := db.DecideAccessRequest(ctx, "req_none", requestDenied, "bob", "", at); err != nil || ok {
		t.Fatalf("deciding an unknown request: %v %v", ok, err)
	}
	must(t, insertRequest(db, request("req_3", "a", "x", "", clk.Now())))
	for _, status := range []string{"", requestPending, "APPROVED", "maybe"} {
		_, _, err := db.DecideAccessRequest(ctx, "req_3", status, "bob", "", at)
		refused(t, db, "decision "+status, err)
	}
	_, _, err = db.DecideAccessRequest(ctx, "req_3", requestDenied, "bob", "", time.Time{})
	refused(t, db, "a decision at the zero time", err)
	if r, _, _ := db.AccessRequest(ctx, "req_3"); r.Status != requestPending || r.DecidedAt != nil {
		t.Fatalf("refused decisions decided %+v", r)
	}

	// Two operators at once: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan string, 8)
	for i := range 8 {
		wg.Go(func() {
			status := []string{requestApproved, requestDenied}[i%2]
			_, _, err := db.DecideAccessRequest(ctx, "req_3", status, fmt.Sprint("op", i), "", at)
			switch {
			case err == nil:
				wins <- fmt.Sprint("op", i)
			case !errors.Is(err, ErrConflict):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if r, _, _ := db.AccessRequest(ctx, "req_3"); len(winners) != 1 || r.DecidedBy != winners[0] {
		t.Fatalf("winners %v, stored decision by %q", winners, r.DecidedBy)
	}
}

func testAccessRequestRetention(t *testing.T, db *DB, clk *clock) {
	start := clk.Now()
	for i, id := range []string{"old_approved", "old_denied", "old_pending", "new_approved"} {
		must(t, insertRequest(db, request(id, "a", fmt.Sprint("s", i), "", start)))
	}
	_, _, err := db.DecideAccessRequest(ctx, "old_approved", requestApproved, "x", "", start.Add(time.Hour))
	must(t, err)
	_, _, err = db.DecideAccessRequest(ctx, "old_denied", requestDenied, "x", "", start.Add(time.Hour))
	must(t, err)
	_, _, err = db.DecideAccessRequest(ctx, "new_approved", requestApproved, "x", "", start.Add(3*time.Hour))
	must(t, err)
	clk.Add(4 * time.Hour)
	must(t, insertRequest(db, request("new_pending", "a", "s9", "", clk.Now())))
	// Decided before the horizon, or pending since before it (nobody
	// decided it in all that time): deleted.
	n, err := db.DeleteAccessRequestsBefore(ctx, start.Add(2*time.Hour))
	if err != nil || n != 3 {
		t.Fatalf("deleted %d %v, want 3", n, err)
	}
	list, err := db.ListAccessRequests(ctx, AccessRequestFilter{})
	must(t, err)
	if len(list) != 2 || list[0].ID != "new_pending" || list[1].ID != "new_approved" {
		t.Fatalf("left %+v, want new_pending and new_approved", list)
	}
	if n, err := db.DeleteAccessRequestsBefore(ctx, clk.Now().Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("deleted %d %v, want 2", n, err)
	}
}

func TestPageLimit(t *testing.T) {
	for in, want := range map[int]int{0: 100, 1: 1, 50: 50, 1000: 1000, 1001: 1000, 1 << 40: 1000, -1: 1, -1 << 40: 1} {
		if got := pageLimit(in); got != want {
			t.Errorf("pageLimit(%d) = %d, want %d", in, got, want)
		}
	}
}

func testListLimits(t *testing.T, db *DB, clk *clock) {
	const n = DefaultPageLimit + 5
	for i := range n {
		must(t, insertRequest(db, request(fmt.Sprintf("req_%03d", i), "a", "s", "", clk.Now())))
		must(t, db.InsertAudit(ctx, auditRow(fmt.Sprintf("au_%03d", i), clk.Now(), "alice", "agent.create", "x")))
	}
	for limit, want := range map[int]int{0: DefaultPageLimit, -3: 1, 1: 1, 7: 7, MaxPageLimit + 1: n} {
		reqs, err := db.ListAccessRequests(ctx, AccessRequestFilter{Limit: limit})
		must(t, err)
		entries, err := db.ListAudit(ctx, AuditFilter{Limit: limit})
		must(t, err)
		if len(reqs) != want || len(entries) != want {
			t.Errorf("limit %d: %d requests, %d audit entries, want %d", limit, len(reqs), len(entries), want)
		}
	}
}

func auditRow(id string, at time.Time, actor, action, target string) AuditRow {
	return AuditRow{ID: id, At: at, Actor: actor, ActorKind: "operator", Action: action, Target: target, Client: "127.0.0.1", Detail: "role admin"}
}

func testAudit(t *testing.T, db *DB, clk *clock) {
	if list, err := db.ListAudit(ctx, AuditFilter{}); err != nil || len(list) != 0 {
		t.Fatalf("new database: %v %v", list, err)
	}
	rows := []AuditRow{
		auditRow("e1", clk.Now(), "alice", "operator.create", "bob"),
		auditRow("e2", clk.Now().Add(time.Second), "admin-token", "service.put", "github"),
		auditRow("e3", clk.Now().Add(2*time.Second), "alice", "service.put", "stripe"),
		auditRow("e4", clk.Now().Add(3*time.Second), "ci-bot", "session.create", "sess1"),
	}
	rows[3].ActorKind, rows[3].Detail, rows[3].Client = "agent", "", "::1"
	for _, r := range rows {
		must(t, db.InsertAudit(ctx, r))
	}
	conflict(t, db, "same id", db.InsertAudit(ctx, auditRow("e1", clk.Now(), "x", "login", "x")))
	refused(t, db, "no id", db.InsertAudit(ctx, auditRow("", clk.Now(), "x", "login", "x")))
	refused(t, db, "no action", db.InsertAudit(ctx, auditRow("e9", clk.Now(), "x", "", "x")))
	refused(t, db, "the zero time", db.InsertAudit(ctx, auditRow("e9", time.Time{}, "x", "login", "x")))
	all, err := db.ListAudit(ctx, AuditFilter{})
	must(t, err)
	if want := []AuditRow{rows[3], rows[2], rows[1], rows[0]}; !reflect.DeepEqual(all, want) {
		t.Fatalf("ListAudit = %+v, want %+v (newest first)", all, want)
	}
	ids := func(f AuditFilter) []string {
		t.Helper()
		list, err := db.ListAudit(ctx, f)
		must(t, err)
		var out []string
		for _, r := range list {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    AuditFilter
		want []string
	}{
		{AuditFilter{Actor: "alice"}, []string{"e3", "e1"}},
		{AuditFilter{Action: "service.put"}, []string{"e3", "e2"}},
		{AuditFilter{Target: "github"}, []string{"e2"}},
		{AuditFilter{Actor: "alice", Action: "service.put"}, []string{"e3"}},
		{AuditFilter{Actor: "alice", Target: "github"}, nil},
		{AuditFilter{Actor: "ALICE"}, nil},
		// A time cursor (no id): strictly older than that time.
		{AuditFilter{Before: &Cursor{At: rows[2].At}}, []string{"e2", "e1"}},
		{AuditFilter{Before: &Cursor{At: rows[2].At.Add(time.Nanosecond)}}, []string{"e3", "e2", "e1"}},
		{AuditFilter{Before: &Cursor{At: rows[0].At}}, nil},
		// Cursors far outside the stored range compare as the times would.
		{AuditFilter{Before: &Cursor{At: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, Limit: 1}, []string{"e4"}},
		{AuditFilter{Before: &Cursor{At: time.Time{}}}, nil},
		{AuditFilter{Actor: "alice", Before: &Cursor{At: rows[2].At, ID: rows[2].ID}}, []string{"e1"}},
	} {
		if got := ids(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListAudit(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

// testAuditPaging: entries sharing their time (a burst of changes in
// one clock tick) are neither repeated nor skipped across pages, for
// every page size.
func testAuditPaging(t *testing.T, db *DB, clk *clock) {
	var want []AuditRow
	for i := range 23 {
		// Groups of four at one time; ids not in time order.
		r := auditRow(fmt.Sprintf("id-%02d", (i*7)%23), clk.Now().Add(time.Duration(i/4)*time.Millisecond), "alice", "service.put", "s")
		must(t, db.InsertAudit(ctx, r))
		want = append(want, r)
	}
	slices.SortFunc(want, func(a, b AuditRow) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	// The database's order of ids within a time is its collation's; the
	// expected order follows it (ASCII digits and letters sort alike in
	// every collation these tests meet).
	for _, size := range []int{1, 2, 3, 4, 5, 22, 23, 24} {
		var got []AuditRow
		var before *Cursor
		for pages := 0; ; pages++ {
			if pages > 30 {
				t.Fatalf("page size %d: paging does not end", size)
			}
			page, err := db.ListAudit(ctx, AuditFilter{Limit: size, Before: before})
			must(t, err)
			if len(page) > size {
				t.Fatalf("page size %d: a page of %d", size, len(page))
			}
			got = append(got, page...)
			if len(page) < size {
				break
			}
			last := page[len(page)-1]
			before = &Cursor{At: last.At, ID: last.ID}
		}
		if !reflect.DeepEqual(got, want) {
			var g, w []string
			for i := range got {
				g = append(g, got[i].ID)
			}
			for i := range want {
				w = append(w, want[i].ID)
			}
			t.Fatalf("page size %d: visited %v, want %v", size, g, w)
		}
	}
}

func testAuditRetention(t *testing.T, db *DB, clk *clock) {
	now := clk.Now()
	for i, age := range []time.Duration{100 * 24 * time.Hour, 91 * 24 * time.Hour, 89 * 24 * time.Hour, 0} {
		must(t, db.InsertAudit(ctx, auditRow(fmt.Sprint("e", i), now.Add(-age), "a", "login", "a")))
	}
	n, err := db.DeleteAuditBefore(ctx, now.Add(-90*24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("deleted %d %v, want 2", n, err)
	}
	list, err := db.ListAudit(ctx, AuditFilter{})
	must(t, err)
	if len(list) != 2 || list[0].ID != "e3" || list[1].ID != "e2" {
		t.Fatalf("left %+v", list)
	}
	if n, err := db.DeleteAuditBefore(ctx, time.Time{}); err != nil || n != 0 {
		t.Fatalf("deleted before the zero time: %d %v", n, err)
	}
}

func leased(id string, hashByte byte, created time.Time, timeout time.Duration) SessionRow {
	s := session(id, hashByte, created)
	until := created.Add(timeout)
	s.LeaseTimeout, s.LeaseUntil = timeout, &until
	return s
}

func testLeaseRoundTrip(t *testing.T, db *DB, clk *clock) {
	s := leased("s1", 1, clk.Now(), 30*time.Second)
	must(t, db.InsertSession(ctx, s))
	got, ok, err := db.Session(ctx, "s1")
	if err != nil || !ok || !reflect.DeepEqual(got, s) {
		t.Fatalf("Session = %+v %v %v, want %+v", got, ok, err, s)
	}
	list, err := db.ListSessions(ctx, time.Time{})
	must(t, err)
	if len(list) != 1 || !reflect.DeepEqual(list[0], s) {
		t.Fatalf("ListSessions = %+v", list)
	}
	// Half a lease, or a negative one, is refused.
	half := session("s2", 2, clk.Now())
	half.LeaseTimeout = time.Second
	refused(t, db, "a lease timeout without lease_until", db.InsertSession(ctx, half))
	half = session("s3", 3, clk.Now())
	half.LeaseUntil = &s.ExpiresAt
	refused(t, db, "a lease_until without a timeout", db.InsertSession(ctx, half))
	neg := leased("s4", 4, clk.Now(), 30*time.Second)
	neg.LeaseTimeout = -time.Second
	refused(t, db, "a negative lease timeout", db.InsertSession(ctx, neg))
	far := leased("s5", 5, clk.Now(), 30*time.Second)
	farTime := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	far.LeaseUntil = &farTime
	refused(t, db, "a lease until 2300", db.InsertSession(ctx, far))
	if list, _ := db.ListSessions(ctx, time.Time{}); len(list) != 1 {
		t.Fatalf("refused sessions stored: %+v", list)
	}
	// Half a lease in a row (edited by hand) reads as a lease, never as
	// none: without lease_until one that lapsed at creation, without a
	// timeout the shortest.
	_, err = db.exec(ctx, "UPDATE sessions SET lease_until = NULL WHERE id = 's1'")
	must(t, err)
	got, _, err = db.Session(ctx, "s1")
	if err != nil || got.LeaseTimeout != 30*time.Second || got.LeaseUntil == nil || !got.LeaseUntil.Equal(s.CreatedAt) {
		t.Fatalf("a lease without lease_until reads as %+v %v", got, err)
	}
	if found, err := db.RenewSessionLease(ctx, "s1", clk.Now().Add(time.Minute)); !found || !errors.Is(err, ErrEnded) {
		t.Fatalf("renewing a lease without lease_until: %v %v, want ErrEnded", found, err)
	}
	must(t, db.InsertSession(ctx, session("s6", 6, clk.Now())))
	_, err = db.exec(ctx, "UPDATE sessions SET lease_until = $1 WHERE id = 's6'", clk.Now().Add(time.Minute).UnixNano())
	must(t, err)
	if got, _, err := db.Session(ctx, "s6"); err != nil || got.LeaseTimeout <= 0 || got.LeaseUntil == nil {
		t.Fatalf("a lease_until without a timeout reads as %+v %v", got, err)
	}
	_, err = db.exec(ctx, "UPDATE sessions SET lease_timeout = -1 WHERE id = 's6'")
	must(t, err)
	if _, _, err := db.Session(ctx, "s6"); err == nil {
		t.Fatal("a negative lease_timeout was read")
	}
}

func testLeaseRenew(t *testing.T, db *DB, clk *clock) {
	start := clk.Now()
	must(t, db.InsertSession(ctx, leased("live", 1, start, 30*time.Second)))
	must(t, db.InsertSession(ctx, session("ttl", 2, start)))
	must(t, db.InsertSession(ctx, leased("revoked", 3, start, 30*time.Second)))
	_, err := db.RevokeSession(ctx, "revoked", start)
	must(t, err)
	expired := leased("expired", 4, start.Add(-2*time.Hour), 30*time.Second)
	far := start.Add(time.Hour)
	expired.LeaseUntil = &far
	must(t, db.InsertSession(ctx, expired))
	must(t, db.InsertSession(ctx, leased("lapsing", 5, start, 30*time.Second)))
	revokedTTL := session("revoked-ttl", 6, start)
	revokedTTL.RevokedAt = &start
	must(t, db.InsertSession(ctx, revokedTTL))

	leaseUntil := func(id string) time.Time {
		t.Helper()
		s, _, err := db.Session(ctx, id)
		must(t, err)
		if s.LeaseUntil == nil {
			t.Fatalf("session %s has no lease_until", id)
		}
		return *s.LeaseUntil
	}
	r := subscribe(t, db)
	settle(t, db, r)
	r.reset()
	clk.Add(10 * time.Second)
	next := clk.Now().Add(30 * time.Second)
	if found, err := db.RenewSessionLease(ctx, "live", next); err != nil || !found {
		t.Fatalf("renew: %v %v", found, err)
	}
	r.waitFor(t, time.Second, Change{TopicSessions, "live"})
	if got := leaseUntil("live"); !got.Equal(next) {
		t.Fatalf("lease_until %v, want %v", got, next)
	}
	// Renewals that commit out of order: the later lease stands.
	if found, err := db.RenewSessionLease(ctx, "live", next.Add(-5*time.Second)); err != nil || !found {
		t.Fatalf("renew with an older time: %v %v", found, err)
	}
	if got := leaseUntil("live"); !got.Equal(next) {
		t.Fatalf("an older renewal moved lease_until back to %v", got)
	}
	// The sentinels, and found: each session is there.
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"ttl", ErrNotLeased},
		{"revoked", ErrEnded},
		{"revoked-ttl", ErrEnded},
		{"expired", ErrEnded},
	} {
		found, err := db.RenewSessionLease(ctx, tc.id, next)
		if !found || !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "state "+db.Backend()+": renew session lease "+tc.id+": ") {
			t.Errorf("renew %s = %v %v, want found and %v", tc.id, found, err, tc.want)
		}
	}
	// A lapsed lease is not revived, even before any sweeper ended it.
	clk.Add(25 * time.Second) // 35s after start: lapsing's lease ended at 30s
	found, err := db.RenewSessionLease(ctx, "lapsing", clk.Now().Add(30*time.Second))
	if !found || !errors.Is(err, ErrEnded) {
		t.Fatalf("renew a lapsed lease = %v %v, want ErrEnded", found, err)
	}
	if got := leaseUntil("lapsing"); !got.Equal(start.Add(30 * time.Second)) {
		t.Fatalf("the refused renewal moved lease_until to %v", got)
	}
	if found, err := db.RenewSessionLease(ctx, "nope", next); err != nil || found {
		t.Fatalf("renew an unknown session = %v %v", found, err)
	}
	if _, err := db.RenewSessionLease(ctx, "live", time.Time{}); err == nil || errors.Is(err, ErrEnded) {
		t.Fatalf("renew to the zero time: %v", err)
	}
	// Only the successful renewals were announced.
	settle(t, db, r)
	for _, c := range r.sessionChanges() {
		if c.Key != "live" {
			t.Fatalf("a refused renewal was announced: %v", r.sessionChanges())
		}
	}
}

var settled atomic.Int64

// settle returns once r has been told of every change committed before
// it was called. A marker written after them arrives after them: on
// SQLite through this instance's queue, which keeps its order; on
// PostgreSQL written by another instance, so that it reaches this one
// only by LISTEN, behind the echoes of the earlier writes.
func settle(t *testing.T, db *DB, r *recorder) {
	t.Helper()
	marker := fmt.Sprint("settle-", settled.Add(1))
	writer := db
	if db.pg {
		writer = open(t, Config{Backend: BackendPostgres, DSN: db.s.DSN})
	}
	must(t, writer.PutService(ctx, marker, []byte(`{}`)))
	r.waitFor(t, 10*time.Second, Change{TopicServices, marker})
}

// sessionChanges is what r was told about single sessions (full
// reloads, which come every ReloadInterval, left out).
func (r *recorder) sessionChanges() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Change
	for _, c := range r.seen {
		if c.Topic == TopicSessions && c.Key != "" {
			out = append(out, c)
		}
	}
	return out
}
