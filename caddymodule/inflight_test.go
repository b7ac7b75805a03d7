package caddymodule

import (
	"context"
	"testing"
)

func TestInFlight(t *testing.T) {
	var f inFlight
	if left := f.wait(context.Background()); left != 0 {
		t.Fatalf("a new inFlight waits for %d", left)
	}
	f.begin()
	f.begin()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if left := f.wait(ctx); left != 2 {
		t.Fatalf("wait with an ended context: %d left, want 2", left)
	}
	f.end()
	if left := f.wait(ctx); left != 1 {
		t.Fatalf("after one end: %d left, want 1", left)
	}
	done := make(chan int)
	go func() { done <- f.wait(context.Background()) }()
	f.end()
	if left := <-done; left != 0 {
		t.Fatalf("wait returned %d once all ended", left)
	}
	// Busy again after idle: wait waits again.
	f.begin()
	if left := f.wait(ctx); left != 1 {
		t.Fatalf("after a new begin: %d left, want 1", left)
	}
	f.end()
	if left := f.wait(context.Background()); left != 0 {
		t.Fatalf("after its end: %d left", left)
	}
	var none *inFlight
	none.begin()
	none.end()
	if none.wait(ctx) != 0 {
		t.Fatal("a nil inFlight waits")
	}
}

// Counting runs for every proxied request: no allocation, with or
// without a wait in progress.
func TestInFlightAllocatesNothing(t *testing.T) {
	var f inFlight
	if n := testing.AllocsPerRun(100, func() { f.begin(); f.end() }); n != 0 {
		t.Fatalf("begin and end allocate %v times", n)
	}
}
