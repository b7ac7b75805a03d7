package activity

import "github.com/agentvault/caddy-agent-vault/internal/textclean"

// clean is the one cleaning of stored text (textclean.Clean).
var clean = textclean.Clean

// Bounds of the text fields (bytes), so that a hostile request cannot
// fill the table: a path or reason is cut, marked with "...".
const (
	maxField  = 256
	maxPath   = 1024
	maxReason = 512
	maxCreds  = 32
)

// prepare fills in what the proxy left to the writer and cleans the
// text (done off the hot path, in the writer goroutine).
func (r *Recorder) prepare(e *Entry) {
	if e.At.IsZero() {
		e.At = r.o.Now()
	}
	e.At = e.At.UTC()
	if e.ID == "" {
		e.ID = NewID(e.At)
	}
	if e.Instance == "" {
		e.Instance = r.o.Instance
	}
	e.Instance, e.Session, e.Agent = clean(e.Instance, maxField), clean(e.Session, maxField), clean(e.Agent, maxField)
	e.Service, e.Method, e.Host = clean(e.Service, maxField), clean(e.Method, maxField), clean(e.Host, maxField)
	e.Path, e.Code, e.Reason = clean(e.Path, maxPath), clean(e.Code, maxField), clean(e.Reason, maxReason)
	e.Client = clean(e.Client, maxField)
	e.Decision = Decision(clean(string(e.Decision), maxField))
	if len(e.Credentials) > maxCreds {
		e.Credentials = e.Credentials[:maxCreds]
	}
	for i, c := range e.Credentials {
		if s := clean(c, maxField); s != c {
			e.Credentials = append([]string(nil), e.Credentials...) // never write into the caller's slice
			e.Credentials[i] = s
		}
	}
}
