package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Message is a chat message not yet delivered. It stays in the outbox,
// across restarts, until Done; Sweep never drops one (see Sweep).
type Message struct {
	// ID is made by Enqueue when empty; enqueueing an ID again replaces
	// that message.
	ID      string `json:"id"`
	Channel string `json:"channel"`
	// Thread is the ts of the thread to post in, if any.
	Thread string `json:"thread,omitempty"`
	// Kind tells the sender what Payload is ("finding", "pcap", "digest").
	Kind    string `json:"kind"`
	Payload []byte `json:"payload"`
	// Attempts so far, the time of the next one and the last error.
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
	// Created is set by Enqueue when zero.
	Created time.Time `json:"created"`
}

// Enqueue adds a message to the outbox and returns its ID. NextAttempt is
// now when zero.
func (s *Store) Enqueue(ctx context.Context, m Message) (string, error) {
	if err := s.prepareMessage(&m); err != nil {
		return "", err
	}
	err := s.update(ctx, func(tx *bbolt.Tx) error { return replaceMessage(tx, &m) })
	return m.ID, err
}

// prepareMessage checks a message and fills what Enqueue fills.
func (s *Store) prepareMessage(m *Message) error {
	if m.Channel == "" || m.Kind == "" {
		return errors.New("store: outbox message: give its Channel and Kind")
	}
	now := s.opts.Clock().UTC()
	if m.Created.IsZero() {
		m.Created = now
	}
	if m.NextAttempt.IsZero() {
		m.NextAttempt = now
	}
	if m.ID == "" {
		m.ID = NewID(m.Created)
		return nil
	}
	id, err := ParseID(m.ID)
	if err != nil {
		return fmt.Errorf("store: outbox message: %w", err)
	}
	m.ID = id
	return nil
}

func replaceMessage(tx *bbolt.Tx, m *Message) error {
	if err := dropDue(tx, m.ID); err != nil {
		return err
	}
	return putMessage(tx, m)
}

func putMessage(tx *bbolt.Tx, m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bOutbox).Put([]byte(m.ID), b); err != nil {
		return err
	}
	return tx.Bucket(bOutboxDue).Put(timeIDKey(nil, m.NextAttempt, m.ID), []byte{})
}

// dropDue removes the due entry of a stored message, if there is one.
func dropDue(tx *bbolt.Tx, id string) error {
	old := tx.Bucket(bOutbox).Get([]byte(id))
	if old == nil {
		return nil
	}
	var o Message
	if err := json.Unmarshal(old, &o); err != nil {
		return fmt.Errorf("store: outbox message %s: %w", id, err)
	}
	return tx.Bucket(bOutboxDue).Delete(timeIDKey(nil, o.NextAttempt, id))
}

// Due returns up to limit messages whose next attempt is at now or
// earlier, the most overdue first.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]Message, error) {
	if limit < 1 || limit > MaxHistory {
		return nil, fmt.Errorf("store: outbox: limit %d: accepted: 1 to %d", limit, MaxHistory)
	}
	var out []Message
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		msgs := tx.Bucket(bOutbox)
		c := tx.Bucket(bOutboxDue).Cursor()
		n := 0
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			n++
			if err := scanCheck(ctx, n); err != nil {
				return err
			}
			at, id, ok := splitTimeKey(k, 0)
			if !ok || at > now.UnixNano() {
				break
			}
			var m Message
			if err := getJSON(msgs, string(id), &m, "outbox message"); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Done removes a delivered message; an ID not in the outbox is not an
// error (it was delivered before).
func (s *Store) Done(ctx context.Context, id string) error {
	id, err := ParseID(id)
	if err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if err := dropDue(tx, id); err != nil {
			return err
		}
		return tx.Bucket(bOutbox).Delete([]byte(id))
	})
}

// Retry records a failed attempt and when to try next.
func (s *Store) Retry(ctx context.Context, id string, next time.Time, errText string) error {
	id, err := ParseID(id)
	if err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		var m Message
		if err := getJSON(tx.Bucket(bOutbox), id, &m, "outbox message"); err != nil {
			return err
		}
		if err := tx.Bucket(bOutboxDue).Delete(timeIDKey(nil, m.NextAttempt, id)); err != nil {
			return err
		}
		m.Attempts++
		m.NextAttempt = next.UTC()
		m.LastError = errText
		return putMessage(tx, &m)
	})
}
