package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"go.etcd.io/bbolt"
)

// Record stores a finding, its pcap (pcapPath, if not empty) and the outbox
// message that delivers it, in one transaction: after a crash either all of
// them are there, and the message goes out, or none is, and the caller
// diagnoses again. A pcap over Options.MaxPcapBytes is not kept; the
// record's PcapNote says so and the rest is stored.
func (s *Store) Record(ctx context.Context, r *FindingRecord, pcapPath string, m *Message) error {
	if err := s.complete(r); err != nil {
		return err
	}
	var p *pcapData
	if pcapPath != "" {
		f, err := os.Open(pcapPath)
		if err != nil {
			return fmt.Errorf("store: pcap of finding %s: %w", r.ID, err)
		}
		fi, err := f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file", pcapPath)
		}
		if err == nil {
			p, err = s.readPcap(r.ID, f, fi.Size())
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("store: pcap of finding %s: %w", r.ID, err)
		}
	}
	if m != nil {
		if err := s.prepareMessage(m); err != nil {
			return err
		}
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if err := putFinding(tx, r); err != nil {
			return fmt.Errorf("store: put finding %s: %w", r.ID, err)
		}
		if p != nil {
			note, err := p.put(tx, r.ID)
			if err != nil {
				return err
			}
			r.PcapNote = note
			if !p.tooLarge {
				r.PcapBytes = int64(len(p.data))
			}
		}
		if m != nil {
			return replaceMessage(tx, m)
		}
		return nil
	})
}

// Message returns the outbox message with this ID, or ErrNotFound once it
// was delivered.
func (s *Store) Message(ctx context.Context, id string) (Message, error) {
	var m Message
	id, err := ParseID(id)
	if err != nil {
		return m, fmt.Errorf("store: outbox message: %w", err)
	}
	err = s.view(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bOutbox).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("store: outbox message %s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(b, &m)
	})
	return m, err
}

// PutAlertsAndEnqueue stores alerts and queues messages in one transaction:
// the webhook writes a notification's alerts and their thread's messages
// with one sync to disk, not one per alert.
func (s *Store) PutAlertsAndEnqueue(ctx context.Context, alerts []AlertSeen, msgs []Message) error {
	encoded, err := s.prepareAlerts(alerts)
	if err != nil {
		return err
	}
	for i := range msgs {
		if err := s.prepareMessage(&msgs[i]); err != nil {
			return err
		}
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		for i := range alerts {
			if err := putAlertTx(tx, &alerts[i], encoded[i]); err != nil {
				return err
			}
		}
		for i := range msgs {
			if err := replaceMessage(tx, &msgs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}
