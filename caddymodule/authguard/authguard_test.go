package authguard

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestBudgetThenLimitedThenRefilled(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Rate: 2, Burst: 3, LogEvery: 10 * time.Second, Now: c.now}
	for i := 0; i < 3; i++ {
		if v := g.Fail("10.0.0.1"); v.Limited || !v.Log {
			t.Fatalf("failure %d within the burst: %+v", i, v)
		}
	}
	v := g.Fail("10.0.0.1")
	if !v.Limited || v.RetryAfter < time.Second || !v.Log || v.Suppressed != 1 {
		t.Fatalf("first failure past the burst: %+v, want limited and one summary line", v)
	}
	for i := 0; i < 5; i++ {
		if v := g.Fail("10.0.0.1"); !v.Limited || v.Log {
			t.Fatalf("limited failure %d was logged: %+v", i, v)
		}
	}
	if v := g.Fail("10.0.0.2"); v.Limited {
		t.Fatalf("another address is limited too: %+v", v)
	}
	c.advance(10 * time.Second) // refills fully, and the log interval passed
	if v := g.Fail("10.0.0.1"); v.Limited || !v.Log {
		t.Fatalf("after the refill: %+v", v)
	}
}

func TestSummaryCountsSuppressed(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Rate: 0.001, Burst: 1, LogEvery: time.Second, Now: c.now}
	g.Fail("a") // within budget
	g.Fail("a") // limited, summary of 1
	for i := 0; i < 7; i++ {
		g.Fail("a")
	}
	c.advance(time.Second)
	if v := g.Fail("a"); !v.Limited || !v.Log || v.Suppressed != 8 {
		t.Fatalf("summary = %+v, want 8 failures summarised", v)
	}
}

func TestAddressesStayBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Now: c.now}
	for i := 0; i < maxAddresses+100; i++ {
		g.Fail(string(rune(i)) + "x")
	}
	if len(g.m) > maxAddresses {
		t.Fatalf("%d addresses tracked, bound is %d", len(g.m), maxAddresses)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":            "127.0.0.1",
		"::ffff:127.0.0.1":     "127.0.0.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not-an-ip":            "not-an-ip",
	} {
		if got := Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}
