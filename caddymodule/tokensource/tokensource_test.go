package tokensource

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// oauthServer is an RFC 6749 token endpoint: it checks the client's
// authentication and the grant, and answers §5.1 or §5.2.
type oauthServer struct {
	*httptest.Server
	calls    atomic.Int64
	mu       sync.Mutex
	forms    []url.Values
	basic    [][2]string
	refresh  string // the refresh token it accepts
	rotate   bool
	down     atomic.Bool
	gate     chan struct{} // when set, answers wait for it
	lifetime int
}

func newOAuthServer(t *testing.T) *oauthServer {
	o := &oauthServer{refresh: "rt-1", lifetime: 100}
	o.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := o.calls.Add(1)
		if o.gate != nil {
			<-o.gate
		}
		if o.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "bad request shape", 400)
			return
		}
		r.ParseForm()
		id, secret, basic := r.BasicAuth()
		o.mu.Lock()
		o.forms = append(o.forms, r.PostForm)
		if basic {
			id, _ = url.QueryUnescape(id)
			secret, _ = url.QueryUnescape(secret)
			o.basic = append(o.basic, [2]string{id, secret})
		} else {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		rt := o.refresh
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if id != "my client" || secret != "s3cr&t=" {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client","error_description":"echo `+secret+`"}`)
			return
		}
		resp := map[string]any{"access_token": fmt.Sprintf("at-%d", n), "token_type": "Bearer", "expires_in": o.lifetime}
		switch r.PostForm.Get("grant_type") {
		case "refresh_token":
			if r.PostForm.Get("refresh_token") != rt {
				w.WriteHeader(400)
				io.WriteString(w, `{"error":"invalid_grant"}`)
				return
			}
			if o.rotate {
				next := fmt.Sprintf("rt-%d", n+1)
				o.mu.Lock()
				o.refresh = next
				o.mu.Unlock()
				resp["refresh_token"] = next
			}
		case "client_credentials":
		default:
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"unsupported_grant_type"}`)
			return
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *oauthServer) lastForm() url.Values {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.forms[len(o.forms)-1]
}

type creds struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *creds) lookup(name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[name]
	if !ok {
		return "", fmt.Errorf("credential %s is not available", name)
	}
	return v, nil
}

func (c *creds) save(_ context.Context, name, v string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[name] = v
	return nil
}

func newSource(t *testing.T, spec Spec, client *http.Client, c *creds, clk *clock) *Source {
	t.Helper()
	src, err := New("GMAIL", spec, Env{Client: client, Lookup: c.lookup, SaveRefreshToken: c.save, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func refreshSpec(u string) Spec {
	return Spec{Kind: KindOAuth2Refresh, TokenURL: u + "/token", ClientID: "my client", ClientSecret: "CS", RefreshToken: "RT",
		Scopes: []string{"https://www.googleapis.com/auth/gmail.readonly", "openid"}}
}

func TestRefreshGrantBasicRotationAndLifetime(t *testing.T) {
	o := newOAuthServer(t)
	o.rotate = true
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	ctx := context.Background()

	tok, exp, err := src.Token(ctx)
	if err != nil || tok != "at-1" || !exp.Equal(clk.Now().Add(100*time.Second)) {
		t.Fatalf("first use: %q %v %v", tok, exp, err)
	}
	f := o.lastForm()
	if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != "rt-1" || f.Get("scope") != "https://www.googleapis.com/auth/gmail.readonly openid" || f.Has("client_secret") {
		t.Fatalf("form %v", f)
	}
	if o.basic[0] != [2]string{"my client", "s3cr&t="} {
		t.Fatalf("basic auth %v", o.basic)
	}
	if v, _ := c.lookup("RT"); v != "rt-2" {
		t.Fatalf("rotated refresh token not kept: %q", v)
	}
	// Before 80%: cached.
	clk.Add(79 * time.Second)
	if tok, _, _ := src.Token(ctx); tok != "at-1" || o.calls.Load() != 1 {
		t.Fatalf("before 80%%: %q after %d calls", tok, o.calls.Load())
	}
	// Past 80%: the old token still serves while one refresh runs.
	clk.Add(2 * time.Second)
	if tok, _, _ := src.Token(ctx); tok != "at-1" {
		t.Fatalf("past 80%%, got %q", tok)
	}
	waitFor(t, func() bool { tok, _, _ := src.Token(ctx); return tok == "at-2" })
	if o.calls.Load() != 2 || o.lastForm().Get("refresh_token") != "rt-2" {
		t.Fatalf("calls %d, form %v", o.calls.Load(), o.lastForm())
	}
	st := src.Status()
	if st.Kind != KindOAuth2Refresh || st.LastError != "" || !st.ExpiresAt.Equal(clk.Now().Add(100*time.Second)) {
		t.Fatalf("status %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond) // bounded poll on an observable
	}
}

func TestClientCredentialsPost(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t="}}
	spec := Spec{Kind: KindOAuth2ClientCredentials, TokenURL: o.URL + "/oauth/token", ClientID: "my client", ClientSecret: "CS",
		ClientAuth: ClientSecretPost, Audience: "https://api.example", Scopes: []string{"read:all"}}
	src := newSource(t, spec, o.Client(), c, &clock{t: time.Unix(1_800_000_000, 0)})
	if tok, _, err := src.Token(context.Background()); err != nil || tok != "at-1" {
		t.Fatalf("%q %v", tok, err)
	}
	f := o.lastForm()
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != "my client" || f.Get("client_secret") != "s3cr&t=" ||
		f.Get("audience") != "https://api.example" || f.Get("scope") != "read:all" || len(o.basic) != 0 {
		t.Fatalf("form %v basic %v", f, o.basic)
	}
}

func TestSingleFlightBurst(t *testing.T) {
	o := newOAuthServer(t)
	o.gate = make(chan struct{})
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, &clock{t: time.Unix(1_800_000_000, 0)})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, _, err := src.Token(context.Background())
			if err == nil && tok != "at-1" {
				err = fmt.Errorf("token %q", tok)
			}
			errs <- err
		}()
	}
	waitFor(t, func() bool { return o.calls.Load() == 1 })
	close(o.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Fatalf("%d fetches for a burst of 100", n)
	}
}

func TestStaleAndFailClosed(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	ctx := context.Background()
	tok, _, _ := src.Token(ctx)
	if !src.MarkStale(tok) || src.MarkStale(tok) {
		t.Fatal("MarkStale should mark the current token once")
	}
	if tok2, _, _ := src.Token(ctx); tok2 != "at-2" {
		t.Fatalf("after stale: %q", tok2)
	}
	if src.MarkStale(tok) {
		t.Fatal("a replaced token must not mark the new one stale")
	}
	if got := src.Current(); len(got) != 2 || got[0] != "at-2" || got[1] != "at-1" {
		t.Fatalf("current %v", got)
	}
	// Down past expiry: fail closed, with the cause and no secret.
	o.down.Store(true)
	clk.Add(101 * time.Second)
	_, _, err := src.Token(ctx)
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("want ErrExpired, got %v", err)
	}
	calls := o.calls.Load()
	if _, _, err := src.Token(ctx); !errors.Is(err, ErrExpired) || o.calls.Load() != calls {
		t.Fatalf("a failure must not be retried at once: %v, %d calls", err, o.calls.Load()-calls)
	}
	if st := src.Status(); !strings.Contains(st.LastError, "503") {
		t.Fatalf("status %+v", st)
	}
	// Back up: after the retry delay it recovers.
	o.down.Store(false)
	clk.Add(RetryAfterFailure)
	if tok, _, err := src.Token(ctx); err != nil || tok == "" {
		t.Fatalf("%q %v", tok, err)
	}
}

func TestOAuthErrorsNeverEchoSecrets(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "wrong-secret-xyz", "RT": "rt-1"}}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, &clock{t: time.Unix(1_800_000_000, 0)})
	_, _, err := src.Token(context.Background())
	if err == nil || strings.Contains(err.Error(), "wrong-secret-xyz") || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("error %v", err)
	}
}

func TestGitHubAppJWTAndRequest(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	now := time.Unix(1_800_000_000, 0)
	var got struct {
		path, accept string
		claims       map[string]any
		body         map[string]any
		verr         error
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.path, got.accept = r.URL.Path, r.Header.Get("Accept")
		jwt := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		got.claims, got.verr = VerifyRS256(jwt, &key.PublicKey)
		json.NewDecoder(r.Body).Decode(&got.body)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"token":"ghs_abc","expires_at":%q,"permissions":{"contents":"read"}}`, now.Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer srv.Close()
	spec := Spec{Kind: KindGitHubApp, AppID: "123", PrivateKey: "APP_KEY", InstallationID: "456", APIURL: srv.URL + "/api/v3",
		Repositories: []string{"hello-world"}, Permissions: map[string]string{"contents": "read"}}
	// Every accepted form of the key parses to it.
	der := x509.MarshalPKCS1PrivateKey(key)
	for _, form := range []string{pemKey, strings.ReplaceAll(pemKey, "\n", `\n`), base64.StdEncoding.EncodeToString([]byte(pemKey)), base64.StdEncoding.EncodeToString(der)} {
		k, err := ParsePrivateKey(form)
		if err != nil || !k.Equal(key) {
			t.Fatalf("form %.30q: %v", form, err)
		}
	}
	if _, err := ParsePrivateKey("not a key at all"); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Fatalf("error quotes the input: %v", err)
	}
	c := &creds{m: map[string]string{"APP_KEY": base64.StdEncoding.EncodeToString([]byte(pemKey))}}
	src := newSource(t, spec, srv.Client(), c, &clock{t: now})
	tok, exp, err := src.Token(context.Background())
	if err != nil || tok != "ghs_abc" || !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("%q %v %v", tok, exp, err)
	}
	if got.path != "/api/v3/app/installations/456/access_tokens" || got.accept != "application/vnd.github+json" {
		t.Fatalf("request %+v", got)
	}
	if got.verr != nil {
		t.Fatalf("JWT does not verify: %v", got.verr)
	}
	iat, exp2 := int64(got.claims["iat"].(float64)), int64(got.claims["exp"].(float64))
	if got.claims["iss"] != "123" || iat != now.Unix()-60 || exp2-iat > 600 || exp2 <= now.Unix() {
		t.Fatalf("claims %v", got.claims)
	}
	if fmt.Sprint(got.body["repositories"]) != "[hello-world]" || fmt.Sprint(got.body["permissions"]) != "map[contents:read]" {
		t.Fatalf("body %v", got.body)
	}
}

