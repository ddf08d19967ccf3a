package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Alert states, as Alertmanager sends them.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// ThreadRef is a chat thread: its channel and the timestamp of the message
// that opened it (Slack's "ts").
type ThreadRef struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}

// IsZero reports whether no thread is named.
func (t ThreadRef) IsZero() bool { return t == ThreadRef{} }

// AlertSeen is what the bot knows of one Alertmanager alert.
type AlertSeen struct {
	Fingerprint string    `json:"fingerprint"`
	Status      string    `json:"status"` // firing or resolved
	StartsAt    time.Time `json:"starts_at"`
	EndsAt      time.Time `json:"ends_at,omitzero"`
	GroupKey    string    `json:"group_key,omitempty"`
	Thread      ThreadRef `json:"thread,omitzero"`
	// Name is the alertname; Summary its summary annotation.
	Name    string `json:"name,omitempty"`
	Summary string `json:"summary,omitempty"`
	// Target is what the bot diagnoses for it ("pod NS/NAME"); Reason says
	// why there is no diagnosis when there is none (no target in its
	// labels, a cooldown).
	Target string `json:"target,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Command is the diagnosis in the bot's command form ("pod NS/NAME to
	// svc/NS/NAME:PORT"), kept so a restart can run it again.
	Command string `json:"command,omitempty"`
	// FindingID is the diagnosis the alert started: reserved before the
	// diagnosis runs, so that a restart finishes it under the same ID.
	FindingID    string    `json:"finding_id,omitempty"`
	LastNotified time.Time `json:"last_notified,omitzero"`
	Count        int       `json:"count"`
	// UpdatedAt is set by the store at each PutAlert; Sweep forgets
	// alerts not updated for Options.MaxAge.
	UpdatedAt time.Time `json:"updated_at"`
}

func validKey(what, v string) error {
	if v == "" {
		return fmt.Errorf("no %s", what)
	}
	return validKeyText(what, v)
}

// PutAlert stores an alert by its fingerprint, replacing what was known.
func (s *Store) PutAlert(ctx context.Context, a AlertSeen) error {
	return s.PutAlerts(ctx, []AlertSeen{a})
}

// PutAlerts stores several alerts in one transaction: all or none. The
// webhook answers Alertmanager only once they are on disk.
func (s *Store) PutAlerts(ctx context.Context, alerts []AlertSeen) error {
	return s.PutAlertsAndEnqueue(ctx, alerts, nil)
}

// prepareAlerts checks alerts, fills what the store fills and encodes them.
func (s *Store) prepareAlerts(alerts []AlertSeen) ([][]byte, error) {
	encoded := make([][]byte, len(alerts))
	now := s.opts.Clock().UTC()
	for i := range alerts {
		a := &alerts[i]
		if err := validKey("alert fingerprint", a.Fingerprint); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if a.Status != AlertFiring && a.Status != AlertResolved {
			return nil, fmt.Errorf("store: alert %s: status %q: accepted: firing, resolved", a.Fingerprint, a.Status)
		}
		if a.FindingID != "" {
			id, err := ParseID(a.FindingID)
			if err != nil {
				return nil, fmt.Errorf("store: alert %s: finding %w", a.Fingerprint, err)
			}
			a.FindingID = id
		}
		a.UpdatedAt = now
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		encoded[i] = b
	}
	return encoded, nil
}

func putAlertTx(tx *bbolt.Tx, a *AlertSeen, b []byte) error {
	k := []byte(a.Fingerprint)
	if err := tx.Bucket(bAlerts).Put(k, b); err != nil {
		return err
	}
	if a.Status == AlertFiring {
		return tx.Bucket(bAlertsOpen).Put(k, []byte{})
	}
	return tx.Bucket(bAlertsOpen).Delete(k)
}

// Alert returns the alert of a fingerprint, or ErrNotFound.
func (s *Store) Alert(ctx context.Context, fingerprint string) (AlertSeen, error) {
	var a AlertSeen
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return getJSON(tx.Bucket(bAlerts), fingerprint, &a, "alert")
	})
	return a, err
}

// OpenAlerts returns the alerts still firing, by fingerprint.
func (s *Store) OpenAlerts(ctx context.Context) ([]AlertSeen, error) {
	var out []AlertSeen
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		alerts := tx.Bucket(bAlerts)
		c := tx.Bucket(bAlertsOpen).Cursor()
		n := 0
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
			if err := scanCheck(ctx, n); err != nil {
				return err
			}
			var a AlertSeen
			if err := getJSON(alerts, string(k), &a, "alert"); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// threadValue is a stored thread: UpdatedAt lets Sweep forget old ones.
type threadValue struct {
	ThreadRef
	UpdatedAt time.Time `json:"updated_at"`
}

// PutThread remembers the thread of an Alertmanager group.
func (s *Store) PutThread(ctx context.Context, groupKey string, t ThreadRef) error {
	if err := validKey("group key", groupKey); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if t.Channel == "" || t.TS == "" {
		return fmt.Errorf("store: thread of group %q: give its channel and ts", groupKey)
	}
	b, err := json.Marshal(threadValue{t, s.opts.Clock().UTC()})
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bThreads).Put([]byte(groupKey), b)
	})
}

// Thread returns the thread of an Alertmanager group, or ErrNotFound.
func (s *Store) Thread(ctx context.Context, groupKey string) (ThreadRef, error) {
	var v threadValue
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return getJSON(tx.Bucket(bThreads), groupKey, &v, "thread of group")
	})
	return v.ThreadRef, err
}

func getJSON(b *bbolt.Bucket, key string, v any, what string) error {
	raw := b.Get([]byte(key))
	if raw == nil {
		return fmt.Errorf("store: %s %q: %w", what, key, ErrNotFound)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("store: %s %q: %w", what, key, err)
	}
	return nil
}
