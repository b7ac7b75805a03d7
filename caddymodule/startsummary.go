package caddymodule

import (
	"crypto/subtle"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/jackc/pgx/v5/pgconn"
)

// The start-up summary: Caddy's JSON logs say everything, but not in a
// form a person starting the server for the first time reads. Once the
// app starts it prints, to stderr, where the API and the proxy listen,
// where its files are and which token file is which. A config reload
// prints it again only if something in it changed.

// startSummaryOut receives the summary (tests replace it).
var startSummaryOut io.Writer = os.Stderr

// lastSummary is the summary printed last by this process.
var lastSummary struct {
	sync.Mutex
	text string
}

// printStartSummary prints the start-up summary, unless this process
// printed the same one already. App.Start calls it once the broker is
// set up.
func (a *App) printStartSummary() {
	text := a.startInfo().String()
	lastSummary.Lock()
	defer lastSummary.Unlock()
	if text == lastSummary.text {
		return
	}
	lastSummary.text = text
	// One write, so Caddy's concurrent log lines do not cut through it.
	_, _ = io.WriteString(startSummaryOut, text)
}

// startInfo is what the summary shows.
type startInfo struct {
	API, Proxy []string // listen URLs of the servers hosting each handler
	ProxyURL   string   // the proxy URL handed to agents
	DataDir    string
	State      string // backend and where: never a password
	// AdminTokenFile is the admin token's file; "" when the config sets
	// the token itself.
	AdminTokenFile string
	// AgentTokenFile is the local agent's token file; "" if there is none.
	AgentTokenFile string
}

// startInfo gathers the summary of this app.
func (a *App) startInfo() startInfo {
	info := startInfo{ProxyURL: a.ProxyURL, DataDir: a.DataDir, State: describeState(a.State)}
	if httpApp, err := a.ctx.AppIfConfigured("http"); err == nil {
		if app, ok := httpApp.(*caddyhttp.App); ok {
			info.API, info.Proxy = brokerURLs(app.Servers)
		}
	}
	adminFile := filepath.Join(a.DataDir, "admin.token")
	// The file is the token's source only if it holds this very token
	// (the config may set another).
	if data, err := os.ReadFile(adminFile); err == nil {
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(string(data))), []byte(a.AdminToken)) == 1 {
			info.AdminTokenFile = adminFile
		}
		clear(data)
	}
	agentFile := filepath.Join(a.DataDir, "agent.token")
	if fi, err := os.Stat(agentFile); err == nil && fi.Mode().IsRegular() {
		info.AgentTokenFile = agentFile
	}
	return info
}

func (s startInfo) String() string {
	var b strings.Builder
	row := func(label, value string) { fmt.Fprintf(&b, "  %-16s %s\n", label, value) }
	b.WriteString("agent-vault is ready\n")
	row("management API", orNone(s.API, "none in this config"))
	proxy := orNone(s.Proxy, "none in this config")
	if s.ProxyURL != "" && !slices.Contains(s.Proxy, s.ProxyURL) {
		proxy += " (agents are given " + s.ProxyURL + ")"
	}
	row("agents' proxy", proxy)
	row("data dir", s.DataDir)
	row("state", s.State)
	if s.AdminTokenFile != "" {
		row("admin token", s.AdminTokenFile+" (the CLI reads it; keep it from agents)")
	} else {
		row("admin token", "set in the config (admin_token)")
	}
	if s.AgentTokenFile != "" {
		row("agent token", s.AgentTokenFile+" (av-launch and `agent-vault vault run` read it)")
	} else {
		row("agent token", "none in the data dir (`agent-vault agent add NAME --services ...` prints a new agent's token)")
	}
	row("next", "agent-vault credential set NAME; agent-vault service add ...; agent-vault --help")
	return b.String()
}

func orNone(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, ", ")
}

// brokerURLs returns the listen URLs of the servers whose routes hold
// the management API handler and the proxy handler, in config order.
func brokerURLs(servers map[string]*caddyhttp.Server) (api, proxy []string) {
	// Map order is random; the summary is compared across reloads.
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		srv := servers[name]
		hasAPI, hasProxy := findHandlers(srv.Routes)
		if !hasAPI && !hasProxy {
			continue
		}
		urls := listenURLs(srv)
		if hasAPI {
			api = append(api, urls...)
		}
		if hasProxy {
			proxy = append(proxy, urls...)
		}
	}
	return api, proxy
}

// findHandlers looks for the API and proxy handlers in routes, subroutes
// included.
func findHandlers(routes caddyhttp.RouteList) (hasAPI, hasProxy bool) {
	for _, r := range routes {
		for _, h := range r.Handlers {
			switch h := h.(type) {
			case *API:
				hasAPI = true
			case *Proxy:
				hasProxy = true
			case *caddyhttp.Subroute:
				a, p := findHandlers(h.Routes)
				hasAPI, hasProxy = hasAPI || a, hasProxy || p
			}
		}
	}
	return hasAPI, hasProxy
}

// listenURLs are a server's TCP listen addresses as URLs; "*" for a
// host-less address, which listens on every interface.
func listenURLs(srv *caddyhttp.Server) []string {
	scheme := "http"
	if len(srv.TLSConnPolicies) > 0 {
		scheme = "https"
	}
	var out []string
	for _, l := range srv.Listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() {
			if err == nil {
				out = append(out, l) // a socket: shown as configured
			}
			continue
		}
		host := na.Host
		if host == "" {
			host = "*"
		}
		port := strconv.FormatUint(uint64(na.StartPort), 10)
		if na.EndPort != na.StartPort {
			port += "-" + strconv.FormatUint(uint64(na.EndPort), 10)
		}
		out = append(out, scheme+"://"+net.JoinHostPort(host, port))
	}
	return out
}

// describeState names the state backend and where it is, never the
// DSN's password: the file for SQLite, host, port and database for
// PostgreSQL.
func describeState(st *StateConfig) string {
	if st == nil {
		return "-"
	}
	switch st.Backend {
	case StateSQLite:
		return "sqlite, " + st.Path
	case StatePostgres:
		cfg, err := pgconn.ParseConfig(st.DSN)
		if err != nil {
			return "postgres"
		}
		return fmt.Sprintf("postgres, database %s on %s", cfg.Database, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	}
	return st.Backend
}
