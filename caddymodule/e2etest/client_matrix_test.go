package e2etest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// The client matrix: every common client, under the plain launcher
// (av-launch, no confinement), against one real HTTPS upstream on
// loopback reached by a name (benchName, mapped to 127.0.0.1 in a
// private mount namespace: clients go direct for loopback literals).
// Each row asserts that the upstream received the injected credential
// and that the client's output never held it. The test logs a markdown
// table and writes it to $AGENT_VAULT_CLIENT_MATRIX if set; the README's
// "Client matrix" is that table.

// clientMatrixEnv names the file the table is written to.
const clientMatrixEnv = "AGENT_VAULT_CLIENT_MATRIX"

// matrixSecret is the credential the broker injects.
const matrixSecret = "ghp_matrixSecretValue0123456789abcdefXYZ"

// Names the registry-shaped upstream serves.
const (
	matrixNPMPackage = "matrix-pkg"
	matrixPyPackage  = "matrix-pkg"
	matrixWheel      = "matrix_pkg-1.0.0-py3-none-any.whl"
)

// matrixRequest is what the upstream saw of one request.
type matrixRequest struct {
	Method, Path, Auth string
}

// matrixUpstream is an HTTPS server for benchName that is at once an
// API (/user), an npm registry (/npm/), a PEP 503 simple index
// (/simple/, /packages/) and a smart-HTTP git server (/git/).
type matrixUpstream struct {
	srv     *httptest.Server
	host    string // benchName:port
	bareGit string // the repository /git/repo.git serves

	mu   sync.Mutex
	reqs []matrixRequest
}

