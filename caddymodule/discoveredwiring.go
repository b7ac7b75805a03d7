package caddymodule

// The discovered hosts' wiring: the Tracker the proxy's observers feed
// (kept in sharedState, so it outlives config reloads), the state
// database behind it, and GET /api/v1/discovered.

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/discovered"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// discoveredDB is the discovered hosts' store over the state database.
type discoveredDB struct{ db *state.DB }

func (s discoveredDB) MergeDiscovered(ctx context.Context, hs []discovered.Host) error {
	rows := make([]state.DiscoveredHost, len(hs))
	for i, h := range hs {
		rows[i] = state.DiscoveredHost{Host: h.Host, Port: h.Port, FirstSeen: h.FirstSeen, LastSeen: h.LastSeen, Count: h.Count,
			Schemes: h.Schemes, Agents: h.Agents, Sessions: h.Sessions}
	}
	return fromState(s.db.MergeDiscovered(ctx, rows))
}

func (s discoveredDB) ListDiscovered(ctx context.Context, f state.DiscoveredFilter) ([]state.DiscoveredHost, error) {
	hs, err := s.db.ListDiscovered(ctx, f)
	return hs, fromState(err)
}

// discoveredLister reads the discovered hosts.
type discoveredLister interface {
	ListDiscovered(ctx context.Context, f state.DiscoveredFilter) ([]state.DiscoveredHost, error)
}

// listDiscovered answers GET /api/v1/discovered?limit=&before=: the
// hosts agents tried that no service covered, most recently seen
// first, with every broker's attempts (merged about once a second).
func (a *API) listDiscovered(w http.ResponseWriter, r *http.Request) {
	var f state.DiscoveredFilter
	var err error
	if f.Limit, f.Before, err = readPage(r.URL.Query()); err != nil {
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.discovered.ListDiscovered(ctx, f)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	out := apiwire.DiscoveredList{Hosts: make([]apiwire.DiscoveredHost, 0, len(rows)),
		NextBefore: nextBefore(rows, f.Limit, func(h state.DiscoveredHost) state.Cursor { return state.Cursor{At: h.LastSeen, ID: h.Key()} })}
	for _, h := range rows {
		out.Hosts = append(out.Hosts, apiwire.DiscoveredHost{Host: h.Host, Port: h.Port, FirstSeen: h.FirstSeen, LastSeen: h.LastSeen,
			Count: h.Count, Schemes: nonNil(h.Schemes), Agents: nonNil(h.Agents), Sessions: nonNil(h.Sessions)})
	}
	writeJSON(w, http.StatusOK, out)
}

// nonNil makes an absent list an empty JSON array.
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
