package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// maxServiceFileBytes caps a service definition file.
const maxServiceFileBytes = 1 << 20

// serviceFlags are the flags of `service add` that build a service.
type serviceFlags struct {
	file           string
	host           string
	auth           string
	token          string
	username       string
	password       string
	key            string
	header         string
	prefix         string
	customHeaders  []string
	param          string
	allowCleartext bool
	allowUpgrades  []string
	methods        []string
	paths          []string
	rateLimit      string
	maxRequestBody string
	noIntercept    bool
}

// definitionFlags are every flag but --file: --file excludes them.
var definitionFlags = []string{"host", "auth", "token", "username", "password", "key", "header", "prefix", "custom-header", "param", "allow-cleartext", "allow-upgrade", "method", "path", "rate-limit", "max-request-body", "no-intercept"}

func (r *runner) serviceCommand() *cobra.Command {
	var f serviceFlags
	add := &cobra.Command{
		Use:     "add NAME (--host H --auth TYPE [auth flags] | --file service.json)",
		Aliases: []string{"set"},
		Short:   "Creates or replaces a service",
		Long: `Creates the service NAME, or replaces it if it exists: requests to its
host get its credential injected the way --auth says. The definition is
checked here before anything is sent.

Auth types and their flags (credential flags name a credential, never a
value):
  bearer       --token CRED                       Authorization: Bearer <CRED>
  basic        --username U and/or --password CRED (U may use {{ CRED }})
  api-key      --key CRED [--header NAME] [--prefix P]   default header X-API-Key
  custom       --custom-header 'Name: template with {{ CRED }}' (repeatable)
  query        --key CRED --param NAME            ?NAME=<CRED>
  passthrough  (no credential: the host is reachable, nothing injected;
               --no-intercept relays its TLS unread, for clients that pin
               certificates)

--file F reads the whole definition as JSON (the body of PUT
/api/v1/services/NAME; "-" for stdin); NAME may then be omitted.`,
		Example: `  agent-vault service add github --host api.github.com --auth bearer --token GITHUB_TOKEN
  agent-vault service add openai --host api.openai.com --auth api-key --key OPENAI_KEY --header Authorization --prefix 'Bearer '
  agent-vault service add internal --file internal-service.json`,
		Args: func(cmd *cobra.Command, got []string) error {
			if f.file != "" && len(got) == 0 {
				return nil
			}
			return args("NAME")(cmd, got)
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			name := ""
			if len(a) == 1 {
				name = a[0]
			}
			svc, err := f.service(cmd, name, r.env.Stdin)
			if err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			resp, err := c.PutService(cmd.Context(), svc)
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(resp)
			}
			for _, w := range resp.Warnings {
				r.warn("%s", apiclient.Printable(w, apiclient.MaxMessageRunes))
			}
			r.note("service %s stored: %s, auth %s", quoted(resp.Name), quoted(resp.Host), quoted(resp.Auth.Type))
			return nil
		},
	}
	fl := add.Flags()
	fl.StringVar(&f.file, "file", "", "read the service definition from this JSON `file` (- for stdin)")
	fl.StringVar(&f.host, "host", "", "host (pattern) the service covers: api.example.com, *.example.com, host:port")
	fl.StringVar(&f.auth, "auth", "", "auth `type`: bearer, basic, api-key, custom, query or passthrough")
	fl.StringVar(&f.token, "token", "", "bearer: the `credential` name sent as the bearer token")
	fl.StringVar(&f.username, "username", "", "basic: the username (may use {{ CRED }})")
	fl.StringVar(&f.password, "password", "", "basic: the `credential` name used as the password")
	fl.StringVar(&f.key, "key", "", "api-key, query: the `credential` name")
	fl.StringVar(&f.header, "header", "", "api-key: the header `name` (default X-API-Key)")
	fl.StringVar(&f.prefix, "prefix", "", "api-key: text before the value, e.g. 'Bearer '")
	fl.StringArrayVar(&f.customHeaders, "custom-header", nil, "custom: 'Name: template' with {{ CRED }} references (repeatable)")
	fl.StringVar(&f.param, "param", "", "query: the query parameter `name`")
	fl.BoolVar(&f.allowCleartext, "allow-cleartext", false, "inject over plain http:// too (off by default)")
	fl.StringSliceVar(&f.allowUpgrades, "allow-upgrade", nil, "protocols a request that carried a secret may upgrade to, e.g. h2c (WebSocket is always allowed)")
	fl.StringSliceVar(&f.methods, "method", nil, "the only HTTP methods agents may send, e.g. GET,HEAD (repeatable; default every method)")
	fl.StringArrayVar(&f.paths, "path", nil, "a path glob agents may use, or !glob they may not, e.g. '/repos/*' '!/repos/*/admin/*' (repeatable)")
	fl.StringVar(&f.rateLimit, "rate-limit", "", "requests per session: N/s, N/m or N/h, e.g. 60/m")
	fl.StringVar(&f.maxRequestBody, "max-request-body", "", "the largest request body, e.g. 10MiB")
	fl.BoolVar(&f.noIntercept, "no-intercept", false, "passthrough: relay the TLS unread (\"intercept\": false), for clients that pin certificates; no rule applies")

	list := &cobra.Command{
		Use:   "list",
		Short: "Lists services",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			svcs, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			if r.json {
				return r.printJSON(apiwire.ServiceList{Services: svcs})
			}
			rows := make([][]string, 0, len(svcs))
			for _, s := range svcs {
				rows = append(rows, []string{s.Name, s.Host, s.Auth.Type, joined(s.Credentials())})
			}
			return r.table("services", []string{"NAME", "HOST", "AUTH", "CREDENTIALS"}, rows)
		},
	}

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Deletes a service",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			if err := c.DeleteService(cmd.Context(), a[0]); err != nil {
				return err
			}
			r.note("service %s deleted", a[0])
			return nil
		},
	}
	return group("service", "", "", add, list, rm)
}

