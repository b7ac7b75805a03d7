// Package activity records what the proxy did: one Entry per proxied
// request or refusal, written to the state database asynchronously in
// batches (the proxy never waits on the database; a full buffer drops
// entries and counts them), kept by age and count, read back with
// filters and a cursor, and streamed live.
//
// It imports nothing of the state database: the Store it writes to and
// reads from is a small interface the app adapts the database to.
package activity

import "time"

// Decision is what the broker did with a request; a closed set.
type Decision string

// The decisions.
const (
	// Forwarded: the request reached the upstream (whatever it answered).
	Forwarded Decision = "forwarded"
	// Refused: the broker refused it; nothing reached the upstream.
	Refused Decision = "refused"
	// Failed: the broker tried and the exchange with the upstream failed
	// (dial, TLS, a broken answer), or the broker failed internally.
	Failed Decision = "failed"
)

// Valid reports whether d is one of the decisions.
func (d Decision) Valid() bool {
	switch d {
	case Forwarded, Refused, Failed:
		return true
	}
	return false
}

// Entry is one proxied request or refusal. No field ever holds a
// secret, a token or a query string: Path is the escaped path alone,
// Credentials are names, Reason is the refusal text the agent got
// (already scrubbed).
type Entry struct {
	ID string // set by the Recorder when empty
	// At is when the request ended (was answered, refused, or its
	// tunnel closed), so that a long request or tunnel is not older
	// than the entries recorded before it: the live stream follows the
	// log in this order. At minus Duration is when it arrived.
	At       time.Time
	Instance string // the broker that served it (its instance id)
	Session  string // empty: not authenticated (a 407)
	Agent    string
	Service  string // empty: no service matched
	Method   string
	Host     string
	Port     int
	Path     string // escaped path, never the query
	Status   int
	Decision Decision
	// Code is a short machine-readable reason from a closed set (see
	// codes.go), empty when forwarded; Reason is the human text.
	Code        string
	Reason      string
	BytesIn     int64 // request body bytes from the agent
	BytesOut    int64 // response body bytes to the agent
	Duration    time.Duration
	Credentials []string // names of the credentials the request used
	Client      string   // the agent's address, without its port
	// AuthScheme is how the agent tried to authenticate a request to a
	// host no service covers (see AuthSchemeOf): what the discovered
	// hosts keep. Never a value; the activity log does not store it.
	AuthScheme string
}
