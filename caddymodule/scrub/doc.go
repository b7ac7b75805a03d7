// Package scrub keeps secrets that went upstream from coming back to
// the agent: a [SecretSet] collects every form of every secret one
// request sent, and the [Redactor] it builds replaces them in headers,
// trailers and streamed bodies. Nothing here does I/O, and no error or
// log text produced here contains a secret.
package scrub
