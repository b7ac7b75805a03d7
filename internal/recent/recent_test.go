package recent

import (
	"slices"
	"testing"
)

func TestAdd(t *testing.T) {
	var l []string
	for _, v := range []string{"a", "b", "", "a", "c", "d"} {
		l = Add(l, v, 3)
	}
	if !slices.Equal(l, []string{"a", "c", "d"}) {
		t.Fatalf("got %v", l)
	}
	if got := Add([]string{"x"}, "y", 0); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("max 0: %v", got)
	}
}

func TestMerge(t *testing.T) {
	older := []string{"a", "b", "c"}
	got := Merge(older, []string{"d", "a"}, 3)
	if !slices.Equal(got, []string{"c", "d", "a"}) {
		t.Fatalf("got %v", got)
	}
	if !slices.Equal(older, []string{"a", "b", "c"}) {
		t.Fatalf("Merge changed its input: %v", older)
	}
}
