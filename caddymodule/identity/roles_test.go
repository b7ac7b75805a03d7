package identity

import (
	"errors"
	"strings"
	"testing"
)

// principals are the columns of the expected matrix, in its order.
var principals = []struct {
	name string
	p    Principal
}{
	{"session", SessionPrincipal("ses_1", "ci-bot")},
	{"session without agent", SessionPrincipal("ses_2", "")},
	{"agent", AgentPrincipal("ci-bot")},
	{"viewer", OperatorPrincipal("vera", RoleViewer)},
	{"admin", OperatorPrincipal("ada", RoleAdmin)},
	{"owner", OperatorPrincipal("otto", RoleOwner)},
	{"admin token", AdminTokenPrincipal()},
}

// TestAllowedMatrix checks every permission against every kind of
// principal, against the design's table written out again: x allowed,
// - refused with a *ForbiddenError.
func TestAllowedMatrix(t *testing.T) {
	want := map[Permission]string{
		//               session  sess-no-agent  agent  viewer  admin  owner  admin-token
		ReadAll:         "-        -              -      x       x      x      x",
		ManageSecrets:   "-        -              -      -       x      x      x",
		ManageAgents:    "-        -              -      -       x      x      x",
		ManageOperators: "-        -              -      -       -      x      x",
		DecideRequests:  "-        -              -      -       x      x      x",
		ListSessions:    "-        -              x      x       x      x      x",
		MintSession:     "-        -              x      -       x      x      x",
		ManageSessions:  "-        -              x      -       x      x      x",
		AskAccess:       "x        -              x      -       -      -      -",
		ListRequests:    "x        -              x      x       x      x      x",
		ReadOwnSession:  "x        x              -      -       -      -      -",
		Logout:          "-        -              -      x       x      x      x",
	}
	if len(want) != len(Permissions()) {
		t.Fatalf("the matrix has %d rows, Permissions() %d: a permission was added without its row", len(want), len(Permissions()))
	}
	for _, perm := range Permissions() {
		row, ok := want[perm]
		if !ok {
			t.Fatalf("no row for %v", perm)
		}
		cells := strings.Fields(row)
		if len(cells) != len(principals) {
			t.Fatalf("row %v has %d cells", perm, len(cells))
		}
		for i, c := range principals {
			err := Allowed(c.p, perm)
			switch cells[i] {
			case "x":
				if err != nil {
					t.Errorf("%s may %v: got %v", c.name, perm, err)
				}
			case "-":
				var fe *ForbiddenError
				if !errors.As(err, &fe) {
					t.Errorf("%s may not %v: got %v, want a *ForbiddenError", c.name, perm, err)
				} else if !strings.Contains(fe.Reason, " may not ") || !strings.Contains(fe.Reason, ": ") {
					t.Errorf("%s, %v: reason %q does not say who may not what and why", c.name, perm, fe.Reason)
				}
			default:
				t.Fatalf("bad cell %q", cells[i])
			}
		}
		if err := Allowed(Principal{}, perm); err != ErrNoToken {
			t.Errorf("no principal, %v: got %v, want ErrNoToken", perm, err)
		}
	}
}

func TestAllowedReasons(t *testing.T) {
	for _, tc := range []struct {
		p    Principal
		perm Permission
		want string
	}{
		{OperatorPrincipal("vera", RoleViewer), ManageSecrets, "role viewer may not manage credentials or services: needs admin"},
		{OperatorPrincipal("ada", RoleAdmin), ManageOperators, "role admin may not manage operators: needs owner"},
		{AgentPrincipal("ci-bot"), ReadAll, "an agent token may not read credentials, stores, services, agents, operators or the audit trail: needs an operator login (role viewer or above) or the admin token"},
		{AgentPrincipal("ci-bot"), ManageOperators, "an agent token may not manage operators: needs an operator login with role owner, or the admin token"},
		{SessionPrincipal("ses_1", "ci-bot"), MintSession, "a session token may not open sessions: needs an agent token, an operator login (role admin or above) or the admin token"},
		{SessionPrincipal("ses_1", "ci-bot"), ListSessions, "a session token may not list sessions: needs an agent token, an operator login (role viewer or above) or the admin token"},
		{SessionPrincipal("ses_1", "ci-bot"), ManageSessions, "a session token may not revoke or renew sessions: needs an agent token, an operator login (role admin or above) or the admin token"},
		{SessionPrincipal("ses_1", "ci-bot"), ReadAll, "a session token may not read credentials, stores, services, agents, operators or the audit trail: needs an operator login (role viewer or above) or the admin token"},
		{OperatorPrincipal("vera", RoleViewer), MintSession, "role viewer may not open sessions: needs admin"},
		{OperatorPrincipal("ada", RoleAdmin), AskAccess, "role admin may not ask for access: only an agent may, with its agent token or its session's token"},
		{AdminTokenPrincipal(), ReadOwnSession, "the admin token may not read the calling session: only a session may, with its own token"},
		{SessionPrincipal("ses_2", ""), AskAccess, "a session opened without an agent may not ask for access: only an agent's sessions may; open the session with an agent token"},
	} {
		err := Allowed(tc.p, tc.perm)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Allowed(%+v, %v) = %v, want %q", tc.p, tc.perm, err, tc.want)
		}
	}
	var fe *ForbiddenError
	if !errors.As(Allowed(AgentPrincipal("ci-bot"), ReadAll), &fe) {
		t.Fatal("not a ForbiddenError")
	}
	const want = "an agent token may not GET /api/v1/audit: needs an operator login (role viewer or above) or the admin token"
	if got := fe.On("GET", "/api/v1/audit").Error(); got != want {
		t.Errorf("On: %q, want %q", got, want)
	}
	if got := fe.On("GET", "/api/v1/audit").HTTPStatus(); got != 403 {
		t.Errorf("status %d", got)
	}
	plain := &ForbiddenError{Reason: "ttl 2h exceeds agent a's max_session_ttl 1h"}
	if plain.On("POST", "/api/v1/sessions") != plain {
		t.Error("On changed a refusal that was not Allowed's")
	}
}

