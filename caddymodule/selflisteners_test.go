package caddymodule

import (
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
)

func TestOwnListeners(t *testing.T) {
	servers := map[string]*caddyhttp.Server{
		"api":   {Listen: []string{"127.0.0.1:14321"}},
		"proxy": {Listen: []string{":14322", "tcp/[::1]:14322"}},
		"other": {Listen: []string{"unix//tmp/x.sock", "127.0.0.1:9000-9002", "udp/:443", "fd/3", ":0"}},
		"nil":   nil,
	}
	got, err := ownListeners(servers, "localhost:2019")
	if err != nil {
		t.Fatal(err)
	}
	want := []egress.Listener{
		{Host: "127.0.0.1", FirstPort: 14321, LastPort: 14321},
		{Host: "", FirstPort: 14322, LastPort: 14322},
		{Host: "::1", FirstPort: 14322, LastPort: 14322},
		{Host: "127.0.0.1", FirstPort: 9000, LastPort: 9002},
		{Host: "", FirstPort: 443, LastPort: 443},
		{Host: "3"}, // fd: port unknown
		{Host: ""},  // port 0: unknown
		{Host: "localhost", FirstPort: 2019, LastPort: 2019},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing %+v in %+v", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d listeners %+v, want %d", len(got), got, len(want))
	}

	got, err = ownListeners(nil, "unix//run/caddy-admin.sock")
	if err != nil || len(got) != 0 {
		t.Errorf("unix admin socket: %+v, %v; want none", got, err)
	}

	if _, err := ownListeners(map[string]*caddyhttp.Server{"bad": {Listen: []string{"127.0.0.1:99999"}}}, ""); err == nil {
		t.Error("an invalid listen address was accepted")
	}
}
