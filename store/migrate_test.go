package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// v1Fixture is what a store of schema version 1 held.
type v1Fixture struct {
	findings []*FindingRecord // complete, IDs set, raw inline
	pcaps    map[string][]byte
	alerts   []AlertSeen
	threads  map[string]threadValue
	audit    []AuditEntry
	outbox   []Message
	digests  []DigestState
}

func newV1Fixture() *v1Fixture {
	fx := &v1Fixture{pcaps: map[string][]byte{}, threads: map[string]threadValue{}}
	for i := range 300 {
		at := t0.Add(time.Duration(i) * time.Minute)
		r := record(i%25, at)
		r.ID, r.At = NewID(at), at
		f := r.Finding
		r.Class, r.Cause, r.Confidence, r.Summary, r.Question = f.Class, f.Cause, f.Confidence, f.Summary, f.Question
		fx.findings = append(fx.findings, r)
		if i%50 == 0 {
			fx.pcaps[r.ID] = append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, make([]byte, 500+i)...)
		}
	}
	fx.alerts = []AlertSeen{
		{Fingerprint: "aaa", Status: AlertFiring, StartsAt: t0, GroupKey: "g1", Thread: ThreadRef{"C1", "1.1"}, FindingID: fx.findings[0].ID, Count: 3, UpdatedAt: t0},
		{Fingerprint: "bbb", Status: AlertResolved, StartsAt: t0, EndsAt: t0.Add(time.Hour), GroupKey: "g1", Count: 1, UpdatedAt: t0},
	}
	fx.threads["g1"] = threadValue{ThreadRef{"C1", "1.1"}, t0}
	fx.audit = []AuditEntry{{At: t0, Who: "U1", What: "/netdiag pod shop/web", Where: "C1", Target: "pod shop/web", Result: "dns/nxdomain"}}
	fx.outbox = []Message{
		{ID: NewID(t0), Channel: "C1", Kind: "finding", Payload: []byte("x"), NextAttempt: t0.Add(time.Minute), Created: t0},
		{ID: NewID(t0.Add(time.Second)), Channel: "C1", Kind: "pcap", Payload: []byte("y"), NextAttempt: t0, Created: t0, Attempts: 2},
	}
	fx.digests = []DigestState{{Name: "daily", LastRun: t0, LastSlot: t0}}
	return fx
}

// writeV1 builds a schema version 1 file with bbolt directly, the way the
// first netdiag store wrote it.
func writeV1(t *testing.T, path string, fx *v1Fixture, schema string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	put := func(tx *bbolt.Tx, bucket, key string, v any) {
		b, ok := v.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		bk, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			t.Fatal(err)
		}
		if err := bk.Put([]byte(key), b); err != nil {
			t.Fatal(err)
		}
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		put(tx, "meta", "schema", []byte(schema))
		for _, r := range fx.findings {
			put(tx, "findings", r.ID, r)
		}
		for id, p := range fx.pcaps {
			put(tx, "pcaps", id, p)
		}
		for _, a := range fx.alerts {
			put(tx, "alerts", a.Fingerprint, a)
		}
		for k, v := range fx.threads {
			put(tx, "threads", k, v)
		}
		for i, e := range fx.audit {
			var k [16]byte
			binary.BigEndian.PutUint64(k[:8], uint64(e.At.UnixNano()))
			binary.BigEndian.PutUint64(k[8:], uint64(i+1))
			put(tx, "audit", string(k[:]), e)
		}
		for _, m := range fx.outbox {
			put(tx, "outbox", m.ID, m)
		}
		for _, d := range fx.digests {
			put(tx, "digest", d.Name, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrateV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	fx := newV1Fixture()
	writeV1(t, path, fx, "1")

	s := openAt(t, path, Options{})
	for _, want := range fx.findings {
		got, err := s.Finding(ctx, want.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		w := *want
		w.PcapBytes = int64(len(fx.pcaps[want.ID]))
		if jsonOf(t, got) != jsonOf(t, &w) {
			t.Fatalf("finding %s after migration:\n got %s\nwant %s", want.ID, jsonOf(t, got), jsonOf(t, &w))
		}
	}
	for id, p := range fx.pcaps {
		if got, err := s.Pcap(ctx, id); err != nil || string(got) != string(p) {
			t.Fatalf("pcap %s: %d bytes, %v", id, len(got), err)
		}
	}
	// The indexes version 1 did not have.
	h, err := s.History(ctx, HistoryQuery{Target: fx.findings[7].Target, Limit: 100})
	if err != nil || len(h) != 12 || h[0].ID != fx.findings[282].ID {
		t.Fatalf("history of %s: %d entries, %v", fx.findings[7].Target, len(h), err)
	}
	if h, _ := s.History(ctx, HistoryQuery{Namespace: "shop", Limit: 1000}); len(h) == 0 {
		t.Fatal("no namespace index after migration")
	}
	if open, err := s.OpenAlerts(ctx); err != nil || len(open) != 1 || open[0].Fingerprint != "aaa" || open[0].Count != 3 {
		t.Fatalf("open alerts: %+v, %v", open, err)
	}
	if th, err := s.Thread(ctx, "g1"); err != nil || th != (ThreadRef{"C1", "1.1"}) {
		t.Fatalf("thread: %+v, %v", th, err)
	}
	if due, err := s.Due(ctx, t0.Add(time.Hour), 10); err != nil || len(due) != 2 || due[0].ID != fx.outbox[1].ID {
		t.Fatalf("outbox: %+v, %v", due, err)
	}
	if a, err := s.AuditLog(ctx, time.Time{}, 10); err != nil || len(a) != 1 || a[0].Result != "dns/nxdomain" {
		t.Fatalf("audit: %+v, %v", a, err)
	}
	if err := s.Audit(ctx, AuditEntry{Who: "U2", What: "/netdiag"}); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Digest(ctx, "daily"); err != nil || !d.LastRun.Equal(t0) {
		t.Fatalf("digest: %+v, %v", d, err)
	}
	if err := s.check(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bbolt.Tx) error {
		if v := string(tx.Bucket(bMeta).Get(kSchema)); v != "2" {
			t.Errorf("schema after migration: %q", v)
		}
		return nil
	})
	db.Close()
	// Opening again finds the current version and changes nothing.
	s = openAt(t, path, Options{})
	if u, _ := s.Usage(ctx); u.Findings != len(fx.findings) {
		t.Fatalf("reopened: %+v", u)
	}
}

func TestMigrateFailsWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	fx := newV1Fixture()
	writeV1(t, path, fx, "1")
	// One record of the findings is not JSON: the migration stops and the
	// file stays version 1.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bFindings).Put([]byte(fx.findings[100].ID), []byte("{")) })
	db.Close()
	_, err = Open(context.Background(), path, Options{Logger: quietLogger(t)})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "migrating schema version 1 to 2") || !strings.Contains(err.Error(), fx.findings[100].ID) {
		t.Fatalf("got %v, want the migration's failure naming the path and the record", err)
	}
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bbolt.Tx) error {
		if v := string(tx.Bucket(bMeta).Get(kSchema)); v != "1" || tx.Bucket(bSummaries) != nil {
			t.Errorf("a failed migration changed the file: schema %q, summaries bucket %v", v, tx.Bucket(bSummaries) != nil)
		}
		return nil
	})
}

func TestNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v3.db")
	writeV1(t, path, &v1Fixture{}, "3")
	_, err := Open(context.Background(), path, Options{Logger: quietLogger(t)})
	if err == nil || !strings.Contains(err.Error(), path+" has schema version 3 but this netdiag knows versions up to 2") {
		t.Fatalf("got %v", err)
	}
}
