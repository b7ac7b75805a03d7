package launcher

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzCAFilePID: a name the cleanup acts on always names a real pid (>= 1,
// never a process group), and the names the launcher writes parse back.
func FuzzCAFilePID(f *testing.F) {
	f.Add("agent-vault-ca-42-bundle-123.pem", uint32(42))
	f.Add("agent-vault-ca-0-node-1.pem", uint32(0))
	f.Add("agent-vault-ca--1-node-1.pem", uint32(1))
	f.Fuzz(func(t *testing.T, name string, random uint32) {
		if pid, ok := caFilePID(name); ok {
			if pid < 1 {
				t.Fatalf("caFilePID(%q) = %d", name, pid)
			}
			if want := fmt.Sprintf("%s%d-", caFilePrefix, pid); !strings.HasPrefix(name, want) {
				t.Fatalf("caFilePID(%q) = %d, not the name's pid", name, pid)
			}
		}
		pattern := caFilePattern("node")
		written := strings.Replace(pattern, "*", fmt.Sprint(random), 1)
		if _, ok := caFilePID(written); !ok {
			t.Fatalf("our own file %q does not parse", written)
		}
	})
}

// FuzzSplitServices: a list that parses has no empty name and no comma
// in a name; anything else is an error, never a panic.
func FuzzSplitServices(f *testing.F) {
	for _, seed := range []string{"", " ", "a", "a,b", "a,,b", " , ", "github, openai", "a,"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, list string) {
		names, err := splitServices(list)
		if err != nil {
			if names != nil {
				t.Fatalf("splitServices(%q) = %q with error %v", list, names, err)
			}
			return
		}
		if len(names) == 0 {
			t.Fatalf("splitServices(%q) = no names, no error", list)
		}
		for _, n := range names {
			if n == "" || strings.Contains(n, ",") || strings.TrimSpace(n) != n {
				t.Fatalf("splitServices(%q) has name %q", list, n)
			}
		}
	})
}

// FuzzParseSessionFile: whatever a session token file holds, the parse
// never panics, an accepted session carries a session token, and an
// error never quotes the content.
func FuzzParseSessionFile(f *testing.F) {
	for _, seed := range []string{"avs_abc", " avs_abc\n", `{"id":"s","token":"avs_x"}`, `{"id":`, "SECRETX", `{"token":"SECRETX"}`, "avs_a SECRETX"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, content string) {
		sess, err := parseSessionFile([]byte(content), "file F")
		if err != nil {
			if strings.Contains(content, "SECRETX") && strings.Contains(err.Error(), "SECRETX") {
				t.Fatalf("parseSessionFile(%q) error quotes the content: %v", content, err)
			}
			return
		}
		if !strings.HasPrefix(sess.Token, sessionTokenPrefix) {
			t.Fatalf("parseSessionFile(%q) accepted token %q", content, sess.Token)
		}
	})
}
