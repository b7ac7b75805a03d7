package services

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestServiceValidate(t *testing.T) {
	ok := func(a Auth) Service { return Service{Name: "svc", Host: "api.example.com", Auth: a} }
	valid := []Service{
		ok(Auth{Type: "bearer", Token: "GITHUB_TOKEN"}),
		ok(Auth{Type: "basic", Username: "x-access-token", Password: "GH_TOKEN"}),
		ok(Auth{Type: "basic", Username: "{{ STRIPE_KEY }}"}),
		ok(Auth{Type: "basic", Username: "{{USER}}-bot", Password: "PASS"}),
		ok(Auth{Type: "basic", Password: "ONLY_PASS"}),
		ok(Auth{Type: "api-key", Key: "OPENAI_KEY"}),
		ok(Auth{Type: "api-key", Key: "K", Header: "Authorization", Prefix: "Token "}),
		ok(Auth{Type: "custom", Headers: map[string]string{"X-Api-Key": "{{ K }}", "X-Version": "2", "X-Pair": "{{A}}:{{ B }}"}}),
		ok(Auth{Type: "query", Key: "K", Param: "api_key"}),
		ok(Auth{Type: "passthrough"}),
		{Name: "a", Host: "*.example.com/v1/*", Auth: Auth{Type: "passthrough"}},
		{Name: "0abc_d.e-f", Host: "[::1]:8443", Auth: Auth{Type: "passthrough"}, AllowCleartext: true},
		{Name: strings.Repeat("a", 64), Host: "x.io", Auth: Auth{Type: "passthrough"}},
		{Name: "up", Host: "x.io", Auth: Auth{Type: "passthrough"}, AllowUpgrades: []string{"h2c", "tcp/1.0", "WebSocket"}},
	}
	for _, s := range valid {
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", s, err)
		}
	}

	invalid := []struct {
		svc     Service
		wantErr string
	}{
		{Service{Name: "", Host: "x.io", Auth: Auth{Type: "passthrough"}}, "service name"},
		{Service{Name: "Upper", Host: "x.io", Auth: Auth{Type: "passthrough"}}, "service name"},
		{Service{Name: "-x", Host: "x.io", Auth: Auth{Type: "passthrough"}}, "service name"},
		{Service{Name: "a b", Host: "x.io", Auth: Auth{Type: "passthrough"}}, "service name"},
		{Service{Name: strings.Repeat("a", 65), Host: "x.io", Auth: Auth{Type: "passthrough"}}, "service name"},
		{Service{Name: "s", Host: "https://x.io", Auth: Auth{Type: "passthrough"}}, "scheme"},
		{Service{Name: "s", Host: "", Auth: Auth{Type: "passthrough"}}, "empty"},
		{Service{Name: "s", Host: "x.io", Auth: Auth{Type: "passthrough"}, AllowUpgrades: []string{""}}, "allow_upgrades"},
		{Service{Name: "s", Host: "x.io", Auth: Auth{Type: "passthrough"}, AllowUpgrades: []string{"tcp echo"}}, "allow_upgrades"},
		{Service{Name: "s", Host: "x.io", Auth: Auth{Type: "passthrough"}, AllowUpgrades: []string{"tcp/"}}, "allow_upgrades"},
		{ok(Auth{Type: ""}), "unknown type"},
		{ok(Auth{Type: "Bearer", Token: "T"}), "unknown type"},
		{ok(Auth{Type: "oauth"}), "unknown type"},
		{ok(Auth{Type: "bearer"}), `requires field "token"`},
		{ok(Auth{Type: "bearer", Token: "T", Headers: map[string]string{"X": "{{T}}"}}), `does not use field "headers"`},
		{ok(Auth{Type: "bearer", Token: "T", Prefix: "x"}), `does not use field "prefix"`},
		{ok(Auth{Type: "bearer", Token: "1BAD"}), "invalid credential name"},
		{ok(Auth{Type: "bearer", Token: "{{ T }}"}), "invalid credential name"},
		{ok(Auth{Type: "basic"}), "username"},
		{ok(Auth{Type: "basic", Username: "literal"}), "no credential"},
		{ok(Auth{Type: "basic", Username: "a:b", Password: "P"}), "':'"},
		{ok(Auth{Type: "basic", Username: "u\r\nX-Evil", Password: "P"}), "control"},
		{ok(Auth{Type: "basic", Username: "{{ U", Password: "P"}), `without a matching "}}"`},
		{ok(Auth{Type: "basic", Username: "u", Password: "bad-name"}), "invalid credential name"},
		{ok(Auth{Type: "basic", Username: "u", Token: "T"}), `does not use field "token"`},
		{ok(Auth{Type: "api-key"}), `requires field "key"`},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Bad Header"}), "invalid header name"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Host"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "content-length"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Transfer-Encoding"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Connection"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Proxy-Authorization"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Header: "Proxy-Foo"}), "cannot be set"},
		{ok(Auth{Type: "api-key", Key: "K", Prefix: "x\n"}), "control"},
		{ok(Auth{Type: "api-key", Key: "K", Param: "p"}), `does not use field "param"`},
		{ok(Auth{Type: "custom"}), `requires field "headers"`},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "literal only"}}), "no {{ NAME }}"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{ K }"}}), `without a matching "}}"`},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{ K"}}), `without a matching "}}"`},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "K }}"}}), `without a matching "{{"`},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{}}"}}), "bad reference"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{ a b }}"}}), "bad reference"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{{ K }}}"}}), "bad reference"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"X-A": "{{ K }}\r\n"}}), "control"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"Upgrade": "{{ K }}"}}), "cannot be set"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"x-a": "{{ K }}", "X-A": "{{ K }}"}}), "set twice"},
		{ok(Auth{Type: "custom", Headers: map[string]string{"": "{{ K }}"}}), "empty header name"},
		{ok(Auth{Type: "query", Key: "K"}), `requires field "param"`},
		{ok(Auth{Type: "query", Param: "p"}), `requires field "key"`},
		{ok(Auth{Type: "query", Key: "K", Param: "a\nb"}), "param"},
		{ok(Auth{Type: "passthrough", Token: "T"}), `does not use field "token"`},
	}
	for _, tt := range invalid {
		err := tt.svc.Validate()
		if err == nil {
			t.Errorf("Validate(%+v) succeeded, want error containing %q", tt.svc, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate(%+v) = %q, want it to contain %q", tt.svc, err, tt.wantErr)
		}
	}
}

