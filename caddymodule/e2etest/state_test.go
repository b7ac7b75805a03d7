package e2etest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// curlThroughProxy runs curl against url through the proxy with the
// session's token, trusting the session's CA, and returns its output.
func curlThroughProxy(t *testing.T, s *server, sess session, url string) (string, error) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "session-ca.pem")
	if err := os.WriteFile(caFile, []byte(sess.CAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("curl", "-sS", "--fail-with-body", "--max-time", "20",
		"--proxy", "http://"+s.proxyAddr, "--proxy-user", "av:"+sess.Token,
		"--cacert", caFile, url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// grepDataDir fails the test if grep finds any of secrets in any file
// under dir: the SQLite database, its WAL and every other file.
func grepDataDir(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		out, err := exec.Command("grep", "-r", "-a", "-l", "-F", "--", secret, dir).CombinedOutput()
		if err == nil {
			t.Errorf("a secret is in plaintext in %s", strings.TrimSpace(string(out)))
			continue
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("grep: %v %s", err, out)
		}
	}
}

// TestStateSurvivesRestart: on the default SQLite state database, a
// session minted before a restart of the server process works after it,
// a revoked one stays revoked, services and credentials are unchanged,
// and no secret is in plaintext anywhere in the data dir.
func TestStateSurvivesRestart(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	kept := s.newSession(t, nil, "1h")
	revoked := s.newSession(t, nil, "1h")
	s.mustAPI("DELETE", "/api/v1/sessions/"+revoked.ID, nil, http.StatusNoContent, nil)
	if out, err := curlThroughProxy(t, s, kept, "https://"+up.hostPort()+"/user"); err != nil {
		t.Fatalf("curl before the restart: %v\n%s\n%s", err, out, s.logs.String())
	}
	var credsBefore, svcsBefore json_raw
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &credsBefore)
	s.mustAPI("GET", "/api/v1/services", nil, 200, &svcsBefore)
	if _, err := os.Stat(filepath.Join(s.dataDir, "state.db")); err != nil {
		t.Fatalf("no SQLite state database in the data dir: %v", err)
	}
	// While it runs, the WAL holds recent writes: it must be sealed too,
	// and the grep below must actually have read it.
	for _, f := range []string{"state.db-wal", "state.db-shm"} {
		if _, err := os.Stat(filepath.Join(s.dataDir, f)); err != nil {
			t.Fatalf("the running broker's SQLite %s is missing, so the grep would not cover it: %v", f, err)
		}
	}
	grepDataDir(t, s.dataDir, githubSecret, masterPassword, kept.Token, revoked.Token)
	s.stop()

	s2 := startServer(t, ca, serverOpts{dataDir: s.dataDir})
	out, err := curlThroughProxy(t, s2, kept, "https://"+up.hostPort()+"/user")
	if err != nil {
		t.Fatalf("a session minted before the restart does not work after it: %v\n%s\n%s", err, out, s2.logs.String())
	}
	mustContain(t, "curl after the restart", out, `"login":"octocat"`)
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer "+githubSecret {
		t.Fatalf("after the restart the upstream got Authorization %q", got)
	}
	resp, _ := rawConnect(t, s2.proxyAddr, up.hostPort(), basicAuth(revoked.Token))
	if body := readBody(t, resp); resp.StatusCode != http.StatusProxyAuthRequired {
		t.Fatalf("a session revoked before the restart: %d %s, want 407", resp.StatusCode, body)
	}
	var credsAfter, svcsAfter json_raw
	s2.mustAPI("GET", "/api/v1/credentials", nil, 200, &credsAfter)
	s2.mustAPI("GET", "/api/v1/services", nil, 200, &svcsAfter)
	if !bytes.Equal(credsBefore, credsAfter) || !bytes.Equal(svcsBefore, svcsAfter) {
		t.Fatalf("state changed across the restart:\n%s\n%s\n%s\n%s", credsBefore, credsAfter, svcsBefore, svcsAfter)
	}
	// The session list shows the requests made before the restart.
	var list struct {
		Sessions []struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			Requests uint64 `json:"requests"`
		} `json:"sessions"`
	}
	s2.mustAPI("GET", "/api/v1/sessions", nil, 200, &list)
	statuses := map[string]string{}
	for _, se := range list.Sessions {
		statuses[se.ID] = se.Status
	}
	if statuses[kept.ID] != "active" || statuses[revoked.ID] != "revoked" {
		t.Fatalf("sessions after the restart: %+v", list.Sessions)
	}
	grepDataDir(t, s.dataDir, githubSecret, masterPassword, kept.Token, revoked.Token)
	s2.stop()
	grepDataDir(t, s.dataDir, githubSecret, masterPassword, kept.Token, revoked.Token)
}

