package caddymodule

// Credentials (names and metadata only, never values), their stores,
// and services.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func (a *API) listStores(w http.ResponseWriter, _ *http.Request) {
	list, _ := a.deps.creds.Status(a.now())
	writeJSON(w, http.StatusOK, apiwire.StoreList{Stores: list})
}

func (a *API) listCredentials(w http.ResponseWriter, _ *http.Request) {
	list := a.deps.creds.List()
	if a.deps.tokens != nil {
		list = a.deps.tokens.list(list)
	}
	writeJSON(w, http.StatusOK, apiwire.CredentialList{Credentials: list})
}

func (a *API) putCredential(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+jsonErrorText(err))
		return
	}
	var keys map[string]json.RawMessage
	if json.Unmarshal(raw, &keys) == nil && keys["kind"] != nil {
		a.putTokenSource(w, r, name, raw, keys)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	var body apiwire.CredentialPutRequest
	if !readJSON(w, r, &body) {
		return
	}
	if body.Value == nil {
		writeError(w, http.StatusBadRequest, `body must be {"value":"..."} or a token source {"kind":"...", ...}`)
		return
	}
	m, created, err := a.deps.creds.Put(name, *body.Value)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	a.logger.Info("credential stored", zap.String("name", name), zap.String("store", m.Store), zap.String("version", m.Version))
	if a.deps.tokens != nil {
		// The operator's value wins over a rotated refresh token kept
		// for a source reading it.
		a.deps.tokens.storedValue(r.Context(), name)
	}
	// The store and version say which write this was; the value never
	// reaches the audit trail.
	a.record(r, audit.CredentialPut, name, fmt.Sprintf("store %s version %s", m.Store, m.Version))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, apiwire.CredentialPutResponse{Credential: m})
}

// putTokenSource defines name as a credential that mints tokens
// (apiwire.CredentialPutRequest). The body names credentials, never
// holds their values; it is validated before anything is stored.
func (a *API) putTokenSource(w http.ResponseWriter, r *http.Request, name string, raw []byte, keys map[string]json.RawMessage) {
	if _, ok := keys["value"]; ok {
		writeError(w, http.StatusBadRequest, `a body has either "value" or "kind", not both`)
		return
	}
	if err := storebackends.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if a.deps.tokens == nil {
		writeError(w, http.StatusNotImplemented, "token sources are not available in this broker")
		return
	}
	spec, err := tokensource.ParseSpec(raw)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	doc, _ := json.Marshal(spec)
	ctx, cancel := writeContext(r)
	defer cancel()
	created, err := a.deps.tokens.put(ctx, name, spec, doc)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	// A missing input is named only to the operator who sent it (the
	// answer): a name no store knows may be a value pasted in the
	// wrong place, so the log and the audit trail count them instead.
	var warnings []string
	missing := a.deps.creds.Missing(spec.Inputs())
	for _, in := range missing {
		warnings = append(warnings, fmt.Sprintf("credential %s is not in any store yet; requests that need %s are refused (503) until it is", in, name))
	}
	present := slices.DeleteFunc(spec.Inputs(), func(in string) bool { return slices.Contains(missing, in) })
	a.logger.Info("token source stored", zap.String("name", name), zap.String("kind", spec.Kind), zap.Strings("inputs", present), zap.Int("inputs_missing", len(missing)))
	detail := "token source " + spec.Kind + " reading " + strings.Join(present, ", ")
	if len(missing) > 0 {
		detail += fmt.Sprintf(" (%d inputs not in any store)", len(missing))
	}
	a.record(r, audit.CredentialPut, name, detail)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	for _, m := range a.deps.creds.List() {
		if m.Name == name {
			writeJSON(w, status, apiwire.CredentialPutResponse{Credential: m, Warnings: warnings})
			return
		}
	}
	writeJSON(w, status, apiwire.CredentialPutResponse{Credential: storebackends.Meta{Name: name, Kind: spec.Kind}, Warnings: warnings})
}

func (a *API) deleteCredential(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if a.deps.tokens != nil && a.deps.creds.IsSource(name) {
		ctx, cancel := writeContext(r)
		defer cancel()
		if _, err := a.deps.tokens.delete(ctx, name); err != nil {
			a.answerError(w, r, err)
			return
		}
		a.logger.Info("token source deleted", zap.String("name", name))
		a.record(r, audit.CredentialDelete, name, "token source")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	err := a.deps.creds.Delete(name)
	switch {
	case errors.Is(err, storebackends.ErrNotFound):
		writeError(w, http.StatusNotFound, "no credential named "+name)
	case err != nil:
		a.answerError(w, r, err)
	default:
		a.logger.Info("credential deleted", zap.String("name", name))
		a.record(r, audit.CredentialDelete, name, "")
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *API) listServices(w http.ResponseWriter, _ *http.Request) {
	svcs := a.deps.catalog.Services().Services()
	if svcs == nil {
		svcs = []services.Service{}
	}
	writeJSON(w, http.StatusOK, apiwire.ServiceList{Services: svcs})
}

func (a *API) putService(w http.ResponseWriter, r *http.Request) {
	var svc services.Service
	if !readJSON(w, r, &svc) {
		return
	}
	name := r.PathValue("name")
	if svc.Name != "" && svc.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body names service %q but the URL names %q", svc.Name, name))
		return
	}
	svc.Name = name
	warnings, err := a.storeService(r, svc, "")
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiwire.ServicePutResponse{Service: svc, Warnings: warnings})
}

// storeService validates svc, stores it and audits service.put (why,
// if set, is added to the detail). The warnings are problems that did
// not stop it, such as a credential no store holds yet.
func (a *API) storeService(r *http.Request, svc services.Service, why string) ([]string, error) {
	if err := svc.Validate(); err != nil {
		return nil, fail(http.StatusBadRequest, "%v", err)
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	if err := a.deps.catalog.Put(ctx, svc); err != nil {
		return nil, err
	}
	// A credential no store holds yet is not an error (it may be added
	// next), but requests that need it get 503 until then: say so.
	var warnings []string
	for _, name := range a.deps.creds.Missing(svc.Credentials()) {
		warnings = append(warnings, fmt.Sprintf("credential %s is not in any store yet; requests that need it are refused (503) until it is", name))
	}
	a.logger.Info("service stored", zap.String("name", svc.Name), zap.String("host", svc.Host), zap.String("auth", svc.Auth.Type),
		zap.Strings("warnings", warnings))
	detail := "host " + svc.Host
	if svc.Auth.Type != "" {
		detail += " auth " + svc.Auth.Type
	}
	if why != "" {
		detail += "; " + why
	}
	a.record(r, audit.ServicePut, svc.Name, detail)
	return warnings, nil
}

func (a *API) deleteService(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	name := r.PathValue("name")
	found, err := a.deps.catalog.Delete(ctx, name)
	switch {
	case err != nil:
		a.answerError(w, r, err)
	case !found:
		writeError(w, http.StatusNotFound, "no service named "+name)
	default:
		a.record(r, audit.ServiceDelete, name, "")
		w.WriteHeader(http.StatusNoContent)
	}
}