// TestAllowedIncomplete: a principal that can only come from a bug is
// refused everything.
func TestAllowedIncomplete(t *testing.T) {
	for _, p := range []Principal{
		{Kind: PrincipalOperator, Name: "x"},                      // no role
		{Kind: PrincipalOperator, Name: "x", Role: RoleOwner + 1}, // no such role
		{Kind: PrincipalOperator, Role: RoleOwner},                // no name
		{Kind: PrincipalAgent},                                    // no name
		{Kind: PrincipalAgent, Name: "a", Agent: "b"},             // inconsistent
		{Kind: PrincipalSession, Agent: "a"},                      // no session id
		{Kind: PrincipalSession + 1, Name: "x", Role: RoleOwner},
		// Not what the constructors make:
		{Kind: PrincipalAdminToken, Name: "mallory", Role: RoleOwner},
		{Kind: PrincipalAdminToken, Name: AdminTokenName, Role: RoleViewer},
		{Kind: PrincipalAdminToken, Role: RoleOwner},
		{Kind: PrincipalAdminToken, Name: AdminTokenName, Role: RoleOwner, Agent: "a"},
		{Kind: PrincipalAdminToken, Name: AdminTokenName, Role: RoleOwner, SessionID: "s"},
		{Kind: PrincipalOperator, Name: AdminTokenName, Role: RoleOwner},
		{Kind: PrincipalOperator, Name: "x", Role: RoleOwner, Agent: "a"},
		{Kind: PrincipalOperator, Name: "x", Role: RoleOwner, SessionID: "s"},
		{Kind: PrincipalAgent, Name: AdminTokenName, Agent: AdminTokenName},
		{Kind: PrincipalAgent, Name: "a", Agent: "a", Role: RoleOwner},
		{Kind: PrincipalAgent, Name: "a", Agent: "a", SessionID: "s"},
		{Kind: PrincipalSession, Name: "other", Agent: "ci-bot", SessionID: "s"},
		{Kind: PrincipalSession, Name: "ci-bot", SessionID: "s"},
		{Kind: PrincipalSession, Name: "a", Agent: "a", SessionID: "s", Role: RoleOwner},
	} {
		for _, perm := range Permissions() {
			var fe *ForbiddenError
			if err := Allowed(p, perm); !errors.As(err, &fe) {
				t.Errorf("Allowed(%+v, %v) = %v, want a refusal", p, perm, err)
			}
		}
	}
	for _, perm := range []Permission{0, numPermissions, 255} {
		if err := Allowed(AdminTokenPrincipal(), perm); err == nil {
			t.Errorf("unknown permission %d allowed", perm)
		}
	}
}

func TestActor(t *testing.T) {
	for _, tc := range []struct {
		p           Principal
		actor, kind string
	}{
		{AdminTokenPrincipal(), "admin-token", "admin-token"},
		{OperatorPrincipal("alice", RoleAdmin), "alice", "operator"},
		{AgentPrincipal("ci-bot"), "ci-bot", "agent"},
		{SessionPrincipal("ses_1", "ci-bot"), "ci-bot", "session"},
		{SessionPrincipal("ses_1", ""), "ses_1", "session"},
		// The actor of a session is its agent, whatever Name says.
		{Principal{Kind: PrincipalSession, Name: "other", Agent: "ci-bot", SessionID: "ses_1"}, "ci-bot", "session"},
		{Principal{}, "", ""},
	} {
		if a, k := tc.p.Actor(), tc.p.ActorKind(); a != tc.actor || k != tc.kind {
			t.Errorf("%+v: actor %q kind %q, want %q %q", tc.p, a, k, tc.actor, tc.kind)
		}
	}
	for p, want := range map[Principal]bool{
		AgentPrincipal("a"):               true,
		SessionPrincipal("s", ""):         true,
		OperatorPrincipal("o", RoleOwner): false,
		AdminTokenPrincipal():             false,
	} {
		if p.OwnOnly() != want {
			t.Errorf("%+v OwnOnly = %v", p, !want)
		}
	}
}

func TestParseRole(t *testing.T) {
	for s, want := range map[string]Role{"viewer": RoleViewer, "admin": RoleAdmin, "owner": RoleOwner} {
		r, err := ParseRole(s)
		if err != nil || r != want || r.String() != s {
			t.Errorf("ParseRole(%q) = %v, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Owner", "root", " admin", "none", strings.Repeat("a", 1000)} {
		_, err := ParseRole(s)
		var ie *InvalidError
		if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "use viewer, admin or owner") || len(ie.Reason) > 200 {
			t.Errorf("ParseRole(%.20q) = %v", s, err)
		}
	}
	if Role(0).String() != "none" {
		t.Error("zero role")
	}
}
