package apiwire

import "time"

// DiscoveredList is the answer to GET /api/v1/discovered.
type DiscoveredList struct {
	Hosts []DiscoveredHost `json:"hosts"`
	// NextBefore, when not empty, is the before= of the next page.
	NextBefore string `json:"next_before,omitempty"`
}

// DiscoveredHost is a host agents tried that no service in their
// session's scope covered.
type DiscoveredHost struct {
	Host      string    `json:"host"`
	Port      int       `json:"port"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Count is how many requests (or CONNECTs without one) were refused.
	Count int64 `json:"count"`
	// Schemes are how the agents tried to authenticate: an
	// Authorization scheme ("Bearer", "Basic", ...; "other" for one
	// not known), or "header X-Api-Key" and the like. Never a value.
	Schemes []string `json:"schemes"`
	// Agents and Sessions are the most recent few that tried, newest
	// last.
	Agents   []string `json:"agents"`
	Sessions []string `json:"sessions"`
}
