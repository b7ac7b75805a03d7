package apiwire

import "time"

// ActivityEntry is one proxied request or refusal (GET
// /api/v1/activity, and each event of /api/v1/activity/stream). No
// field holds a secret: Path has no query, Credentials are names,
// Reason is the refusal text the agent got.
type ActivityEntry struct {
	ID       string    `json:"id"`
	At       time.Time `json:"at"`       // when it ended; at minus duration_ms is when it arrived
	Instance string    `json:"instance"` // the broker that served it
	Session  string    `json:"session"`  // "" for a 407
	Agent    string    `json:"agent"`
	Service  string    `json:"service"` // "" when no service matched
	Method   string    `json:"method"`
	Host     string    `json:"host"`
	Port     int       `json:"port"`
	Path     string    `json:"path"`
	Status   int       `json:"status"`
	// Decision is "forwarded", "refused" or "failed".
	Decision string `json:"decision"`
	// Code is one of a closed set (activity.Codes), "" when forwarded.
	Code     string `json:"code"`
	Reason   string `json:"reason"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
	// DurationMS is how long the broker took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Credentials are the names of the credentials used; never null.
	Credentials []string `json:"credentials"`
	Client      string   `json:"client"`
}

// ActivityList is the answer to GET /api/v1/activity.
type ActivityList struct {
	// Entries are newest first; never null.
	Entries []ActivityEntry `json:"entries"`
	// NextBefore, passed as ?before=, fetches the next (older) page;
	// absent on the last page.
	NextBefore string `json:"next_before,omitempty"`
}

// ActivityStats is the answer to GET /api/v1/activity/stats: this
// broker's activity Recorder since it started (the web UI's overview
// shows the drops).
type ActivityStats struct {
	// Written entries are stored.
	Written uint64 `json:"written"`
	// Dropped entries found the buffer full (the database slow or down).
	Dropped uint64 `json:"dropped"`
	// Failed entries were in batches the database refused every time.
	Failed uint64 `json:"failed"`
	// Queued entries wait to be written.
	Queued int `json:"queued"`
}
