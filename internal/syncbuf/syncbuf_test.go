package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers racing each other lose nothing, and String may be read while
// they write (go test -race checks the locking).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	const writers, lines = 8, 100
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range lines {
				if n, err := b.Write([]byte("line\n")); n != 5 || err != nil {
					t.Errorf("Write: %d, %v", n, err)
				}
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != writers*lines {
		t.Errorf("%d lines, want %d", got, writers*lines)
	}
}
