package activity

import (
	"net/http"
	"testing"
)

func TestAuthSchemeOf(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want string
	}{
		{http.Header{}, ""},
		{http.Header{"Authorization": {"Bearer sk_live_123"}}, "Bearer"},
		{http.Header{"Authorization": {"  Token ghp_abc"}}, "token"},
		{http.Header{"Authorization": {"Bearer"}}, "other"},
		{http.Header{"Authorization": {"abcdef123456 x"}}, "other"}, // an unknown first word is never kept
		{http.Header{"Authorization": {"abcdef123456"}}, "other"},
		{http.Header{"Authorization": {"sk_live_1234567890abcdef"}}, "other"}, // a bare value is not a scheme
		{http.Header{"Authorization": {"ghp_abc"}}, "other"},
		{http.Header{"X-Api-Key": {"k"}}, "header X-Api-Key"},
		{http.Header{"Private-Token": {"glpat"}}, "header Private-Token"},
		{http.Header{"X-Other": {"v"}}, ""},
	} {
		if got := AuthSchemeOf(tc.h); got != tc.want {
			t.Errorf("AuthSchemeOf(%v) = %q, want %q", tc.h, got, tc.want)
		}
	}
}
