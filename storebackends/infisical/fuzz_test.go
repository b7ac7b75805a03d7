package infisical

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// FuzzToBatch feeds arbitrary list answers to the mapping. It must not
// panic, and every item it serves must have a valid name and come from
// a readable (not hidden), shared (not personal) definition of that key:
// a direct one if the key is defined directly, and at most once if it
// is only imported.
func FuzzToBatch(f *testing.F) {
	fixture, err := os.ReadFile("testdata/list_recursive_imports.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fixture)
	f.Add([]byte(`{"secrets":[],"imports":[{"secrets":[{"secretKey":"A","secretValue":"1"},{"secretKey":"A","secretValue":"2"},{"secretKey":"A","secretValue":"1"}]}]}`))
	f.Add([]byte(`{"secrets":[{"secretKey":"A","secretValue":"x","type":"personal","version":1e308}],"imports":[{"secrets":[{"secretKey":"A","secretValue":"y","secretValueHidden":true}]}]}`))
	fetcher, err := New(validConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var resp listResponse
		if json.Unmarshal(body, &resp) != nil || resp.Secrets == nil {
			return
		}
		b := fetcher.toBatch(resp)

		servable := func(defs []rawSecret, it storebackends.Item) bool {
			for _, s := range defs {
				if s.Key == it.Name && s.Value == it.Value && s.Type != "personal" && !s.Hidden {
					return true
				}
			}
			return false
		}
		direct := map[string]bool{}
		for _, s := range *resp.Secrets {
			if s.Type != "personal" {
				direct[s.Key] = true
			}
		}
		var imported []rawSecret
		for _, imp := range resp.Imports {
			if imp.Secrets != nil {
				imported = append(imported, *imp.Secrets...)
			}
		}
		served := map[string]int{}
		for _, it := range b.Items {
			if storebackends.ValidateName(it.Name) != nil {
				t.Fatalf("invalid name served: %q", it.Name)
			}
			served[it.Name]++
			switch {
			case direct[it.Name] && !servable(*resp.Secrets, it):
				t.Fatalf("%q is defined directly but served from elsewhere", it.Name)
			case !direct[it.Name] && !servable(imported, it):
				t.Fatalf("%q served without a readable shared definition", it.Name)
			case !direct[it.Name] && served[it.Name] > 1:
				t.Fatalf("imported %q served twice", it.Name)
			}
		}
	})
}
