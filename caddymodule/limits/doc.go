// Package limits holds the proxy's per-session limits: Buckets, the
// token buckets of the services' rate_limit, and Slots, the cap on a
// session's concurrent requests. Both decide at once (never queue), take
// an injectable clock where time matters, and keep memory bounded by
// what is in use: a bucket that has refilled is forgotten (it is the
// same as a new one), a session with no request in flight holds no slot
// entry.
package limits
