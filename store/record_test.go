package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netdiag/netdiag/store/storetest"
)

// Record keeps a finding, its pcap and its delivery together: all of them
// or, when one part is refused, none.
func TestRecord(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{MaxPcapBytes: 64})
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	target, _, node := storetest.Target(1)
	dir := t.TempDir()
	small := filepath.Join(dir, "small.pcap")
	os.WriteFile(small, append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, make([]byte, 20)...), 0o600)
	large := filepath.Join(dir, "large.pcap")
	os.WriteFile(large, append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, make([]byte, 200)...), 0o600)
	notPcap := filepath.Join(dir, "x.txt")
	os.WriteFile(notPcap, []byte("hello"), 0o600)

	tests := []struct {
		name      string
		pcap      string
		wantErr   bool
		wantBytes int64
		wantNote  bool
	}{
		{name: "with pcap", pcap: small, wantBytes: 24},
		{name: "pcap over the limit", pcap: large, wantNote: true},
		{name: "no pcap"},
		{name: "not a pcap", pcap: notPcap, wantErr: true},
		{name: "missing pcap", pcap: filepath.Join(dir, "none"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := NewID(at)
			r := &FindingRecord{FindingSummary: FindingSummary{ID: id, Target: target, Node: node, Source: SourceAlert}, Finding: storetest.Finding(1, at)}
			m := &Message{ID: id, Channel: "C1", Kind: "finding", Payload: []byte(`{}`)}
			err := s.Record(ctx, r, tt.pcap, m)
			_, ferr := s.Finding(ctx, id, false)
			_, merr := s.Message(ctx, id)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				if !errors.Is(ferr, ErrNotFound) || !errors.Is(merr, ErrNotFound) {
					t.Fatalf("a refused record left something: finding %v, message %v", ferr, merr)
				}
				return
			}
			if err != nil || ferr != nil || merr != nil {
				t.Fatalf("record %v, finding %v, message %v", err, ferr, merr)
			}
			got, _ := s.Finding(ctx, id, false)
			if got.PcapBytes != tt.wantBytes || (got.PcapNote != "") != tt.wantNote {
				t.Errorf("pcap bytes %d note %q, want %d note %v", got.PcapBytes, got.PcapNote, tt.wantBytes, tt.wantNote)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	a, b, c := KeyID(at, "group-1"), KeyID(at, "group-1"), KeyID(at, "group-2")
	if a != b || a == c {
		t.Fatalf("KeyID: %s %s %s", a, b, c)
	}
	if _, err := ParseID(a); err != nil {
		t.Fatal(err)
	}
	if !IDTime(a).Equal(at) {
		t.Errorf("IDTime = %s", IDTime(a))
	}
}

func TestPutAlertsAllOrNone(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	ok := AlertSeen{Fingerprint: "aaa", Status: AlertFiring, Target: "pod default/web"}
	bad := AlertSeen{Fingerprint: "bbb", Status: "maybe"}
	if err := s.PutAlerts(ctx, []AlertSeen{ok, bad}); err == nil {
		t.Fatal("a bad alert was taken")
	}
	if _, err := s.Alert(ctx, "aaa"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("half a batch stored: %v", err)
	}
	bad.Status = AlertResolved
	if err := s.PutAlerts(ctx, []AlertSeen{ok, bad}); err != nil {
		t.Fatal(err)
	}
	open, _ := s.OpenAlerts(ctx)
	if len(open) != 1 || open[0].Target != "pod default/web" {
		t.Fatalf("open alerts %+v", open)
	}
}