// service builds the service of `service add` from --file or the flags,
// and validates it as the server will.
func (f *serviceFlags) service(cmd *cobra.Command, name string, stdin io.Reader) (apiwire.Service, error) {
	var svc apiwire.Service
	if f.file != "" {
		for _, other := range definitionFlags {
			if cmd.Flags().Changed(other) {
				return svc, usagef("--file holds the whole definition: --%s cannot go with it", other)
			}
		}
		var err error
		if svc, err = readServiceFile(f.file, stdin); err != nil {
			return svc, err
		}
		switch {
		case name != "" && svc.Name != "" && svc.Name != name:
			return svc, usagef("%s names service %q but the command line names %q", f.file, svc.Name, name)
		case name != "":
			svc.Name = name
		case svc.Name == "":
			return svc, usagef("%s has no \"name\": give NAME on the command line", f.file)
		}
	} else {
		if f.host == "" || f.auth == "" {
			return svc, usagef("service add needs --host and --auth (or --file)")
		}
		svc = apiwire.Service{
			Name: name,
			Host: f.host,
			Auth: services.Auth{
				Type: f.auth, Token: f.token, Username: f.username, Password: f.password,
				Key: f.key, Header: f.header, Prefix: f.prefix, Param: f.param,
			},
			AllowCleartext: f.allowCleartext,
			AllowUpgrades:  f.allowUpgrades,
			Methods:        f.methods,
			Paths:          f.paths,
			RateLimit:      f.rateLimit,
			MaxRequestBody: f.maxRequestBody,
		}
		if f.noIntercept {
			svc.Intercept = new(bool)
		}
		if len(f.customHeaders) > 0 {
			svc.Auth.Headers = make(map[string]string, len(f.customHeaders))
			for _, h := range f.customHeaders {
				hname, value, err := splitHeader(h)
				if err != nil {
					return svc, err
				}
				if _, dup := svc.Auth.Headers[hname]; dup {
					return svc, usagef("--custom-header %s is given twice", hname)
				}
				svc.Auth.Headers[hname] = value
			}
		}
	}
	// Before Validate, whose errors quote the field: a value pasted
	// where a credential's name belongs is a secret.
	fromFile := f.file != ""
	for _, field := range []struct{ flag, json, value string }{
		{"--token", "auth.token", svc.Auth.Token},
		{"--password", "auth.password", svc.Auth.Password},
		{"--key", "auth.key", svc.Auth.Key},
	} {
		if field.value == "" || storebackends.ValidateName(field.value) == nil {
			continue
		}
		where := field.flag
		if fromFile {
			where = field.json + " in " + f.file
		}
		return svc, usagef("%s is not a credential name (letters, digits and '_', not starting with a digit): it names the credential, never holds its value; store the value with `%s credential set NAME` and give NAME", where, progName)
	}
	if err := svc.Validate(); err != nil {
		return svc, usageError{err}
	}
	return svc, nil
}

// splitHeader splits "Name: value" (or "Name=value"): a header name holds
// neither ':' nor '=', so the first of them ends it.
func splitHeader(h string) (string, string, error) {
	i := strings.IndexAny(h, ":=")
	if i <= 0 {
		return "", "", usagef("--custom-header wants 'Name: template', e.g. 'X-Api-Key: {{ API_KEY }}'")
	}
	return strings.TrimSpace(h[:i]), strings.TrimSpace(h[i+1:]), nil
}

// readServiceFile decodes one service definition from path ("-" for
// stdin), refusing unknown fields (a typo would silently drop a setting).
func readServiceFile(path string, stdin io.Reader) (apiwire.Service, error) {
	var svc apiwire.Service
	var src io.Reader = stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return svc, usageError{fmt.Errorf("reading the service file: %v", err)}
		}
		defer file.Close()
		src = file
	}
	data, err := io.ReadAll(io.LimitReader(src, maxServiceFileBytes+1))
	if err != nil {
		return svc, usageError{fmt.Errorf("reading the service file %s: %v", path, unwrapPath(err))}
	}
	if len(data) > maxServiceFileBytes {
		return svc, usagef("the service file %s is larger than %d bytes", path, maxServiceFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&svc); err != nil {
		return svc, usagef("the service file %s is not a service definition: %v", path, jsonProblem(err))
	}
	if dec.More() {
		return svc, usagef("the service file %s holds more than one JSON value", path)
	}
	return svc, nil
}

// jsonProblem is a decoding error without the file's content.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	}
	return err.Error() // "json: unknown field \"x\"" names a field, not a value
}