func TestServiceCredentials(t *testing.T) {
	tests := []struct {
		auth Auth
		want []string
	}{
		{Auth{Type: "bearer", Token: "T"}, []string{"T"}},
		{Auth{Type: "basic", Username: "{{ U }}-{{U}}", Password: "P"}, []string{"P", "U"}},
		{Auth{Type: "basic", Username: "{{ X }}", Password: "X"}, []string{"X"}},
		{Auth{Type: "basic", Username: "plain", Password: "P"}, []string{"P"}},
		{Auth{Type: "api-key", Key: "K"}, []string{"K"}},
		{Auth{Type: "custom", Headers: map[string]string{"X-B": "{{ Z }} {{ A }}", "X-A": "{{ M }}{{ A }}"}}, []string{"A", "M", "Z"}},
		{Auth{Type: "query", Key: "Q", Param: "k"}, []string{"Q"}},
		{Auth{Type: "passthrough"}, nil},
		{Auth{Type: "bogus"}, nil},
	}
	for _, tt := range tests {
		got := Service{Name: "s", Host: "x.io", Auth: tt.auth}.Credentials()
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Credentials(%+v) = %q, want %q", tt.auth, got, tt.want)
		}
	}
}

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in   string
		want template
	}{
		{"", nil},
		{"plain", template{{literal: "plain"}}},
		{"{{A}}", template{{cred: "A"}}},
		{"{{  A  }}", template{{cred: "A"}}},
		{"Bearer {{ TOKEN }}!", template{{literal: "Bearer "}, {cred: "TOKEN"}, {literal: "!"}}},
		{"{{A}}{{B}}", template{{cred: "A"}, {cred: "B"}}},
		{"a { b } c", template{{literal: "a { b } c"}}},
	}
	for _, tt := range tests {
		got, err := parseTemplate(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseTemplate(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"{{", "}}", "{{A", "A}}", "{{A}}}}", "{{ A B }}", "{{\tA}}", "{{1A}}", "{{ {{A}} }}"} {
		if _, err := parseTemplate(bad); err == nil {
			t.Errorf("parseTemplate(%q) succeeded", bad)
		}
	}
	tmpl, _ := parseTemplate("x {{ A }} y {{B}}")
	if got := tmpl.render(func(c string) string { return "<" + c + ">" }); got != "x <A> y <B>" {
		t.Errorf("render = %q", got)
	}
}

func TestUpgrades(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"h2c, WebSocket/13", " tcp "}}
	if got := Upgrades(h); !reflect.DeepEqual(got, []string{"h2c", "WebSocket/13", "tcp"}) {
		t.Fatalf("Upgrades = %q", got)
	}
	if got := Upgrades(http.Header{"Upgrade": {"h2c"}}); got != nil {
		t.Fatalf("Upgrade without Connection: upgrade = %q, want none (not an upgrade request)", got)
	}
	c := &Compiled{Service: Service{AllowUpgrades: []string{"TCP", "h2c/2"}}}
	for proto, want := range map[string]bool{"websocket": true, "WebSocket/13": true, "tcp": true, "tcp/1": true, "h2c/2": true, "h2c": false, "h2c/3": false, "irc": false} {
		if got := c.AllowsUpgrade(proto); got != want {
			t.Errorf("AllowsUpgrade(%q) = %v, want %v", proto, got, want)
		}
	}
	if (*Compiled)(nil).AllowsUpgrade("tcp") || !(*Compiled)(nil).AllowsUpgrade("websocket") {
		t.Error("no service: only WebSocket")
	}
}
