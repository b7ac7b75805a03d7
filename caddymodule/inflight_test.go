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
	end1, end2 := f.begin(), f.begin()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if left := f.wait(ctx); left != 2 {
		t.Fatalf("wait with an ended context: %d left, want 2", left)
	}
	end1()
	end1() // a second call changes nothing
	if left := f.wait(ctx); left != 1 {
		t.Fatalf("after one end (called twice): %d left, want 1", left)
	}
	done := make(chan int)
	go func() { done <- f.wait(context.Background()) }()
	end2()
	if left := <-done; left != 0 {
		t.Fatalf("wait returned %d once all ended", left)
	}
	// Busy again after idle: wait waits again.
	end3 := f.begin()
	if left := f.wait(ctx); left != 1 {
		t.Fatalf("after a new begin: %d left, want 1", left)
	}
	end3()
	var none *inFlight
	none.begin()()
	if none.wait(ctx) != 0 {
		t.Fatal("a nil inFlight waits")
	}
}
