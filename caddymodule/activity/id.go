package activity

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// NewID makes an entry id: "act_", 16 hex digits of at's unix
// nanoseconds (big-endian, so ids of one broker sort by time) and 16
// random hex digits (so brokers writing at the same nanosecond do not
// collide). It passes the cursor codec's id check (pagecursor.Parse).
func NewID(at time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(at.UnixNano()))
	rand.Read(b[8:]) // never fails (crypto/rand since Go 1.24)
	return "act_" + hex.EncodeToString(b[:])
}
