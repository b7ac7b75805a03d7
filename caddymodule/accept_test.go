package caddymodule

import "testing"

func TestPrefersJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                          false,
		"*/*":                                       false,
		"application/json":                          true,
		"Application/JSON":                          true,
		"application/json, */*":                     true,
		"text/html,application/json;q=0.9":          true,
		"application/json;q=0":                      false,
		"application/json;q=0.5, text/plain":        false,
		"text/plain;q=0.5, application/json":        true,
		"application/json;q=x":                      false,
		"application/json; charset=utf-8":           true,
		"text/*, application/json":                  true,
		"application/json;q=2":                      false,
		"application/problem+json":                  false,
		"application/json ; q = 0.8 , text/*;q=0.1": true,
	} {
		if got := prefersJSON(accept); got != want {
			t.Errorf("prefersJSON(%q) = %v, want %v", accept, got, want)
		}
	}
}

func FuzzPrefersJSON(f *testing.F) {
	f.Add("application/json;q=0.9, text/plain;q=0.8")
	f.Add(";;,,q=;=")
	f.Fuzz(func(t *testing.T, accept string) {
		prefersJSON(accept) // must not panic
	})
}