// writeOldCredentialsFile writes credentials.json as the release before
// the state database did, from that format's description (argon2id key,
// AES-256-GCM, additional data binding name, version and update time),
// independently of the code that reads it.
func writeOldCredentialsFile(t *testing.T, path, password string, values map[string]string) {
	t.Helper()
	type sealed struct {
		Nonce      []byte `json:"nonce"`
		Ciphertext []byte `json:"ciphertext"`
	}
	type record struct {
		Version   uint64    `json:"version"`
		UpdatedAt time.Time `json:"updated_at"`
		sealed
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	params := map[string]any{"time": 1, "memory_kib": 64, "threads": 1}
	key := argon2.IDKey([]byte(password), salt, 1, 64, 1, 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, _ := cipher.NewGCM(block)
	seal := func(plain, ad string) sealed {
		nonce := make([]byte, 12)
		rand.Read(nonce)
		return sealed{nonce, aead.Seal(nil, nonce, []byte(plain), []byte(ad))}
	}
	const prefix = "agent-vault/builtin/v1/"
	creds := map[string]record{}
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	for name, v := range values {
		creds[name] = record{1, at, seal(v, prefix+"credential/"+name+"/1/"+at.Format(time.RFC3339Nano))}
	}
	doc := map[string]any{
		"format_version": 1,
		"kdf":            map[string]any{"algorithm": "argon2id", "params": params, "salt": salt},
		"check":          seal("agent-vault builtin credential store", prefix+"check"),
		"credentials":    creds,
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStateImportsAnOldDataDir: the first start on an empty state
// database imports an older release's services.json and
// credentials.json, renames them *.imported-<unix time>, and serves what
// they held; the next start does not import again.
func TestStateImportsAnOldDataDir(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	services := []map[string]any{{"name": "github", "host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}}}
	data, _ := json.Marshal(services)
	if err := os.WriteFile(filepath.Join(dataDir, "services.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	writeOldCredentialsFile(t, filepath.Join(dataDir, "credentials.json"), masterPassword, map[string]string{"GITHUB_TOKEN": githubSecret})

	s := startServer(t, ca, serverOpts{dataDir: dataDir})
	for _, name := range []string{"services.json", "credentials.json"} {
		if _, err := os.Stat(filepath.Join(dataDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s is still in place after the import (%v)", name, err)
		}
		renamed, _ := filepath.Glob(filepath.Join(dataDir, name+".imported-*"))
		if len(renamed) != 1 {
			t.Errorf("%s was not renamed *.imported-<unix time>: %v", name, renamed)
		}
	}
	var creds struct {
		Credentials []map[string]any `json:"credentials"`
	}
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &creds)
	if len(creds.Credentials) != 1 || creds.Credentials[0]["name"] != "GITHUB_TOKEN" || creds.Credentials[0]["version"] != "1" {
		t.Fatalf("imported credentials: %+v", creds)
	}
	var svcs struct {
		Services []map[string]any `json:"services"`
	}
	s.mustAPI("GET", "/api/v1/services", nil, 200, &svcs)
	if len(svcs.Services) != 1 || svcs.Services[0]["name"] != "github" {
		t.Fatalf("imported services: %+v", svcs)
	}
	sess := s.newSession(t, nil, "10m")
	if out, err := curlThroughProxy(t, s, sess, "https://"+up.hostPort()+"/user"); err != nil {
		t.Fatalf("curl with imported state: %v\n%s\n%s", err, out, s.logs.String())
	}
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer "+githubSecret {
		t.Fatalf("the upstream got Authorization %q", got)
	}
	// Written again after the import, the credential is version 2: the
	// imported record's version carried over.
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.stop()
	s2 := startServer(t, ca, serverOpts{dataDir: dataDir})
	s2.mustAPI("GET", "/api/v1/credentials", nil, 200, &creds)
	if len(creds.Credentials) != 1 || creds.Credentials[0]["version"] != "2" {
		t.Fatalf("credentials after the restart: %+v", creds)
	}
	grepDataDir(t, dataDir, githubSecret, masterPassword)
}
