package hashicorp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// Limits on one fetch, so that a huge or looping tree fails clearly
// instead of running away.
const (
	maxSecrets = 10_000 // secrets read, and separately folders listed
	maxDepth   = 32     // folder levels below Config.Path
)

// readConcurrency is how many secrets are read at once: enough to hide
// network latency, few enough not to load Vault.
const readConcurrency = 4

// Fetch reads every secret under the configured path and returns one
// item per key. Per-secret trouble (deleted versions, invalid names,
// non-string values, duplicate names) goes into Problems; an error means
// nothing usable was read. Errors never contain values or credentials.
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
	batch, secrets, err := f.fetchAll(ctx)
	if isPermissionDenied(err) {
		if f.cfg.AuthMethod == AuthAppRole {
			// The token may have been revoked or expired early: log in
			// again and retry once.
			f.log.Info("vault denied a read; logging in again", f.storeField(), zap.String("error", err.Error()))
			if lerr := f.login(ctx); lerr != nil {
				return storebackends.Batch{}, lerr
			}
			batch, secrets, err = f.fetchAll(ctx)
		} else if lerr := f.lookupToken(ctx); lerr != nil {
			// Tell a dead token apart from a policy that lacks this path.
			return storebackends.Batch{}, lerr
		}
	}
	if err != nil {
		return storebackends.Batch{}, err
	}
	f.log.Debug("vault fetch done", f.storeField(),
		zap.Int("secrets", secrets), zap.Int("items", len(batch.Items)),
		zap.Int("problems", len(batch.Problems)), zap.Duration("took", time.Since(start)))
	return batch, nil
}

// fetchAll does one complete read; it returns the batch and how many
// secrets were read.
func (f *Fetcher) fetchAll(ctx context.Context) (storebackends.Batch, int, error) {
	version := f.cfg.KVVersion
	if version == 0 {
		v, err := f.detectKVVersion(ctx)
		if err != nil {
			return storebackends.Batch{}, 0, err
		}
		version = v
	}
	secrets, problems, err := f.listSecrets(ctx, version)
	if err != nil {
		return storebackends.Batch{}, 0, err
	}
	results, err := f.readAll(ctx, version, secrets)
	if err != nil {
		return storebackends.Batch{}, 0, err
	}
	batch := storebackends.Batch{Problems: problems}
	for _, r := range results {
		batch.Items = append(batch.Items, r.items...)
		batch.Problems = append(batch.Problems, r.problems...)
	}
	batch.Items, batch.Problems = dropDuplicates(batch.Items, batch.Problems)
	return batch, len(secrets), nil
}

// detectKVVersion asks Vault which KV version the mount runs. The
// endpoint answers for any token with some access to the mount.
func (f *Fetcher) detectKVVersion(ctx context.Context) (int, error) {
	op := "detecting the KV version of mount " + f.cfg.Mount
	secret, status, err := f.get(ctx, op, "sys/internal/ui/mounts/"+f.cfg.Mount, false)
	if err != nil {
		return 0, fmt.Errorf("%w; set kv_version to skip detection", err)
	}
	if status == http.StatusNotFound || secret == nil || secret.Data == nil {
		return 0, noResponse(op, status, "mount not found")
	}
	engine, _ := secret.Data["type"].(string)
	if engine != "kv" && engine != "generic" {
		return 0, noResponse(op, 0, fmt.Sprintf("mount is a %q secrets engine, not kv", engine))
	}
	// Vault answers for the mount that contains the path, so a mount
	// setting that reaches into the mount would otherwise go unnoticed.
	if p, _ := secret.Data["path"].(string); p != "" && strings.Trim(p, "/") != f.cfg.Mount {
		return 0, noResponse(op, 0, fmt.Sprintf("%q is not a mount point but lies inside mount %q: set mount to %q and move the rest into path",
			f.cfg.Mount, strings.Trim(p, "/"), strings.Trim(p, "/")))
	}
	options, _ := secret.Data["options"].(map[string]any)
	switch v, _ := options["version"].(string); v {
	case "", "1":
		return 1, nil
	case "2":
		return 2, nil
	default:
		return 0, noResponse(op, 0, fmt.Sprintf("unsupported KV version %q", v))
	}
}

