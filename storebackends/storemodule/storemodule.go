// Package storemodule is what every external store's Caddy module
// shares: the sync options (name, poll interval, staleness bound,
// timeout, allow_empty) with their Caddyfile syntax, secret fields read
// from placeholders or files, and the glue that runs a Fetcher under the
// sync engine as a storebackends.Synced store. A store module only
// adds its own connection and auth options and builds its Fetcher.
package storemodule

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/syncengine"
)

// SyncConfig holds the options every external store has. Store modules
// embed it, so these appear as the store's own JSON fields.
type SyncConfig struct {
	// Name of this store in the API and in logs; needed when a backend
	// is configured more than once. Default: the backend's name.
	Name string `json:"name,omitempty"`

	// How often the store is read. Default 30s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	// How long the last good snapshot may serve while the store cannot
	// be read; past it, requests needing this store's credentials get
	// 503. Default 5m.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`

	// Timeout of each request to the store. Default 10s, or half of
	// max_staleness if that is shorter. A whole sync (many requests) is
	// bounded by half of max_staleness.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Accept a sync that would remove every credential of the store.
	// Off by default: such a sync is refused and reported, because it
	// more often means a wrong path or permission than a purge.
	AllowEmpty bool `json:"allow_empty,omitempty"`

	pending *pendingLaunch // set by Prepare, taken by Launch
}

// pendingLaunch is a fetcher built at Provision and not yet synced.
type pendingLaunch struct {
	ctx   caddy.Context
	f     storebackends.Fetcher
	close func()
}

// Prepare records the fetcher a module's Provision built (from its
// configuration alone, no I/O), to be launched by Launch when the app
// opens the store: the app checks its own configuration and files
// before any store logs in or syncs. close (may be nil) releases the
// fetcher.
func (c *SyncConfig) Prepare(ctx caddy.Context, f storebackends.Fetcher, close func()) {
	c.pending = &pendingLaunch{ctx: ctx, f: f, close: close}
}

// Release closes a prepared fetcher that was never launched (start-up
// failed before the app opened the store). Safe to call always.
func (c *SyncConfig) Release() {
	if p := c.pending; p != nil {
		c.pending = nil
		if p.close != nil {
			p.close()
		}
	}
}

// UnmarshalOption parses one of the shared options at the dispenser's
// current token; it reports false for options it does not know.
func (c *SyncConfig) UnmarshalOption(d *caddyfile.Dispenser) (bool, error) {
	opt := d.Val()
	if opt == "allow_empty" {
		if d.NextArg() {
			return true, d.ArgErr()
		}
		c.AllowEmpty = true
		return true, nil
	}
	var dur *caddy.Duration
	switch opt {
	case "name":
	case "poll_interval":
		dur = &c.PollInterval
	case "max_staleness":
		dur = &c.MaxStaleness
	case "timeout":
		dur = &c.Timeout
	default:
		return false, nil
	}
	args := d.RemainingArgs()
	switch {
	case len(args) > 1:
		return true, d.ArgErr()
	case len(args) == 0:
		return true, nil // an unset {$ENV}: keep the default
	case dur == nil:
		c.Name = args[0]
		return true, nil
	}
	v, err := caddy.ParseDuration(args[0])
	if err != nil {
		return true, d.Errf("%s: %v", opt, err)
	}
	*dur = caddy.Duration(v)
	return true, nil
}

// RequestTimeout is the per-request timeout a Fetcher should use.
func (c *SyncConfig) RequestTimeout() time.Duration {
	t := time.Duration(c.Timeout)
	if t == 0 {
		t = syncengine.DefaultTimeout
		if ms := time.Duration(c.MaxStaleness); ms > 0 && t >= ms {
			t = ms / 2
		}
	}
	return t
}

// Secret resolves a secret option: the file variant wins (trailing
// newlines ignored), else the inline value with placeholders such as
// {env.VAULT_TOKEN} expanded. Errors name the field, never the value.
func Secret(field, inline, file string) (string, error) {
	repl := caddy.NewReplacer()
	f, err := repl.ReplaceOrErr(file, false, true)
	if err != nil {
		return "", fmt.Errorf("%s_file: %v", field, err)
	}
	if f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%s_file: %v", field, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	v, err := repl.ReplaceOrErr(inline, false, true)
	if err != nil {
		return "", fmt.Errorf("%s: %v", field, err)
	}
	return v, nil
}

// Synced runs a Fetcher under the sync engine and implements
// storebackends.Synced and storebackends.Named for a store module.
type Synced struct {
	*syncengine.Engine
	name     string
	onChange atomic.Pointer[func()]
	close    func()
}

// Launch builds the engine for the prepared fetcher and performs the
// first sync, so that a bad login or an unreachable store stops start-up
// with a message that names the store. The fetcher is released on
// failure here, and otherwise by the Synced's Cleanup.
func (c *SyncConfig) Launch() (*Synced, error) {
	p := c.pending
	if p == nil {
		return nil, fmt.Errorf("store %q: opened before it was provisioned", c.Name)
	}
	c.pending = nil
	ctx, f := p.ctx, p.f
	s := &Synced{name: c.Name, close: p.close}
	maxStale := time.Duration(c.MaxStaleness)
	if maxStale == 0 {
		maxStale = syncengine.DefaultMaxStaleness
	}
	eng, err := syncengine.New(syncengine.Options{
		Store:        c.Name,
		Fetcher:      f,
		Interval:     time.Duration(c.PollInterval),
		MaxStaleness: maxStale,
		Timeout:      maxStale / 2, // the whole sync; each request has RequestTimeout
		AllowEmpty:   c.AllowEmpty,
		Logger:       ctx.Logger(),
		OnChange: func() {
			if fn := s.onChange.Load(); fn != nil {
				(*fn)()
			}
		},
	})
	if err != nil {
		s.Cleanup()
		return nil, err
	}
	s.Engine = eng
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := eng.Initial(initCtx); err != nil {
		s.Cleanup()
		return nil, err
	}
	return s, nil
}

// StoreName is the configured name of the store.
func (s *Synced) StoreName() string { return s.name }

// SetOnChange registers the app's rebuild function.
func (s *Synced) SetOnChange(f func()) { s.onChange.Store(&f) }

// Health describes the store for the management API.
func (s *Synced) Health(now time.Time) storebackends.StoreStatus { return s.Engine.Health(now) }

// LastSync is the start of the last successful sync.
func (s *Synced) LastSync() time.Time { return s.Engine.LastSuccess() }

// Cleanup stops syncing and releases the fetcher. Safe on a nil or
// half-built value.
func (s *Synced) Cleanup() {
	if s == nil {
		return
	}
	if s.Engine != nil {
		s.Engine.Stop()
	}
	if s.close != nil {
		s.close()
		s.close = nil
	}
}

// Interface guards
var (
	_ storebackends.Synced = (*Synced)(nil)
	_ storebackends.Named  = (*Synced)(nil)
)

// SecretField is one secret option of an auth method: its inline and
// file forms, and where its resolved value goes.
type SecretField struct {
	Name, Inline, File string
	Dst                *string
}

// ResolveSecrets resolves every field of an auth method (see Secret)
// and fails, naming the fields, when any of them ends up empty.
func ResolveSecrets(method string, fields ...SecretField) error {
	var missing []string
	for _, f := range fields {
		v, err := Secret(f.Name, f.Inline, f.File)
		if err != nil {
			return err
		}
		if v == "" {
			missing = append(missing, f.Name)
		}
		*f.Dst = v
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s auth needs %s (inline, from a placeholder such as {env.NAME}, or from the *_file option)", method, strings.Join(missing, " and "))
	}
	return nil
}
