package apiwire

// RefusalHeader names the response header on every answer the proxy
// makes itself instead of forwarding (a refusal or a failed exchange):
// its value is the reason code, the activity log's word for it
// ("uncovered_host", "placeholder", "rate_limited", ...). An answer
// without it came from the upstream.
const RefusalHeader = "X-Agent-Vault-Refusal"

// ProxyRefusal is the JSON body of a proxy refusal, sent when the
// client's Accept prefers application/json (text otherwise, with the
// same facts).
type ProxyRefusal struct {
	Error RefusalDetail `json:"error"`
}

// RefusalDetail says why the proxy did not forward a request.
type RefusalDetail struct {
	// Status repeats the HTTP status.
	Status int `json:"status"`
	// Code is the reason code, as in the RefusalHeader.
	Code string `json:"code"`
	// Reason is a sentence for a person; it never holds a secret.
	Reason string `json:"reason"`
	// Host is the target host (with its port when it is not the
	// scheme's), for a host no service in the session's scope covers.
	Host string `json:"host,omitempty"`
	// Scope lists the session's services, for the same refusal.
	Scope []string `json:"scope,omitzero"`
	// RequestAccess says how to ask an operator for access to Host.
	RequestAccess string `json:"request_access,omitempty"`
}