// listSecrets walks the folder tree under Config.Path and returns the
// secrets' paths relative to the mount, sorted.
func (f *Fetcher) listSecrets(ctx context.Context, version int) ([]string, []storebackends.Problem, error) {
	type folder struct {
		path  string
		depth int
	}
	var secrets []string
	var problems []storebackends.Problem
	pending := []folder{{path: f.cfg.Path}}
	for listed := 0; len(pending) > 0; listed++ {
		if listed >= maxSecrets {
			return nil, nil, fmt.Errorf("vault: more than %d folders under %s; narrow the path", maxSecrets, f.source(f.cfg.Path))
		}
		dir := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		keys, err := f.list(ctx, version, dir.path)
		if err != nil {
			return nil, nil, err
		}
		for _, key := range keys {
			name, isFolder := strings.CutSuffix(key, "/")
			child := joinPath(dir.path, name)
			if checkSegment(name) != nil || strings.Contains(name, "/") {
				problems = append(problems, storebackends.Problem{Source: f.source(child), Reason: "unusable key name in Vault's listing"})
				continue
			}
			switch {
			case !isFolder:
				if len(secrets) == maxSecrets {
					return nil, nil, fmt.Errorf("vault: more than %d secrets under %s; narrow the path", maxSecrets, f.source(f.cfg.Path))
				}
				secrets = append(secrets, child)
			case dir.depth == maxDepth:
				return nil, nil, fmt.Errorf("vault: folders under %s are nested deeper than %d levels (at %s)", f.source(f.cfg.Path), maxDepth, f.source(child))
			default:
				pending = append(pending, folder{path: child, depth: dir.depth + 1})
			}
		}
	}
	slices.Sort(secrets)
	return secrets, problems, nil
}

// list returns the keys of one folder; a folder that does not exist
// (Vault's 404 for an empty or missing folder) has none.
func (f *Fetcher) list(ctx context.Context, version int, dir string) ([]string, error) {
	p := f.cfg.Mount + "/"
	if version == 2 {
		p += "metadata/"
	}
	if dir != "" {
		p += dir + "/"
	}
	op := "listing " + p
	secret, status, err := f.get(ctx, op, p, true)
	if err != nil || status == http.StatusNotFound {
		return nil, err
	}
	raw, ok := secret.Data["keys"].([]any)
	if !ok {
		return nil, noResponse(op, status, "response has no keys")
	}
	keys := make([]string, 0, len(raw))
	for _, k := range raw {
		s, ok := k.(string)
		if !ok {
			return nil, noResponse(op, status, "response has a key that is not a string")
		}
		keys = append(keys, s)
	}
	slices.Sort(keys)
	return keys, nil
}

// readResult is what reading one secret produced.
type readResult struct {
	items    []storebackends.Item
	problems []storebackends.Problem
}

// readAll reads the secrets a few at a time and returns their results
// in the order of secrets. The first error cancels the others.
func (f *Fetcher) readAll(ctx context.Context, version int, secrets []string) ([]readResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]readResult, len(secrets))
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	sem := make(chan struct{}, readConcurrency)
	for i, secretPath := range secrets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			// The engine recovers panics only on its own goroutine: one
			// odd response must not take the server down from here.
			defer func() {
				if p := recover(); p != nil {
					once.Do(func() {
						firstErr = &vaultError{op: "reading " + secretPath, reason: fmt.Sprintf("internal error (%T)", p)}
						cancel()
					})
				}
			}()
			r, err := f.readSecret(ctx, version, secretPath)
			if err != nil {
				once.Do(func() { firstErr = err; cancel() })
				return
			}
			results[i] = r
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, &vaultError{op: "reading secrets under " + f.source(f.cfg.Path), reason: describe(err)}
	}
	return results, nil
}

// readSecret reads one secret and turns its keys into items.
func (f *Fetcher) readSecret(ctx context.Context, version int, secretPath string) (readResult, error) {
	source := f.source(secretPath)
	p := f.cfg.Mount + "/" + secretPath
	if version == 2 {
		p = f.cfg.Mount + "/data/" + secretPath
	}
	secret, status, err := f.get(ctx, "reading "+p, p, false)
	if err != nil {
		return readResult{}, err
	}
	problem := func(reason string) readResult {
		return readResult{problems: []storebackends.Problem{{Source: source, Reason: reason}}}
	}
	if secret == nil {
		// Listed a moment ago: deleted since, or (KV v2) metadata
		// without any version.
		return problem("not found in Vault when read"), nil
	}
	if version == 1 {
		if status != http.StatusOK {
			return problem("not found in Vault when read"), nil
		}
		return f.toItems(secretPath, secret.Data, "", time.Time{}), nil
	}

	meta, _ := secret.Data["metadata"].(map[string]any)
	data, isMap := secret.Data["data"].(map[string]any)
	if status != http.StatusOK || !isMap {
		// Never an empty value: a deleted secret is reported, not served.
		switch {
		case meta["destroyed"] == true:
			return problem("destroyed in Vault"), nil
		case meta["deletion_time"] != nil && meta["deletion_time"] != "":
			return problem("soft-deleted in Vault"), nil
		default:
			return problem("no readable version in Vault"), nil
		}
	}
	num, _ := meta["version"].(json.Number)
	if v, err := strconv.ParseUint(num.String(), 10, 64); err != nil || v == 0 {
		return problem("malformed version metadata in Vault's response"), nil
	}
	created, _ := meta["created_time"].(string)
	updatedAt, _ := time.Parse(time.RFC3339Nano, created)
	return f.toItems(secretPath, data, num.String(), updatedAt), nil
}

