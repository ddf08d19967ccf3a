package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// DigestState is where a scheduled digest got to, so a restart neither
// repeats nor skips one.
type DigestState struct {
	Name string `json:"name"`
	// LastRun is when it last ran; LastSlot the scheduled time it ran for.
	LastRun  time.Time `json:"last_run"`
	LastSlot time.Time `json:"last_slot"`
}

// Digest returns the state of a digest, or ErrNotFound if it never ran.
func (s *Store) Digest(ctx context.Context, name string) (DigestState, error) {
	var d DigestState
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return getJSON(tx.Bucket(bDigest), name, &d, "digest")
	})
	return d, err
}

// PutDigest stores the state of a digest.
func (s *Store) PutDigest(ctx context.Context, d DigestState) error {
	if err := validKey("digest name", d.Name); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	b, err := json.Marshal(&d)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bDigest).Put([]byte(d.Name), b)
	})
}
