package webui

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The UI is a client of the API: of this module's packages it imports
// only the API's wire types and identity's cookie and CSRF helpers,
// never a server package (services, sessions, state, ...), so what it
// shows is what the API answers.
func TestImportsOnlyTheAPIsClientSide(t *testing.T) {
	const module = "github.com/agentvault/caddy-agent-vault/"
	allowed := map[string]bool{
		module + "caddymodule/apiwire":  true,
		module + "caddymodule/identity": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files: %v", err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module) && !allowed[p] {
				t.Errorf("%s imports %s: take what the UI needs from apiwire instead", name, p)
			}
		}
	}
}
