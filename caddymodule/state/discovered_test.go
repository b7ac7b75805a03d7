package state

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestDiscoveredBehaviours(t *testing.T) {
	runBehaviours(t, []behaviour{
		{"discovered hosts merge", testDiscoveredMerge},
		{"discovered hosts concurrent merges", testDiscoveredConcurrent},
		{"discovered hosts are bounded", testDiscoveredBound},
		{"discovered hosts refuse bad rows", testDiscoveredRefuses},
	})
}

func seen(host string, port int, at time.Time, n int64, scheme, agent, session string) DiscoveredHost {
	h := DiscoveredHost{Host: host, Port: port, FirstSeen: at, LastSeen: at, Count: n}
	if scheme != "" {
		h.Schemes = []string{scheme}
	}
	if agent != "" {
		h.Agents = []string{agent}
	}
	if session != "" {
		h.Sessions = []string{session}
	}
	return h
}

func testDiscoveredMerge(t *testing.T, db *DB, clk *clock) {
	t0 := clk.Now()
	must(t, db.MergeDiscovered(ctx, []DiscoveredHost{seen("api.stripe.com", 443, t0, 2, "Bearer", "ci-bot", "ses_1")}))
	// Another broker's view, earlier and later.
	must(t, db.MergeDiscovered(ctx, []DiscoveredHost{
		seen("api.stripe.com", 443, t0.Add(-time.Minute), 1, "Basic", "", "ses_2"),
		seen("api.stripe.com", 443, t0.Add(time.Hour), 3, "Bearer", "other", "ses_3"),
		seen("api.stripe.com", 8443, t0, 1, "", "ci-bot", "ses_1"),
	}))
	got, err := db.ListDiscovered(ctx, DiscoveredFilter{})
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("got %+v", got)
	}
	h := got[0]
	if h.Host != "api.stripe.com" || h.Port != 443 || h.Count != 6 || !h.FirstSeen.Equal(t0.Add(-time.Minute)) || !h.LastSeen.Equal(t0.Add(time.Hour)) ||
		!slices.Equal(h.Schemes, []string{"Basic", "Bearer"}) || !slices.Equal(h.Agents, []string{"ci-bot", "other"}) ||
		!slices.Equal(h.Sessions, []string{"ses_1", "ses_2", "ses_3"}) {
		t.Errorf("merged host %+v", h)
	}
	if got[1].Port != 8443 || got[1].Count != 1 || len(got[1].Schemes) != 0 {
		t.Errorf("second host %+v", got[1])
	}
	// Pages: the cursor of the first row gives the second.
	page, err := db.ListDiscovered(ctx, DiscoveredFilter{Limit: 1, Before: &Cursor{At: h.LastSeen, ID: h.Key()}})
	must(t, err)
	if len(page) != 1 || page[0].Port != 8443 {
		t.Errorf("second page %+v", page)
	}
}

func testDiscoveredConcurrent(t *testing.T, db *DB, clk *clock) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			// Two hosts in opposite orders: no deadlock, no lost count.
			hs := []DiscoveredHost{seen("a.example", 443, clk.Now(), 1, "", "", fmt.Sprint("s", i)), seen("b.example", 443, clk.Now(), 1, "", "", "")}
			if i%2 == 1 {
				slices.Reverse(hs)
			}
			if err := db.MergeDiscovered(ctx, hs); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := db.ListDiscovered(ctx, DiscoveredFilter{})
	must(t, err)
	for _, h := range got {
		if h.Count != 8 {
			t.Errorf("%s: count %d, want 8", h.Host, h.Count)
		}
	}
	if len(got) != 2 || len(got[0].Sessions)+len(got[1].Sessions) != MaxDiscoveredNames {
		t.Errorf("got %+v", got)
	}
}

func testDiscoveredBound(t *testing.T, db *DB, clk *clock) {
	var hs []DiscoveredHost
	for i := range MaxDiscoveredHosts + 5 {
		hs = append(hs, seen(fmt.Sprintf("h%05d.example", i), 443, clk.Now().Add(time.Duration(i)*time.Second), 1, "", "", ""))
	}
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprint("agent-", i))
	}
	hs[len(hs)-1].Agents = names
	must(t, db.MergeDiscovered(ctx, hs))
	var all []DiscoveredHost
	var before *Cursor
	for {
		page, err := db.ListDiscovered(ctx, DiscoveredFilter{Limit: MaxPageLimit, Before: before})
		must(t, err)
		all = append(all, page...)
		if len(page) < MaxPageLimit {
			break
		}
		last := page[len(page)-1]
		before = &Cursor{At: last.LastSeen, ID: last.Key()}
	}
	if len(all) != MaxDiscoveredHosts {
		t.Fatalf("%d hosts kept, want %d", len(all), MaxDiscoveredHosts)
	}
	if all[len(all)-1].Host != "h00005.example" {
		t.Errorf("the oldest kept is %s, want h00005.example (the five least recently seen deleted)", all[len(all)-1].Host)
	}
	if !slices.Equal(all[0].Agents, names[20-MaxDiscoveredNames:]) {
		t.Errorf("agents kept %v, want the newest %d", all[0].Agents, MaxDiscoveredNames)
	}
}

func testDiscoveredRefuses(t *testing.T, db *DB, clk *clock) {
	for _, h := range []DiscoveredHost{
		{Port: 443, Count: 1, FirstSeen: clk.Now(), LastSeen: clk.Now()},
		{Host: "x", Port: 0, Count: 1, FirstSeen: clk.Now(), LastSeen: clk.Now()},
		{Host: "x", Port: 443, Count: 0, FirstSeen: clk.Now(), LastSeen: clk.Now()},
		{Host: "x", Port: 443, Count: 1},
	} {
		if err := db.MergeDiscovered(ctx, []DiscoveredHost{h}); err == nil {
			t.Errorf("MergeDiscovered(%+v) took it", h)
		}
	}
}
