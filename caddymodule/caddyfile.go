package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("agent_vault", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("agent_vault_proxy", parseProxy)
	httpcaddyfile.RegisterHandlerDirective("agent_vault_api", parseAPI)
	// Both are terminal handlers, like reverse_proxy.
	httpcaddyfile.RegisterDirectiveOrder("agent_vault_proxy", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterDirectiveOrder("agent_vault_api", httpcaddyfile.Before, "reverse_proxy")
}

// parseGlobalOption sets up the agent_vault app from the global option:
//
//	agent_vault {
//		data_dir               <path>
//		admin_token            <token>
//		metrics_token          <token>
//		allow_private_networks <cidr...>
//		ca                     <pki ca id>
//		leaf_lifetime          <duration>
//		proxy_url              <http://host:port>
//		default_session_ttl    <duration>
//		max_session_ttl        <duration>
//		session_lease_timeout  <duration>
//		local_agent            <name>
//		operator_login_ttl     <duration>
//		audit_retention        <duration>
//		activity_retention     <duration>
//		activity_max_rows      <number>
//		disable_activity_log
//		store <backend> {
//			...backend options...
//		}
//		state sqlite [<path>] | postgres <dsn> {
//			reload_interval <duration>
//			max_stale       <duration>
//		}
//	}
//
// An option given with no value (as an unset {$ENV} leaves it) keeps
// its default.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "agent_vault", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile fills the app from its global option block.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		optional := func(dst *string) error {
			switch len(args) {
			case 0:
			case 1:
				*dst = args[0]
			default:
				return d.ArgErr()
			}
			return nil
		}
		duration := func(dst *caddy.Duration) error {
			switch len(args) {
			case 0:
				return nil
			case 1:
				v, err := caddy.ParseDuration(args[0])
				if err != nil {
					return d.Errf("%s: %v", opt, err)
				}
				if v < 0 {
					return d.Errf("%s: must not be negative", opt)
				}
				*dst = caddy.Duration(v)
				return nil
			}
			return d.ArgErr()
		}
		var err error
		switch opt {
		case "data_dir":
			err = optional(&a.DataDir)
		case "admin_token":
			err = optional(&a.AdminToken)
		case "metrics_token":
			err = optional(&a.MetricsToken)
		case "ca":
			err = optional(&a.CA)
		case "proxy_url":
			err = optional(&a.ProxyURL)
		case "allow_private_networks":
			a.AllowPrivateNetworks = append(a.AllowPrivateNetworks, args...)
		case "leaf_lifetime":
			if err = duration(&a.LeafLifetime); err == nil && a.LeafLifetime > 0 {
				if lerr := checkLeafLifetime(a.LeafLifetime); lerr != nil {
					err = d.Err(lerr.Error())
				}
			}
		case "default_session_ttl":
			err = duration(&a.DefaultSessionTTL)
		case "max_session_ttl":
			err = duration(&a.MaxSessionTTL)
		case "session_lease_timeout":
			err = duration(&a.SessionLeaseTimeout)
		case "local_agent":
			err = optional(&a.LocalAgent)
		case "operator_login_ttl":
			err = duration(&a.OperatorLoginTTL)
		case "audit_retention":
			err = duration(&a.AuditRetention)
		case "activity_retention":
			err = duration(&a.ActivityRetention)
		case "activity_max_rows":
			switch len(args) {
			case 0:
			case 1:
				n, perr := strconv.Atoi(args[0])
				if perr != nil || n < 0 {
					err = d.Errf("activity_max_rows: want a whole number of rows such as 1000000")
				}
				a.ActivityMaxRows = n
			default:
				err = d.ArgErr()
			}
		case "disable_activity_log":
			if len(args) != 0 {
				err = d.ArgErr()
			}
			a.DisableActivityLog = true
		case "state":
			err = a.unmarshalState(d, args)
		case "store":
			if len(args) != 1 {
				return d.Errf("store: want exactly one backend name, e.g. `store builtin`")
			}
			backend := args[0]
			mod, err := caddyfile.UnmarshalModule(d, "agent_vault.stores."+backend)
			if err != nil {
				return err
			}
			var warnings []caddyconfig.Warning
			a.StoresRaw = append(a.StoresRaw, caddyconfig.JSONModuleObject(mod, "backend", backend, &warnings))
		default:
			return d.Errf("unrecognized agent_vault option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalState reads `state <backend> [<path or dsn>] { ... }`. A
// backend or argument left empty (an unset {$ENV}) keeps its default,
// so `state {$AGENT_VAULT_STATE_BACKEND} {$AGENT_VAULT_STATE_DSN}`
// works with neither set.
func (a *App) unmarshalState(d *caddyfile.Dispenser, args []string) error {
	if a.State == nil {
		a.State = new(StateConfig)
	}
	st := a.State
	var nonEmpty []string
	for _, arg := range args {
		if arg != "" {
			nonEmpty = append(nonEmpty, arg)
		}
	}
	if len(nonEmpty) > 2 {
		return d.Errf("state: want `state sqlite [<path>]` or `state postgres <dsn>`")
	}
	if len(nonEmpty) > 0 {
		st.Backend = nonEmpty[0]
	}
	if len(nonEmpty) == 2 {
		switch st.Backend {
		case StateSQLite:
			st.Path = nonEmpty[1]
		case StatePostgres:
			st.DSN = nonEmpty[1]
		default:
			// Not quoted: it may be a DSN shifted into its place.
			return d.Err("state backend: want sqlite or postgres (the value given is not repeated, as it may be a connection string)")
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var dst *caddy.Duration
		switch opt {
		case "reload_interval":
			dst = &st.ReloadInterval
		case "max_stale":
			dst = &st.MaxStale
		default:
			return d.Errf("unrecognized state option %q", opt)
		}
		vals := d.RemainingArgs()
		if len(vals) != 1 {
			return d.ArgErr()
		}
		v, err := caddy.ParseDuration(vals[0])
		if err != nil || v <= 0 {
			return d.Errf("state %s: want a positive duration", opt)
		}
		*dst = caddy.Duration(v)
	}
	return nil
}

// parseProxy sets up the proxy handler:
//
//	agent_vault_proxy {
//		unmatched               deny|tunnel
//		dial_timeout            <duration>
//		response_header_timeout <duration>
//		idle_timeout            <duration>
//		max_response_body       <size>
//		max_concurrent_per_session <n>
//	}
func parseProxy(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Proxy)
	err := p.UnmarshalCaddyfile(h.Dispenser)
	return p, err
}

// UnmarshalCaddyfile fills the proxy handler from its directive.
func (p *Proxy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		var dst *caddy.Duration
		switch opt {
		case "unmatched":
			p.Unmatched = UnmatchedPolicy(val)
			if err := checkUnmatched(p.Unmatched); err != nil {
				return d.Err(err.Error())
			}
			continue
		case "max_response_body":
			if err := checkMaxResponseBody(val); err != nil {
				return d.Err(err.Error())
			}
			p.MaxResponseBody = val
			continue
		case "max_concurrent_per_session":
			n, err := strconv.Atoi(val)
			if err == nil {
				err = checkMaxConcurrent(n)
			}
			if err != nil || n == 0 {
				return d.Errf("max_concurrent_per_session %q: want a whole number from 1 to %d", val, maxConcurrentBound)
			}
			p.MaxConcurrentPerSession = n
			continue
		case "dial_timeout":
			dst = &p.DialTimeout
		case "response_header_timeout":
			dst = &p.ResponseHeaderTimeout
		case "idle_timeout":
			dst = &p.IdleTimeout
		default:
			return d.Errf("unrecognized agent_vault_proxy option %q", opt)
		}
		v, err := caddy.ParseDuration(val)
		if err != nil {
			return d.Errf("%s: %v", opt, err)
		}
		if err := checkTimeout(opt, caddy.Duration(v)); err != nil {
			return d.Err(err.Error())
		}
		*dst = caddy.Duration(v)
	}
	return nil
}

// parseAPI sets up the management API handler, which serves the app
// configured in the global option:
//
//	agent_vault_api {
//		allowed_hosts <host...>
//	}
//
// allowed_hosts names the host names the listener answers to besides
// IP literals and localhost (hostcheck.go); given with no names it
// keeps the default, none.
func parseAPI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(API)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile reads the directive's block (parseAPI).
func (a *API) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "allowed_hosts":
			// No names (an unset {$ENV}) keeps the default: none.
			a.AllowedHosts = append(a.AllowedHosts, d.RemainingArgs()...)
		default:
			return d.Errf("agent_vault_api: unknown option %q (known: allowed_hosts)", opt)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Proxy)(nil)
	_ caddyfile.Unmarshaler = (*API)(nil)
)
