package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// IDs are 26 characters of Crockford's base32 for 128 bits: 48 bits of
// Unix milliseconds, then 80 random bits (the shape of a ULID). They sort as
// their time, so a list of IDs reads oldest first and one can be typed back
// in a chat without quoting.
const (
	idLen     = 26
	crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

// NewID returns a new ID for something that happened at t.
func NewID(t time.Time) string {
	var b [16]byte
	ms := max(t.UnixMilli(), 0)
	binary.BigEndian.PutUint64(b[:8], uint64(ms)<<16)
	rand.Read(b[6:]) // never fails (crypto/rand)
	return encodeID(b)
}

// KeyID returns the same ID for the same key at the same t: an outbox
// message that must exist once per thing (the message that opens an alert
// group's thread) is enqueued under it, so enqueueing it again replaces it.
func KeyID(t time.Time, key string) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(t.UnixMilli(), 0))<<16)
	h := sha256.Sum256([]byte(key))
	copy(b[6:], h[:10])
	return encodeID(b)
}

func encodeID(b [16]byte) string {
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	var out [idLen]byte
	for i := idLen - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// ParseID checks an ID as a person may type it (any case) and returns it in
// its stored form.
func ParseID(s string) (string, error) {
	u := strings.ToUpper(s)
	if len(u) != idLen || u[0] > '7' {
		return "", fmt.Errorf("ID %q: accepted: the 26 characters netdiag gives (0-9 and A-Z without I, L, O, U, e.g. 01JQ3ZK7C0M4V8T2X6R9PNDWYH)", s)
	}
	for _, c := range []byte(u) {
		if strings.IndexByte(crockford, c) < 0 {
			return "", fmt.Errorf("ID %q: %q is not one of its characters: accepted: 0-9 and A-Z without I, L, O, U", s, c)
		}
	}
	return u, nil
}

// IDTime is the time an ID was made for, to the millisecond.
func IDTime(id string) time.Time {
	var hi, lo uint64
	for i := range min(len(id), idLen) {
		d := uint64(strings.IndexByte(crockford, id[i]))
		hi = hi<<5 | lo>>59
		lo = lo<<5 | d
	}
	return time.UnixMilli(int64(hi >> 16)).UTC()
}

// timeBytes is t as 8 big-endian bytes of Unix nanoseconds; times before
// 1970 (never made by netdiag) sort as 1970.
func timeBytes(t time.Time) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(max(t.UnixNano(), 0)))
	return b
}

// timeIDKey is prefix | time | id, appended to dst.
func timeIDKey(prefix []byte, t time.Time, id string) []byte {
	tb := timeBytes(t)
	k := make([]byte, 0, len(prefix)+8+len(id))
	k = append(k, prefix...)
	k = append(k, tb[:]...)
	return append(k, id...)
}

// splitTimeKey reads the time and the rest of a key after its prefix.
func splitTimeKey(k []byte, prefixLen int) (int64, []byte, bool) {
	if len(k) < prefixLen+8 {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(k[prefixLen : prefixLen+8])), k[prefixLen+8:], true
}

// indexPrefix is the key prefix of one value in a by-value index: the value
// and a 0 byte, which no value holds, so "pod a/b" does not prefix "pod a/bc".
func indexPrefix(v string) []byte {
	return append([]byte(v), 0)
}
