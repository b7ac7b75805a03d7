package infisical

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// rawSecret is one secret of the v3 raw list. Fields not used here
// (id, workspace, comment, tags, metadata, ...) are not decoded.
type rawSecret struct {
	Key         string `json:"secretKey"`
	Value       string `json:"secretValue"`
	Version     any    `json:"version"` // a number; anything else is tolerated
	Type        string `json:"type"`    // "shared" or "personal"
	Environment string `json:"environment"`
	SecretPath  string `json:"secretPath"` // set for each secret of a recursive list
	// Hidden is set when the identity may list the secret but not read
	// its value; Value then holds a placeholder.
	Hidden    bool   `json:"secretValueHidden"`
	UpdatedAt string `json:"updatedAt"`
}

// rawImport is the content of one folder imported into the listed one.
type rawImport struct {
	SecretPath  string `json:"secretPath"`
	Environment string `json:"environment"`
	// A pointer, like listResponse.Secrets: a missing list is a
	// malformed answer, never "this import has no secrets".
	Secrets *[]rawSecret `json:"secrets"`
}

// listResponse is the answer of GET /api/v3/secrets/raw. The endpoint
// has no pagination (no limit or offset parameter): one answer holds
// the whole folder (and, recursively, its subfolders).
type listResponse struct {
	// Secrets is a pointer so that a missing list is told apart from an
	// empty one: the former is a malformed answer, not "no secrets".
	Secrets *[]rawSecret `json:"secrets"`
	Imports []rawImport  `json:"imports"`
}

// Fetch lists the configured folder (recursively if asked, with its
// imports) and returns one item per secret. Per-secret trouble (invalid
// names, hidden values, conflicting imports) goes into Problems; an
// error means nothing usable was read. Errors never contain values or
// credentials.
func (f *Fetcher) Fetch(ctx context.Context) (storebackends.Batch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return storebackends.Batch{}, errClosed
	}
	if err := f.ensureSession(ctx); err != nil {
		return storebackends.Batch{}, err
	}
	start := time.Now()
	var resp listResponse
	err := f.list(ctx, f.cfg.Recursive, true, &resp)
	if isUnauthorized(err) && f.cfg.AuthMethod == AuthUniversal {
		// The token was revoked or expired early: log in again and
		// retry once.
		f.log.Info("infisical rejected the access token; logging in again", f.storeField(), zap.String("error", err.Error()))
		if lerr := f.login(ctx); lerr != nil {
			return storebackends.Batch{}, lerr
		}
		resp = listResponse{}
		err = f.list(ctx, f.cfg.Recursive, true, &resp)
	}
	if err != nil {
		return storebackends.Batch{}, err
	}
	batch := f.toBatch(resp)
	f.log.Debug("infisical fetch done", f.storeField(),
		zap.Int("items", len(batch.Items)), zap.Int("problems", len(batch.Problems)),
		zap.Int("imports", len(resp.Imports)), zap.Duration("took", time.Since(start)))
	return batch, nil
}

// list performs GET /api/v3/secrets/raw for the configured folder. The
// caller holds f.mu. (Infisical's reference now files this endpoint
// under "deprecated" in favour of GET /api/v4/secrets, which takes
// projectId instead of workspaceId; v3 is what Infisical's Go SDK
// calls, and it still serves.)
func (f *Fetcher) list(ctx context.Context, recursive, imports bool, out *listResponse) error {
	op := "listing secrets in " + f.cfg.Environment + ":" + f.cfg.SecretPath
	q := url.Values{
		"workspaceId": {f.cfg.ProjectID},
		"environment": {f.cfg.Environment},
		"secretPath":  {f.cfg.SecretPath},
		"recursive":   {strconv.FormatBool(recursive)},
		// Imported folders are part of what applications see.
		"include_imports": {strconv.FormatBool(imports)},
		// ${OTHER} references are resolved by Infisical, so that the
		// value injected is the value applications see, never the
		// reference itself.
		"expandSecretReferences": {"true"},
	}
	err := f.call(ctx, op, http.MethodGet, "/api/v3/secrets/raw", q, nil, f.session.token, out)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusUnauthorized && f.cfg.AuthMethod == AuthToken {
			ae.op = "infisical token rejected while " + op
		}
		return err
	}
	if out.Secrets == nil {
		return &apiError{op: op, status: http.StatusOK, reason: "Infisical's response has no secrets list"}
	}
	for _, imp := range out.Imports {
		if imp.Secrets == nil {
			return &apiError{op: op, status: http.StatusOK, reason: "an import in Infisical's response has no secrets list"}
		}
	}
	return nil
}

