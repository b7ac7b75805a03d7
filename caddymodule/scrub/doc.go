// Package scrub keeps secrets that went upstream from coming back to
// the agent: a [SecretSet] collects every form of every secret one
// request sent, and the [Redactor] it builds replaces them in headers,
// trailers and streamed bodies. The Redactor decides by content: each
// form is searched case-insensitively both in the bytes as sent and
// with one level of URL, JSON/JS/Python and HTML escapes decoded, so an
// echo in any mix of those is caught without a pattern per framework; a
// match in the decoded text may begin or end inside the escape next to
// it (whose bytes a decoder of another kind leaves as text).
// Nothing here does I/O, and no error or log text produced here
// contains a secret.
//
// Files: patterns.go derives the forms, decode.go is the decoding view,
// scan.go the matcher, edge.go the matches at the edges of escapes,
// pass.go one scan of a buffer (spans, hold-back,
// output), standin.go what may replace a match, redact.go the Redactor
// and its Reader, secretset.go the set, cache.go the cache of built
// redactors and the matchers they share.
package scrub