// VerifyRS256 checks a compact JWT's RS256 signature and returns its
// claims (a reference verifier, independent of AppJWT's code path).
func VerifyRS256(jwt string, pub *rsa.PublicKey) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, errors.New("not three parts")
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]string
	if json.Unmarshal(hdr, &h) != nil || h["alg"] != "RS256" {
		return nil, fmt.Errorf("header %s", hdr)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return nil, err
	}
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	return claims, json.Unmarshal(body, &claims)
}

func TestParseSpec(t *testing.T) {
	good := []string{
		`{"kind":"oauth2_refresh","token_url":"https://oauth2.googleapis.com/token","client_id":"x.apps.googleusercontent.com","client_secret":"G_SECRET","refresh_token":"G_RT","scopes":["https://www.googleapis.com/auth/gmail.readonly"],"client_auth":"client_secret_post"}`,
		`{"kind":"oauth2_client_credentials","token_url":"https://login.example/oauth/token","client_id":"c","client_secret":"CS","scopes":["a"],"audience":"https://api"}`,
		`{"kind":"github_app","app_id":"123","private_key":"APP_KEY","installation_id":"456","api_url":"https://api.github.com"}`,
	}
	for _, g := range good {
		if _, err := ParseSpec([]byte(g)); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	bad := map[string]string{
		`{"kind":"saml"}`: "unknown kind",
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","token_url":"https://x"}`:                       "does not apply",
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","extra":1}`:                                     "unknown field",
		`{"kind":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"1//0gAbc-value"}`:                     "name a credential",
		`{"kind":"oauth2_refresh","token_url":"http://x/t","client_id":"c","refresh_token":"RT"}`:                                  "https",
		`{"kind":"oauth2_refresh","token_url":"https://u:p@x/t","client_id":"c","refresh_token":"RT"}`:                             "credentials",
		`{"kind":"oauth2_client_credentials","token_url":"https://x/t","client_id":"c"}`:                                           "client_secret",
		`{"kind":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"RT","client_auth":"private_key_jwt"}`: "client_auth",
		`{"kind":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"RT"} {}`:                              "trailing",
		`{"kind":"github_app","app_id":"abc","private_key":"K","installation_id":"2"}`:                                             "app_id",
		// Field names match exactly; another kind's field is refused even when null or "".
		`{"kind":"oauth2_client_credentials","TOKEN_URL":"https://x/t","client_id":"c","client_secret":"CS"}`:                                                                 "unknown field",
		`{"KIND":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"RT"}`:                                                                            "unknown field",
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","token_url":null}`:                                                                         "does not apply",
		`{"kind":"github_app","app_id":"1","private_key":"K","installation_id":"2","refresh_token":""}`:                                                                       "does not apply",
		`{"kind":"oauth2_client_credentials","token_url":"https://x/t","client_id":"c","client_secret":"CS","refresh_token":null}`:                                            "does not apply",
		`{"kind":"oauth2_refresh","token_url":"https://x/t","client_id":"c","refresh_token":"ya29_a0AfBbyC2xq9vNdK3kLmP0qRsTuVwXyZ1234567890abcdefghijklmnopqrstuvwxyz0123"}`: "name a credential",
	}
	for doc, want := range bad {
		_, err := ParseSpec([]byte(doc))
		if err == nil || !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want %q, got %v", doc, want, err)
		}
		if err != nil && strings.Contains(err.Error(), "ya29") {
			t.Errorf("the error echoes a pasted secret: %v", err)
		}
	}
}

