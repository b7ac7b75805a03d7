package activity

// Codes say in a word why a request was refused or failed. They are a
// closed set so that metrics labelled by them stay few and filters can
// be checked; Entry.Reason carries the details.
const (
	CodeAuth             = "auth"               // 407: no, unknown or expired session token
	CodeUncoveredHost    = "uncovered_host"     // 403: no service in the session's scope covers the host
	CodePlaceholder      = "placeholder"        // 403: a placeholder not this session's, or not bound to this service
	CodeCleartext        = "cleartext"          // 403: a credential would travel over plain http
	CodeUpgrade          = "upgrade"            // 403: a protocol switch whose stream cannot be scanned
	CodeEgressPolicy     = "egress_policy"      // 403: the target resolves to an address the egress policy refuses
	CodeSessionEnded     = "session_ended"      // 403: the session was revoked or expired while its tunnel was open
	CodeForbidden        = "forbidden"          // 403: any other refusal of the pipeline
	CodeMisdirected      = "misdirected"        // 421: the request's Host, or a relayed tunnel's TLS SNI, is not the tunnel's target
	CodeBadRequest       = "bad_request"        // 400, 405, 505: a request the proxy cannot take
	CodeMethodNotAllowed = "method_not_allowed" // 403: the service's methods rule refuses the method
	CodePathNotAllowed   = "path_not_allowed"   // 403: the service's paths rule refuses the path
	CodeBodyTooLarge     = "body_too_large"     // 413: the request body is over the service's max_request_body
	CodeRateLimited      = "rate_limited"       // 429: the session is over the service's rate_limit
	CodeConcurrency      = "concurrency_limit"  // 429: the session has max_concurrent_per_session requests in flight
	CodeResponseTooLarge = "response_too_large" // 502: the response body is over the proxy's max_response_body
	CodeStoreStale       = "store_stale"        // 503: a credential's store is past its max_staleness
	CodeStateUnavailable = "state_unavailable"  // 503: the state database is unreachable
	CodeUpstream         = "upstream"           // 502: the exchange with the upstream failed
	CodeClientClosed     = "client_closed"      // 499: the agent went away
	CodeInternal         = "internal"           // 500
)

// Codes lists every code, for validation and documentation.
var Codes = []string{
	CodeAuth, CodeUncoveredHost, CodePlaceholder, CodeCleartext, CodeUpgrade, CodeEgressPolicy,
	CodeSessionEnded, CodeForbidden, CodeMisdirected, CodeBadRequest,
	CodeMethodNotAllowed, CodePathNotAllowed, CodeBodyTooLarge, CodeRateLimited, CodeConcurrency, CodeResponseTooLarge,
	CodeStoreStale, CodeStateUnavailable, CodeUpstream, CodeClientClosed, CodeInternal,
}
