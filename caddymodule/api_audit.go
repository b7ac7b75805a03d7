package caddymodule

// The audit trail: every management change is recorded (after it
// succeeded) with who made it, from where, on what; GET /api/v1/audit
// reads it back, newest first.

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// auditLister reads the audit trail.
type auditLister interface {
	ListAudit(ctx context.Context, f state.AuditFilter) ([]state.AuditRow, error)
}

// identityStore is everything of the state database the API reads on
// behalf of callers, beyond services and sessions.
type identityStore interface {
	principalStore
	agentStore
	operatorStore
	requestStore
	auditLister
}

// record audits a change the caller of r made, once it succeeded. A
// failure to write it is the Recorder's to log and retry: the change
// stands and the caller is not told otherwise.
func (a *API) record(r *http.Request, action audit.Action, target, detail string) {
	c := callerOf(r)
	// Not the request's context: an entry for a change that happened is
	// written even if the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), apiWriteTimeout)
	defer cancel()
	a.recordAs(ctx, audit.Entry{Actor: c.Actor(), ActorKind: c.ActorKind(), Action: action, Target: target, Client: c.client, Detail: detail})
}

// recordAs audits an entry whose actor is set already (a login, where
// nobody is authenticated yet).
func (a *API) recordAs(ctx context.Context, e audit.Entry) {
	if a.deps.audit == nil {
		return
	}
	a.deps.audit.Record(context.WithoutCancel(ctx), e)
}

// listAudit answers GET /api/v1/audit?actor=&action=&target=&limit=&before=:
// entries newest first, at most limit (1..1000, default 100), older
// than before (the next_before of the previous page, or an RFC 3339
// time).
func (a *API) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := state.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target")}
	if f.Action != "" {
		if _, err := audit.ParseAction(f.Action); err != nil {
			writeError(w, http.StatusBadRequest, "action: "+err.Error())
			return
		}
	}
	var err error
	if f.Limit, f.Before, err = readPage(q); err != nil {
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.ids.ListAudit(ctx, f)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	out := apiwire.AuditList{Entries: make([]apiwire.AuditEntry, 0, len(rows)),
		NextBefore: nextBefore(rows, f.Limit, func(row state.AuditRow) state.Cursor { return state.Cursor{At: row.At, ID: row.ID} })}
	for _, row := range rows {
		out.Entries = append(out.Entries, apiwire.AuditEntry{ID: row.ID, Time: row.At, Actor: row.Actor, ActorKind: row.ActorKind,
			Action: row.Action, Target: row.Target, Client: row.Client, Detail: row.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}
