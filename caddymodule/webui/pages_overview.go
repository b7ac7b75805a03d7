package webui

// The overview and the CA page.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type overviewData struct {
	Stores                 []apiwire.StoreStatus
	StoresErr              string
	Credentials, Services  count
	ActiveSessions, Agents count
	PendingRequests        count
	// CountErrs say why a count is unknown.
	CountErrs   []string
	Refusals    []apiwire.ActivityEntry
	RefusalsErr string
	// Stats are this broker's activity log counts (drops); nil when
	// the API does not say.
	Stats *apiwire.ActivityStats
}

// overview reads its panels from the API at once (getAll): each
// panel shows its own read's error, the others their data.
func (u *UI) overview(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	var (
		stores apiwire.StoreList
		creds  apiwire.CredentialList
		svcs   apiwire.ServiceList
		sess   apiwire.SessionList
		agents apiwire.AgentList
		reqs   apiwire.AccessRequestList
		act    apiwire.ActivityList
		st     apiwire.ActivityStats
	)
	rStores := &read{path: "/api/v1/stores", out: &stores}
	rCreds := &read{path: "/api/v1/credentials", out: &creds}
	rSvcs := &read{path: "/api/v1/services", out: &svcs}
	rSess := &read{path: "/api/v1/sessions", out: &sess}
	rAgents := &read{path: "/api/v1/agents", out: &agents}
	rReqs := &read{path: "/api/v1/requests", out: &reqs}
	rAct := &read{path: "/api/v1/activity?decision=refused&limit=10", out: &act}
	rStats := &read{path: "/api/v1/activity/stats", out: &st}
	c.getAll(rStores, rCreds, rSvcs, rSess, rAgents, rReqs, rAct, rStats)

	var d overviewData
	if rStores.err != nil {
		d.StoresErr = errText(rStores.err)
	}
	d.Stores = stores.Stores
	d.Credentials = d.count("credentials", rCreds, func() int { return len(creds.Credentials) })
	d.Services = d.count("services", rSvcs, func() int { return len(svcs.Services) })
	d.ActiveSessions = d.count("sessions", rSess, func() (n int) {
		for _, s := range sess.Sessions {
			if s.Status == apiwire.SessionActive {
				n++
			}
		}
		return n
	})
	d.Agents = d.count("agents", rAgents, func() int { return len(agents.Agents) })
	d.PendingRequests = d.count("requests", rReqs, func() (n int) {
		for _, q := range reqs.Requests {
			if q.Status == apiwire.RequestPending {
				n++
			}
		}
		return n
	})
	if rAct.err != nil {
		d.RefusalsErr = errText(rAct.err)
	}
	d.Refusals = act.Entries
	if rStats.err == nil {
		d.Stats = &st
	}
	c.render("overview", "Overview", d)
}

// count is one of the overview's counts; Err is set when the API could
// not give it (shown as unknown, not as 0).
type count struct {
	N   int
	Err bool
}

// count is what r read, counted with n; r's failure is kept in
// d.CountErrs (in the order the counts are taken, so the page reads
// the same every time).
func (d *overviewData) count(what string, r *read, n func() int) count {
	if r.err != nil {
		d.CountErrs = append(d.CountErrs, "cannot count the "+what+": "+errText(r.err))
		return count{Err: true}
	}
	return count{N: n()}
}

type caData struct {
	APIURL, ProxyURL string
}

func (u *UI) ca(c *call) {
	if c.r.Method == http.MethodPost {
		c.done(errNoAction, "")
		return
	}
	scheme := "http://"
	if c.r.TLS != nil {
		scheme = "https://"
	}
	c.render("ca", "CA and av-launch", caData{APIURL: scheme + c.r.Host, ProxyURL: u.opts.ProxyURL})
}