// An upstream that answers 401 to every request does not turn each
// request into a token fetch.
func TestPersistent401DoesNotAmplify(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	for i := 0; i < 50; i++ { // 50 agent requests, 0.1 s apart, each answered 401
		tok, _, err := src.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		src.MarkStale(tok)
		clk.Add(100 * time.Millisecond)
	}
	if n := o.calls.Load(); n > 2 {
		t.Fatalf("%d token endpoint calls for 50 rejected requests", n)
	}
	// Later ones back off: 30 s, then 60 s.
	tok, _, _ := src.Token(context.Background())
	clk.Add(MinStaleAge)
	if !src.MarkStale(tok) {
		t.Fatal("a 30 s old replacement must be marked")
	}
	tok, _, _ = src.Token(context.Background())
	clk.Add(MinStaleAge)
	if src.MarkStale(tok) {
		t.Fatal("the next one waits 60 s")
	}
	clk.Add(MinStaleAge)
	if !src.MarkStale(tok) {
		t.Fatal("a 60 s old one is marked")
	}
}

// The current token and the last RecentTokens before it are scrubbed.
func TestRecentTokensRing(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	for range 6 {
		if _, _, err := src.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Hour) // past expiry: the next call fetches
	}
	want := []string{"at-6", "at-5", "at-4", "at-3", "at-2"}
	if got := src.Current(); !slices.Equal(got, want) {
		t.Fatalf("current %v, want %v", got, want)
	}
}

