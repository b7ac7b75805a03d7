// Package services holds the pure, allocation-conscious logic of the
// proxy's hot path:
//
//   - which configured service a request targets ([HostPattern], [Table]),
//   - how a service injects its credential ([Compiled.Inject]),
//   - how placeholders the agent holds are swapped for secrets on the way
//     out ([RewriteRequest]),
//   - and how secrets echoed by an upstream are hidden again on the way
//     back (package scrub).
//
// Nothing here does I/O or logging, and no error message produced by this
// package ever contains a secret value.
package services
