package caddymodule

// GET /api/v1/whoami: who the caller is (the web UI shows or hides its
// edit controls by it; every request is still decided by allow).

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
)

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	out := apiwire.Whoami{Name: c.Name}
	switch c.Kind {
	case identity.PrincipalAdminToken:
		out.Kind, out.Role = apiwire.ActorAdminToken, identity.RoleOwner.String()
	case identity.PrincipalOperator:
		out.Kind, out.Role = apiwire.ActorOperator, c.Role.String()
	case identity.PrincipalAgent:
		out.Kind = apiwire.ActorAgent
	case identity.PrincipalSession:
		out.Kind, out.Name = apiwire.ActorSession, c.SessionID
	}
	may := func(p identity.Permission) bool { return identity.Allowed(c.Principal, p) == nil }
	out.Can = apiwire.WhoamiCan{
		ManageSecrets:   may(identity.ManageSecrets),
		ManageAgents:    may(identity.ManageAgents),
		ManageOperators: may(identity.ManageOperators),
		DecideRequests:  may(identity.DecideRequests),
		ManageSessions:  may(identity.ManageSessions),
	}
	writeJSON(w, http.StatusOK, out)
}