// toBatch turns a list answer into items and problems.
//
// Personal secrets (overrides that belong to a user) are ignored. A key
// defined directly in the listed folder wins over the same key from an
// import, as in Infisical itself. Two imports that define the same key
// with different values are a conflict: Infisical resolves it by import
// order, which the API answer does not make explicit enough to trust,
// so neither is used and a problem is reported. In a recursive list
// the answer holds the imports of every subfolder without saying which
// folder imports what, so there a key that is both direct and imported
// is passed on twice, and the sync engine drops every copy and reports
// it, as it does for a key defined directly in two folders.
func (f *Fetcher) toBatch(resp listResponse) storebackends.Batch {
	var b storebackends.Batch
	direct := map[string]bool{}
	for _, s := range *resp.Secrets {
		if s.Type == "personal" {
			continue
		}
		direct[s.Key] = true
		f.add(&b, s, s.Environment, s.SecretPath)
	}

	type definition struct {
		secret     rawSecret
		env, path  string
		conflicted bool
	}
	var order []string
	imported := map[string]*definition{}
	var conflicts map[string][]string // key -> sources, in import order
	for _, imp := range resp.Imports {
		if imp.Secrets == nil {
			continue // list refuses such answers; toBatch stays total for any input
		}
		for _, s := range *imp.Secrets {
			if s.Type == "personal" {
				continue
			}
			if direct[s.Key] {
				if f.cfg.Recursive {
					f.add(&b, s, imp.Environment, imp.SecretPath)
				}
				continue
			}
			first, seen := imported[s.Key]
			if !seen {
				imported[s.Key] = &definition{secret: s, env: imp.Environment, path: imp.SecretPath}
				order = append(order, s.Key)
				continue
			}
			if !first.secret.Hidden && !s.Hidden && first.secret.Value == s.Value {
				continue // the same value twice is no conflict
			}
			if conflicts == nil {
				conflicts = map[string][]string{}
			}
			if !first.conflicted {
				first.conflicted = true
				conflicts[s.Key] = []string{f.source(first.env, first.path, s.Key)}
			}
			conflicts[s.Key] = append(conflicts[s.Key], f.source(imp.Environment, imp.SecretPath, s.Key))
		}
	}
	for _, key := range order {
		d := imported[key]
		if !d.conflicted {
			f.add(&b, d.secret, d.env, d.path)
			continue
		}
		b.Problems = append(b.Problems, storebackends.Problem{
			Source: strings.Join(conflicts[key], ", "), Name: clip(f.cfg.NamePrefix+key, 160),
			Reason: "imported more than once with different values; rather than guess which import wins, none is used",
		})
	}
	return b
}

// add appends s, read from env:path, as an item, or a problem when it
// cannot be served.
func (f *Fetcher) add(b *storebackends.Batch, s rawSecret, env, path string) {
	source := f.source(env, path, s.Key)
	name := f.cfg.NamePrefix + s.Key
	switch {
	case s.Key == "":
		b.Problems = append(b.Problems, storebackends.Problem{Source: source, Reason: "malformed entry in Infisical's answer: no secret key"})
	case storebackends.ValidateName(name) != nil:
		b.Problems = append(b.Problems, storebackends.Problem{Source: source, Name: clip(name, 160),
			Reason: "invalid credential name: use letters, digits and '_', not starting with a digit, at most 128 characters"})
	case s.Hidden:
		b.Problems = append(b.Problems, storebackends.Problem{Source: source, Name: name,
			Reason: "Infisical hides this value from the identity: grant it permission to read secret values"})
	default:
		updated, _ := time.Parse(time.RFC3339Nano, s.UpdatedAt)
		b.Items = append(b.Items, storebackends.Item{
			Name: name, Value: s.Value, Version: version(s.Version), Source: source, UpdatedAt: updated,
		})
	}
}

// source names a secret as Items and Problems show it:
// "<environment>:<folder>/<key>", e.g. "prod:/agents/GITHUB_TOKEN".
// Where Infisical leaves the environment or folder out, the configured
// ones are meant.
func (f *Fetcher) source(env, path, key string) string {
	if env == "" {
		env = f.cfg.Environment
	}
	if path == "" {
		path = f.cfg.SecretPath
	}
	return clip(env, 100) + ":" + clip(strings.TrimSuffix(path, "/"), 300) + "/" + clip(key, 160)
}

// version renders Infisical's secret version as a decimal string; a
// missing or malformed one gives "", and the sync engine then versions
// the value by its hash.
func version(v any) string {
	n, ok := v.(float64)
	if !ok || n < 1 || n > 1<<53 || n != float64(int64(n)) {
		return ""
	}
	return strconv.FormatInt(int64(n), 10)
}

// clip shortens text from Infisical that ends up in a problem report,
// so that a garbage key cannot bloat health output.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
