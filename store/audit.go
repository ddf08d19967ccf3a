package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// AuditEntry is one command and what came of it.
type AuditEntry struct {
	At time.Time `json:"at"`
	// Who asked: a Slack user, "alertmanager" or a token's name.
	Who string `json:"who"`
	// What was asked, as typed.
	What string `json:"what"`
	// Where: the channel, or "cli".
	Where  string `json:"where,omitempty"`
	Target string `json:"target,omitempty"`
	// Result is the verdict (class/cause) or why the command was refused.
	Result    string `json:"result"`
	FindingID string `json:"finding_id,omitempty"`
}

// Audit appends an entry to the audit log; At is the store's clock when
// zero.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	if e.Who == "" || e.What == "" {
		return errors.New("store: audit entry: give Who (the Slack user, \"alertmanager\" or the token's name) and What (the command)")
	}
	if e.At.IsZero() {
		e.At = s.opts.Clock()
	}
	e.At = e.At.UTC()
	b, err := json.Marshal(&e)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		bk := appending(tx, bAudit)
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		// The sequence keeps entries of one instant apart and in order.
		var sb [8]byte
		binary.BigEndian.PutUint64(sb[:], seq)
		return bk.Put(timeIDKey(nil, e.At, string(sb[:])), b)
	})
}

// AuditLog returns the entries at since or later, newest first, at most
// limit (1 to MaxHistory).
func (s *Store) AuditLog(ctx context.Context, since time.Time, limit int) ([]AuditEntry, error) {
	if limit < 1 || limit > MaxHistory {
		return nil, fmt.Errorf("store: audit log: limit %d: accepted: 1 to %d", limit, MaxHistory)
	}
	var out []AuditEntry
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		c := tx.Bucket(bAudit).Cursor()
		n := 0
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			n++
			if err := scanCheck(ctx, n); err != nil {
				return err
			}
			at, _, ok := splitTimeKey(k, 0)
			if !ok || at < since.UnixNano() && !since.IsZero() {
				break
			}
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: audit entry: %w", err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