// toItems makes one item per key of a secret, or a problem when the
// name is invalid or the value is not a string.
func (f *Fetcher) toItems(secretPath string, data map[string]any, version string, updatedAt time.Time) readResult {
	var r readResult
	for _, key := range slices.Sorted(maps.Keys(data)) {
		source := f.source(secretPath) + "#" + key
		name := f.credentialName(secretPath, key)
		if err := storebackends.ValidateName(name); err != nil {
			r.problems = append(r.problems, storebackends.Problem{Source: source, Name: name, Reason: err.Error()})
			continue
		}
		value, ok := data[key].(string)
		if !ok {
			r.problems = append(r.problems, storebackends.Problem{Source: source, Name: name, Reason: "value is not a string"})
			continue
		}
		r.items = append(r.items, storebackends.Item{
			Name: name, Value: value, Version: version, Source: source, UpdatedAt: updatedAt,
		})
	}
	return r
}

// credentialName applies the name mapping and prefix.
func (f *Fetcher) credentialName(secretPath, key string) string {
	if f.cfg.NameMapping != MapPathKey {
		return f.cfg.NamePrefix + key
	}
	rel := secretPath
	if f.cfg.Path != "" {
		rel = strings.TrimPrefix(secretPath, f.cfg.Path+"/")
	}
	return f.cfg.NamePrefix + envName(rel+"/"+key)
}

// envName upper-cases s and replaces every character other than
// [A-Za-z0-9] with '_': agents/github/token -> AGENTS_GITHUB_TOKEN.
func envName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		default:
			return '_'
		}
	}, s)
}

// dropDuplicates removes every item whose name another item also has:
// which value was meant is ambiguous, so none is served.
func dropDuplicates(items []storebackends.Item, problems []storebackends.Problem) ([]storebackends.Item, []storebackends.Problem) {
	sources := map[string][]string{}
	for _, it := range items {
		sources[it.Name] = append(sources[it.Name], it.Source)
	}
	kept := items[:0]
	for _, it := range items {
		if len(sources[it.Name]) == 1 {
			kept = append(kept, it)
			continue
		}
		others := slices.DeleteFunc(slices.Clone(sources[it.Name]), func(s string) bool { return s == it.Source })
		problems = append(problems, storebackends.Problem{
			Source: it.Source, Name: it.Name,
			Reason: "duplicate credential name (also from " + strings.Join(others, ", ") + "); none of them is used",
		})
	}
	return kept, problems
}

// get performs a GET (or a LIST) of a Vault API path. It returns the
// parsed response and its status; a 404 is not an error when Vault gave
// no error message (a missing path, or a deleted KV v2 version whose
// body still carries metadata); the secret is then nil or that body.
func (f *Fetcher) get(ctx context.Context, op, apiPath string, list bool) (*api.Secret, int, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	var params url.Values
	if list {
		params = url.Values{"list": {"true"}}
	}
	resp, err := f.client.Logical().ReadRawWithDataWithContext(ctx, apiPath, params)
	if resp != nil {
		defer resp.Body.Close()
	}
	var re *api.ResponseError
	switch {
	case err == nil:
	case resp != nil && resp.StatusCode == http.StatusNotFound && errors.As(err, &re) && !re.RawError && vaultMessage(re) == "":
		// vault/api buffered the body while building the error.
		secret, perr := api.ParseSecret(resp.Body)
		if perr != nil {
			return nil, 0, f.fail(op, perr)
		}
		return secret, http.StatusNotFound, nil
	default:
		return nil, 0, f.fail(op, err)
	}
	secret, err := api.ParseSecret(resp.Body)
	if err != nil {
		return nil, 0, f.fail(op, err)
	}
	if secret == nil {
		return nil, 0, noResponse(op, resp.StatusCode, "empty response")
	}
	return secret, resp.StatusCode, nil
}

// source names a path in the mount the way Problems and Items show it.
func (f *Fetcher) source(p string) string { return joinPath(f.cfg.Mount, p) }

// joinPath joins two Vault path parts, either of which may be empty.
func joinPath(dir, name string) string {
	switch {
	case dir == "":
		return name
	case name == "":
		return dir
	}
	return dir + "/" + name
}