// A token an upstream accepts ends the rejection streak: a later 401
// refreshes at once instead of waiting out the back-off.
func TestAcceptedTokenEndsTheStreak(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	src := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	tok, _, _ := src.Token(context.Background())
	if !src.MarkStale(tok) {
		t.Fatal("first 401 must mark")
	}
	tok, _, _ = src.Token(context.Background())
	if src.MarkStale(tok) {
		t.Fatal("a fresh replacement of a rejected token waits MinStaleAge")
	}
	src.MarkAccepted("an-old-token") // not the current one: no effect
	if src.MarkStale(tok) {
		t.Fatal("accepting another token ended the streak")
	}
	src.MarkAccepted(tok)
	if !src.MarkStale(tok) {
		t.Fatal("after an accepted request a 401 must refresh at once")
	}
}

// A redefinition's new Source keeps scrubbing the old one's tokens.
func TestInheritKeepsScrubbing(t *testing.T) {
	o := newOAuthServer(t)
	c := &creds{m: map[string]string{"CS": "s3cr&t=", "RT": "rt-1"}}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	old := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	for range 2 {
		if _, _, err := old.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Hour)
	}
	nw := newSource(t, refreshSpec(o.URL), o.Client(), c, clk)
	nw.Inherit(old)
	if got := nw.Current(); !slices.Equal(got, []string{"at-2", "at-1"}) {
		t.Fatalf("new Source scrubs %v", got)
	}
	if _, _, err := nw.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := nw.Current(); !slices.Equal(got, []string{"at-3", "at-2", "at-1"}) {
		t.Fatalf("after its own fetch: %v", got)
	}
}