func newMatrixUpstream(t *testing.T, ca *testCA) *matrixUpstream {
	t.Helper()
	u := &matrixUpstream{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.host = fmt.Sprintf("%s:%d", benchName, ln.Addr().(*net.TCPAddr).Port)
	base := "https://" + u.host

	tarball := npmTarball(t)
	sum512 := sha512.Sum512(tarball)
	sum1 := sha1.Sum(tarball)
	packument, _ := json.Marshal(map[string]any{
		"name":      matrixNPMPackage,
		"dist-tags": map[string]string{"latest": "1.0.0"},
		"versions": map[string]any{"1.0.0": map[string]any{
			"name": matrixNPMPackage, "version": "1.0.0",
			"dist": map[string]string{
				"tarball":   base + "/npm/" + matrixNPMPackage + "/-/" + matrixNPMPackage + "-1.0.0.tgz",
				"integrity": "sha512-" + base64.StdEncoding.EncodeToString(sum512[:]),
				"shasum":    hex.EncodeToString(sum1[:]),
			},
		}},
	})
	wheel := pyWheel(t)
	sum256 := sha256.Sum256(wheel)
	u.bareGit = bareRepo(t)

	mux := http.NewServeMux()
	mux.HandleFunc("/user", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"login":"octocat"}`+"\n")
	})
	mux.HandleFunc("/npm/"+matrixNPMPackage, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(packument)
	})
	mux.HandleFunc("/npm/"+matrixNPMPackage+"/-/"+matrixNPMPackage+"-1.0.0.tgz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(tarball)
	})
	mux.HandleFunc("/simple/"+matrixPyPackage+"/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "<!DOCTYPE html><html><body><a href=\"%s/packages/%s#sha256=%x\">%s</a></body></html>\n", base, matrixWheel, sum256, matrixWheel)
	})
	mux.HandleFunc("/packages/"+matrixWheel, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(wheel)
	})
	mux.Handle("/git/", &cgi.Handler{
		Path: "/usr/lib/git-core/git-http-backend",
		Root: "/git",
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Dir(u.bareGit), "GIT_HTTP_EXPORT_ALL=1"},
	})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, matrixRequest{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization")})
		u.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, benchName)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.srv = srv
	return u
}

// since returns the requests received after the first n.
func (u *matrixUpstream) since(n int) []matrixRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]matrixRequest(nil), u.reqs[n:]...)
}

func (u *matrixUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// npmTarball is the package's tarball, as npm pack lays it out.
func npmTarball(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{
		"package/package.json": `{"name":"` + matrixNPMPackage + `","version":"1.0.0","main":"index.js"}`,
		"package/index.js":     "module.exports = 'matrix';\n",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pyWheel is a minimal pure-Python wheel of matrixPyPackage 1.0.0.
func pyWheel(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	info := "matrix_pkg-1.0.0.dist-info/"
	files := []struct{ name, body string }{
		{"matrix_pkg/__init__.py", "VALUE = 'matrix'\n"},
		{info + "METADATA", "Metadata-Version: 2.1\nName: matrix-pkg\nVersion: 1.0.0\n"},
		{info + "WHEEL", "Wheel-Version: 1.0\nGenerator: agent-vault-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
		{info + "RECORD", "matrix_pkg/__init__.py,,\n" + info + "METADATA,,\n" + info + "WHEEL,,\n" + info + "RECORD,,\n"},
	}
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bareRepo makes a bare repository with one commit that accepts pushes
// over smart HTTP; it returns its path (.../repo.git).
func bareRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	work, bare := filepath.Join(dir, "work"), filepath.Join(dir, "srv", "repo.git")
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main", work)
	git("-C", work, "-c", "user.name=e2e", "-c", "user.email=e2e@e2e.invalid", "commit", "-q", "--allow-empty", "-m", "initial")
	git("clone", "-q", "--bare", work, bare)
	git("-C", bare, "config", "http.receivepack", "true")
	return bare
}

// matrixRow is one line of the table.
type matrixRow struct{ client, version, result string }

// toolVersion is the first line of `name args...`, or "?".
func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// firstFields is the first n words of s.
func firstFields(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

// needTool returns the path of name, or skips (fails, strict) if absent.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Unavailable(t, "%s not found: %v", name, err)
	}
	return p
}

func TestClientMatrix(t *testing.T) {
	if benchHost != benchName {
		if os.Getenv(hostsEnv) != "" {
			testenv.Unavailable(t, "names cannot be mapped to loopback here: %s", benchHostNote)
			return
		}
		// Run this test again in a private mount namespace, where
		// benchName resolves to 127.0.0.1.
		args := []string{"-test.run=^TestClientMatrix$", "-test.count=1"}
		if testing.Verbose() {
			args = append(args, "-test.v")
		}
		code, err := runInHostsNamespace(args, nil)
		if err != nil {
			testenv.Unavailable(t, "cannot run in a private mount namespace: %v", err)
			return
		}
		if code != 0 {
			t.Fatalf("TestClientMatrix in its mount namespace: exit %d (its output is above)", code)
		}
		return
	}

	ca := newTestCA(t)
	up := newMatrixUpstream(t, ca)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("MATRIX_TOKEN", matrixSecret)
	s.putService("matrix", map[string]any{"host": up.host, "auth": map[string]any{"type": "bearer", "token": "MATRIX_TOKEN"}})
	base := "https://" + up.host

	var rows []matrixRow
	// skipNote, set by skipRow, is why the current row was skipped.
	skipNote := ""
	skipRow := func(t *testing.T, format string, args ...any) {
		t.Helper()
		skipNote = fmt.Sprintf(format, args...)
		t.Skip(skipNote)
	}
	// row runs one client as a subtest and records its line.
	row := func(client, version string, f func(t *testing.T) string) {
		result := ""
		skipNote = ""
		ok := t.Run(client, func(t *testing.T) { result = f(t) })
		switch {
		case !ok:
			result = "FAILED"
		case result == "" && skipNote != "":
			result = "skipped: " + skipNote
		case result == "":
			result = "skipped (tool missing, see the log)"
		}
		rows = append(rows, matrixRow{client, version, result})
	}
	// brokered runs argv under av-launch (with env added) and checks that
	// every request the upstream received meanwhile carried the injected
	// credential and that the client's output never held it.
	brokered := func(t *testing.T, env []string, argv ...string) string {
		t.Helper()
		before := up.count()
		out, errOut, code := s.launchEnv(env, nil, argv...)
		if code != 0 {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s\nserver: %s", argv[0], code, out, errOut, s.logs.String())
		}
		mustNotContain(t, "client output", out+errOut, matrixSecret)
		reqs := up.since(before)
		if len(reqs) == 0 {
			t.Fatalf("%s: the upstream received nothing", argv[0])
		}
		for _, r := range reqs {
			if r.Auth != "Bearer "+matrixSecret {
				t.Fatalf("%s: %s %s reached the upstream with Authorization %q, want the injected credential", argv[0], r.Method, r.Path, r.Auth)
			}
		}
		return out
	}
	injected := func(n int) string { return fmt.Sprintf("brokered: credential injected (%d requests)", n) }

	curlV := firstFields(toolVersion("curl", "--version"), 2)
	row("curl --http1.1", curlV, func(t *testing.T) string {
		before := up.count()
		out := brokered(t, nil, "curl", "-sS", "--fail-with-body", "--http1.1", "-w", "\n%{http_version}", base+"/user")
		mustContain(t, "curl", out, "octocat")
		mustContain(t, "curl", out, "\n1.1")
		return injected(up.count() - before)
	})
	row("curl --http2", curlV, func(t *testing.T) string {
		before := up.count()
		out := brokered(t, nil, "curl", "-sS", "--fail-with-body", "--http2", "-w", "\n%{http_version}", base+"/user")
		mustContain(t, "curl", out, "octocat")
		mustContain(t, "curl --http2 protocol", out, "\n2")
		return injected(up.count() - before)
	})

	wgetV := firstFields(toolVersion("wget", "--version"), 3)
	row("wget", wgetV, func(t *testing.T) string {
		needTool(t, "wget")
		before := up.count()
		out := brokered(t, nil, "wget", "-q", "-O", "-", base+"/user")
		mustContain(t, "wget", out, "octocat")
		return injected(up.count() - before)
	})
	row("wget, ~/.wgetrc with another ca_certificate and proxy", wgetV, func(t *testing.T) string {
		needTool(t, "wget")
		home := t.TempDir()
		rc := "tries = 1\nca_certificate = /nonexistent-or-other-ca.pem\nhttps_proxy = http://127.0.0.1:9/\nuse_proxy = off\n"
		if err := os.WriteFile(filepath.Join(home, ".wgetrc"), []byte(rc), 0o600); err != nil {
			t.Fatal(err)
		}
		before := up.count()
		out := brokered(t, []string{"HOME=" + home}, "wget", "-q", "-O", "-", base+"/user")
		mustContain(t, "wget", out, "octocat")
		return injected(up.count()-before) + "; the user's wgetrc kept, its proxy and CA lines overridden"
	})

	python := ""
	if p, err := exec.LookPath("python3"); err == nil {
		// pyenv shims need the real HOME: use the interpreter itself.
		if out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output(); err == nil {
			python = strings.TrimSpace(string(out))
		}
	}
	pyV := "?"
	if python != "" {
		pyV = toolVersion(python, "--version")
	}
	needPython := func(t *testing.T) {
		if python == "" {
			testenv.Unavailable(t, "python3 not found")
		}
	}
	row("python urllib", pyV, func(t *testing.T) string {
		needPython(t)
		before := up.count()
		out := brokered(t, nil, python, "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", base+"/user")
		mustContain(t, "urllib", out, "octocat")
		return injected(up.count() - before)
	})
	reqV := "?"
	if python != "" {
		reqV = "requests " + toolVersion(python, "-c", "import requests; print(requests.__version__)")
	}
	row("python requests", reqV, func(t *testing.T) string {
		needPython(t)
		if exec.Command(python, "-c", "import requests").Run() != nil {
			testenv.Unavailable(t, "python requests is not installed")
		}
		before := up.count()
		out := brokered(t, nil, python, "-c", "import sys, requests; r = requests.get(sys.argv[1]); r.raise_for_status(); print(r.text)", base+"/user")
		mustContain(t, "requests", out, "octocat")
		return injected(up.count() - before)
	})

	goV := toolVersion("go", "env", "GOVERSION")
	row("Go net/http", goV, func(t *testing.T) string {
		needTool(t, "go")
		dir := t.TempDir()
		src := `package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	fmt.Println("\nproto:", resp.Proto)
	if resp.StatusCode != 200 {
		os.Exit(1)
	}
}
`
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module matrixclient\n\ngo 1.22\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(dir, "goclient")
		build := exec.Command("go", "build", "-o", exe, ".")
		build.Dir = dir
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the Go client: %v\n%s", err, out)
		}
		before := up.count()
		out := brokered(t, nil, exe, base+"/user")
		mustContain(t, "Go client", out, "octocat")
		return injected(up.count() - before)
	})

	gitV := toolVersion("git", "--version")
	gitEnv := []string{"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1"}
	row("git clone (smart HTTP)", gitV, func(t *testing.T) string {
		needTool(t, "git")
		dst := filepath.Join(t.TempDir(), "clone")
		before := up.count()
		brokered(t, gitEnv, "git", "clone", "-q", base+"/git/repo.git", dst)
		if log := toolVersion("git", "-C", dst, "log", "--format=%s", "-1"); log != "initial" {
			t.Fatalf("clone's last commit: %q", log)
		}
		return injected(up.count() - before)
	})
	row("git push (smart HTTP)", gitV, func(t *testing.T) string {
		needTool(t, "git")
		dst := filepath.Join(t.TempDir(), "push")
		before := up.count()
		brokered(t, gitEnv, "sh", "-ec", `git clone -q "$1" "$2"; cd "$2"
git -c user.name=e2e -c user.email=e2e@e2e.invalid commit -q --allow-empty -m pushed-through-the-broker
git push -q origin HEAD:main`, "sh", base+"/git/repo.git", dst)
		if log := toolVersion("git", "--git-dir", up.bareGit, "log", "--format=%s", "-1", "main"); log != "pushed-through-the-broker" {
			t.Fatalf("the upstream's last commit: %q, want the pushed one", log)
		}
		sawReceive := false
		for _, r := range up.since(before) {
			sawReceive = sawReceive || (r.Method == "POST" && strings.HasSuffix(r.Path, "/git-receive-pack"))
		}
		if !sawReceive {
			t.Fatal("no POST git-receive-pack reached the upstream")
		}
		return injected(up.count() - before)
	})

	npmV := "npm " + toolVersion("npm", "--version")
	npmInstall := func(t *testing.T, env []string) string {
		needTool(t, "npm")
		proj := t.TempDir()
		if err := os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"matrix-project","version":"1.0.0","private":true}`), 0o644); err != nil {
			t.Fatal(err)
		}
		before := up.count()
		out := brokered(t, env, "sh", "-ec", `cd "$1"; npm install --no-audit --no-fund --fetch-retries=0 --loglevel=error --registry="$2" `+matrixNPMPackage+` >&2
cat node_modules/`+matrixNPMPackage+`/package.json`, "sh", proj, base+"/npm/")
		mustContain(t, "installed package", out, `"name":"`+matrixNPMPackage+`"`)
		return injected(up.count() - before)
	}
	row("npm install (registry on loopback)", npmV, func(t *testing.T) string {
		// This machine's global npmrc sets cafile to the system bundle:
		// npm_config_cafile overrides it.
		return npmInstall(t, nil)
	})
	row("npm install, user npmrc cafile=/nonexistent-or-other-ca.pem", npmV, func(t *testing.T) string {
		home := t.TempDir()
		if err := os.WriteFile(filepath.Join(home, ".npmrc"), []byte("cafile=/nonexistent-or-other-ca.pem\nhttps-proxy=http://127.0.0.1:9/\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return npmInstall(t, []string{"HOME=" + home, "NPM_CONFIG_CAFILE=" + ca.pemPath}) + "; npmrc and NPM_CONFIG_CAFILE overridden"
	})

	pipV := "?"
	if python != "" {
		pipV = toolVersion(python, "-m", "pip", "--version")
		pipV, _, _ = strings.Cut(pipV, " from ")
	}
	pipDownload := func(t *testing.T, env []string) string {
		needPython(t)
		dst := t.TempDir()
		before := up.count()
		brokered(t, append([]string{"PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_CACHE_DIR=1"}, env...), python, "-m", "pip", "download", "-q", "--no-deps",
			"--index-url", base+"/simple/", "-d", dst, matrixPyPackage)
		if _, err := os.Stat(filepath.Join(dst, matrixWheel)); err != nil {
			t.Fatalf("pip download: %v", err)
		}
		return injected(up.count() - before)
	}
	row("pip download (simple index on loopback)", pipV, func(t *testing.T) string {
		return pipDownload(t, nil)
	})
	row("pip download, PIP_CERT/AWS_CA_BUNDLE preset to a wrong bundle", pipV, func(t *testing.T) string {
		home := t.TempDir()
		conf := filepath.Join(home, ".config", "pip", "pip.conf")
		if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, []byte("[global]\ncert = "+ca.pemPath+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		wrong := []string{"HOME=" + home, "PIP_CERT=" + ca.pemPath, "AWS_CA_BUNDLE=" + ca.pemPath,
			"NIX_SSL_CERT_FILE=" + ca.pemPath, "HTTPLIB2_CA_CERTS=" + ca.pemPath, "REQUESTS_CA_BUNDLE=" + ca.pemPath}
		result := pipDownload(t, wrong)
		// Every one of them names the launcher's bundle now.
		out, errOut, code := s.launchEnv(wrong, nil, "sh", "-c",
			`for v in PIP_CERT AWS_CA_BUNDLE NIX_SSL_CERT_FILE HTTPLIB2_CA_CERTS REQUESTS_CA_BUNDLE; do eval f=\$$v; cmp -s "$f" "$SSL_CERT_FILE" && echo "$v=bundle"; done`)
		if code != 0 {
			t.Fatalf("checking the variables: exit %d: %s", code, errOut)
		}
		for _, v := range []string{"PIP_CERT", "AWS_CA_BUNDLE", "NIX_SSL_CERT_FILE", "HTTPLIB2_CA_CERTS", "REQUESTS_CA_BUNDLE"} {
			mustContain(t, "overridden variables", out, v+"=bundle")
		}
		return result + "; PIP_CERT, AWS_CA_BUNDLE, NIX_SSL_CERT_FILE, HTTPLIB2_CA_CERTS and pip.conf cert overridden"
	})

	nodeV := toolVersion("node", "--version")
	nodeFetch := `fetch(process.argv[1]).then(r => r.text()).then(t => console.log(t), e => { console.error("fetch failed:", (e.cause && e.cause.code) || e.message); process.exit(3) })`
	// Which Node this is, by av-launch's own rule (it warns for a Node
	// that ignores the proxy variables).
	nodeModern := false
	if _, err := exec.LookPath("node"); err == nil {
		_, errOut, _ := s.launchEnv(nil, nil, "node", "-e", "0")
		nodeModern = !strings.Contains(errOut, "ignores HTTPS_PROXY")
	}
	row("node fetch (Node >= 22.21)", nodeV, func(t *testing.T) string {
		if !nodeModern {
			skipRow(t, "no Node >= 22.21 on this machine (node is %s); not a failure", nodeV)
		}
		before := up.count()
		out := brokered(t, nil, "node", "-e", nodeFetch, base+"/user")
		mustContain(t, "node fetch", out, "octocat")
		return injected(up.count() - before)
	})
	row("node fetch (Node < 22.21, e.g. 20)", nodeV, func(t *testing.T) string {
		if _, err := exec.LookPath("node"); err != nil || nodeModern {
			skipRow(t, "no Node < 22.21 on this machine (node: %s)", nodeV)
		}
		before := up.count()
		out, errOut, code := s.launchEnv(nil, nil, "node", "-e", nodeFetch, base+"/user")
		mustNotContain(t, "node output", out+errOut, matrixSecret)
		mustContain(t, "launcher warning", errOut, "ignores HTTPS_PROXY for fetch/https")
		if strings.Count(errOut, "ignores HTTPS_PROXY") != 1 {
			t.Errorf("the warning is not given once:\n%s", errOut)
		}
		for _, r := range up.since(before) {
			if r.Auth != "" {
				t.Fatalf("node's request carried Authorization %q: it went through the broker after all", r.Auth)
			}
		}
		if code == 0 {
			// Direct, so it could only succeed without the credential.
			return "not brokered (Node 20 ignores proxy): reached the upstream directly, without the credential"
		}
		why := strings.TrimSpace(errOut[strings.LastIndex(errOut, "fetch failed:")+len("fetch failed:"):])
		return "not brokered (Node 20 ignores proxy): connects directly, fails (" + why + "); av-launch warns"
	})

	var table strings.Builder
	table.WriteString("| client | version | result |\n|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&table, "| %s | %s | %s |\n", r.client, strings.ReplaceAll(r.version, "|", "/"), r.result)
	}
	t.Logf("client matrix (plain av-launch, upstream %s):\n%s", up.host, table.String())
	if path := os.Getenv(clientMatrixEnv); path != "" {
		if err := os.WriteFile(path, []byte(table.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
}
