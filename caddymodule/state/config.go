package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Backend names, as written in the configuration.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// Defaults for the Config durations left zero.
const (
	DefaultReloadInterval = 30 * time.Second
	DefaultMaxStale       = time.Minute
	DefaultPingInterval   = time.Second
)

// Lower bounds of the Config durations. A full reload re-reads every
// topic for every subscriber and a ping is a round trip to the
// database: far more often than these is no safety net but load (a
// reload interval of a nanosecond would be a busy loop), most likely
// a unit mistake ("30" read as nanoseconds).
const (
	MinReloadInterval = time.Second
	MinPingInterval   = 10 * time.Millisecond
)

// Config says which database to open and how to watch it.
type Config struct {
	// Backend is BackendSQLite or BackendPostgres. Required: the
	// app's configuration picks the default.
	Backend string
	// DSN is, for sqlite, the database file's path (created 0600, its
	// directory 0700, when missing; an existing file and its -wal and
	// -shm files are made 0600 when opened); for postgres, a connection URL or
	// keyword/value string, already placeholder-expanded by the caller.
	// Required. It is never repeated in an error message.
	DSN string
	// Logger receives what goes wrong in the background (the LISTEN
	// connection, the pinger, a panicking subscriber). Default: discard.
	Logger *zap.Logger
	// Now is the clock for stored times (updated_at, the migrations'
	// applied_at) and for health. Default time.Now. Lock expiry does not
	// use it: it is decided by the database's clock (see TryLock).
	Now func() time.Time
	// ReloadInterval is how often every subscriber is told to reload
	// each topic in full, the safety net for a lost notification.
	// Default 30s; at least MinReloadInterval (1s).
	ReloadInterval time.Duration
	// MaxStale is how long the database may be unreachable before
	// Healthy fails. Default 1m.
	MaxStale time.Duration
	// PingInterval is how often the pinger contacts the database so
	// that Healthy knows when it last answered. Default 1s; at least
	// MinPingInterval (10ms).
	PingInterval time.Duration
}

// settings is a validated Config with its defaults filled in.
type settings struct {
	Config
	path    string          // sqlite: absolute file path
	pg      *pgx.ConnConfig // postgres: the parsed DSN
	secrets []string        // what error messages must never contain
}

// Validate checks cfg without any I/O: the backend is known, the DSN is
// there and, for postgres, parses. Its errors name the backend and never
// include the DSN's password.
func (c Config) Validate() error {
	_, err := c.settings()
	return err
}

func (c Config) settings() (*settings, error) {
	s := &settings{Config: c}
	switch c.Backend {
	case BackendSQLite, BackendPostgres:
	case "":
		return nil, errors.New("state: no backend (want sqlite or postgres)")
	default:
		return nil, fmt.Errorf("state: unknown backend %q (want sqlite or postgres)", c.Backend)
	}
	prefix := "state " + c.Backend
	for _, d := range []struct {
		name     string
		v        *time.Duration
		def, min time.Duration
	}{
		{"reload_interval", &s.ReloadInterval, DefaultReloadInterval, MinReloadInterval},
		{"max_stale", &s.MaxStale, DefaultMaxStale, 0},
		{"ping interval", &s.PingInterval, DefaultPingInterval, MinPingInterval},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("%s: %s must not be negative, got %v", prefix, d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		case *d.v < d.min:
			return nil, fmt.Errorf("%s: %s must be at least %v, got %v", prefix, d.name, d.min, *d.v)
		}
	}
	if s.MaxStale <= s.PingInterval {
		// Healthy would fail between two successful pings.
		return nil, fmt.Errorf("%s: max_stale (%v) must be longer than the ping interval (%v)", prefix, s.MaxStale, s.PingInterval)
	}
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	switch c.Backend {
	case BackendSQLite:
		if c.DSN == "" {
			return nil, errors.New("state sqlite: no database file path")
		}
		p, err := filepath.Abs(c.DSN)
		if err != nil {
			return nil, fmt.Errorf("state sqlite: database path: %w", err)
		}
		s.path = p
	case BackendPostgres:
		if c.DSN == "" {
			return nil, errors.New("state postgres: no DSN")
		}
		s.secrets = dsnSecrets(c.DSN)
		pc, err := pgx.ParseConfig(c.DSN)
		if err != nil {
			return nil, fmt.Errorf("state postgres: the DSN does not parse: %s", parseReason(err, s.secrets))
		}
		if pc.Password != "" {
			s.secrets = addSecrets(s.secrets, pc.Password)
		}
		s.pg = pc
	}
	return s, nil
}

// parseReason is what is wrong with a DSN, without the DSN: pgx quotes
// the whole connection string with the password masked as best it can,
// which for a malformed one can leave part of a password (one with an
// '@' in it, say). Only pgx's reason is kept, scrubbed of every string
// that may be the password.
func parseReason(err error, secrets []string) string {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		inner := ""
		if u := pce.Unwrap(); u != nil {
			inner = u.Error()
		}
		msg = pce.Error()
		if inner != "" {
			msg = strings.TrimSuffix(msg, " ("+inner+")")
		}
		// "cannot parse `<redacted DSN>`: <reason>": the reason is what
		// follows the last "`: " (pgx's reasons have no backquote).
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		} else {
			msg = "invalid connection string"
		}
		if inner != "" {
			msg += " (" + inner + ")"
		}
	}
	return scrub(msg, secrets)
}
