package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSweepByAge(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	s := openTest(t, Options{Clock: clk.Now, MaxAge: 30 * 24 * time.Hour})
	day := 24 * time.Hour
	// Findings, audit entries, alerts, threads and messages 60, 40, 20 and
	// 0 days old; the cut is at 30.
	var kept, gone []string
	pcap := append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, make([]byte, 100)...)
	for i, age := range []int{60, 40, 20, 0} {
		at := t0.Add(-time.Duration(age) * day)
		clk.Set(at)
		id, err := s.PutFinding(ctx, record(i, at))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPcap(ctx, id, bytes.NewReader(pcap)); err != nil {
			t.Fatal(err)
		}
		if age > 30 {
			gone = append(gone, id)
		} else {
			kept = append(kept, id)
		}
		if err := s.Audit(ctx, AuditEntry{Who: "U1", What: "/netdiag", Result: "ok", FindingID: id}); err != nil {
			t.Fatal(err)
		}
		status := AlertFiring
		if i%2 == 1 {
			status = AlertResolved
		}
		if err := s.PutAlert(ctx, AlertSeen{Fingerprint: id, Status: status, StartsAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutThread(ctx, id, ThreadRef{Channel: "C1", TS: "1.2"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Enqueue(ctx, Message{Channel: "C1", Kind: "finding", Payload: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutDigest(ctx, DigestState{Name: "daily", LastRun: t0.Add(-100 * day)}); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0)
	rep, err := s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := SweepReport{FindingsByAge: 2, Audit: 2, Alerts: 2, Threads: 2, StaleOutbox: 2, LiveBytes: rep.LiveBytes}
	if rep != want {
		t.Fatalf("sweep report %+v, want %+v", rep, want)
	}
	for _, id := range gone {
		if _, err := s.Finding(ctx, id, false); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old finding %s: %v, want ErrNotFound", id, err)
		}
		if _, err := s.Pcap(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old pcap %s: %v, want ErrNotFound", id, err)
		}
		if _, err := s.Alert(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old alert %s: %v", id, err)
		}
		if _, err := s.Thread(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old thread %s: %v", id, err)
		}
	}
	for _, id := range kept {
		if _, err := s.Finding(ctx, id, true); err != nil {
			t.Fatalf("recent finding %s: %v", id, err)
		}
		if _, err := s.Pcap(ctx, id); err != nil {
			t.Fatalf("recent pcap %s: %v", id, err)
		}
	}
	// Every index entry of the old findings went with them.
	if h, _ := s.History(ctx, HistoryQuery{Limit: 100}); len(h) != len(kept) {
		t.Fatalf("history after sweep: %d, want %d", len(h), len(kept))
	}
	if h, _ := s.History(ctx, HistoryQuery{Namespace: "default"}); len(h) != 0 {
		t.Fatalf("namespace index of the first (old) finding remains: %+v", h)
	}
	if a, _ := s.AuditLog(ctx, time.Time{}, 100); len(a) != 2 {
		t.Fatalf("audit after sweep: %d entries, want 2", len(a))
	}
	if open, _ := s.OpenAlerts(ctx); len(open) != 1 {
		t.Fatalf("open alerts after sweep: %+v", open)
	}
	if due, _ := s.Due(ctx, t0, 100); len(due) != 4 {
		t.Fatalf("the outbox lost messages: %d, want all 4", len(due))
	}
	if _, err := s.Digest(ctx, "daily"); err != nil {
		t.Fatalf("digest state: %v", err)
	}
	if err := s.check(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSweepBySize(t *testing.T) {
	ctx := context.Background()
	const maxBytes = 2 << 20
	s := openTest(t, Options{MaxBytes: maxBytes, Clock: (&clock{t: t0}).Now})
	pcap := append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, make([]byte, 20000)...)
	var ids []string
	for i := range 400 {
		id, err := s.PutFinding(ctx, record(i, t0.Add(time.Duration(i)*time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPcap(ctx, id, bytes.NewReader(pcap)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	before, _ := s.Usage(ctx)
	if before.LiveBytes < 3*maxBytes {
		t.Fatalf("fixture too small: %+v", before)
	}
	rep, err := s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Usage(ctx)
	t.Logf("before %+v, after %+v, report %+v", before, after, rep)
	if rep.FindingsByAge != 0 || rep.FindingsBySize == 0 || after.LiveBytes > maxBytes || rep.LiveBytes != after.LiveBytes {
		t.Fatalf("sweep by size: report %+v, usage after %+v", rep, after)
	}
	if after.Findings+rep.FindingsBySize != len(ids) || after.Pcaps != after.Findings {
		t.Fatalf("%d findings and %d pcaps left, %d removed, of %d", after.Findings, after.Pcaps, rep.FindingsBySize, len(ids))
	}
	// The oldest went, the newest stayed.
	for i, id := range ids {
		_, err := s.Finding(ctx, id, false)
		if old := i < rep.FindingsBySize; old != errors.Is(err, ErrNotFound) {
			t.Fatalf("finding %d (%s) of %d, %d removed: %v", i, id, len(ids), rep.FindingsBySize, err)
		}
	}
	// Not much more went than needed: the survivors fill at least half.
	if after.LiveBytes < maxBytes/2 {
		t.Fatalf("sweep removed too much: %d live bytes left of %d allowed", after.LiveBytes, maxBytes)
	}
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	s := openTest(t, Options{Clock: clk.Now, MaxAge: 24 * time.Hour})
	var batch []*FindingRecord
	for i := range 6000 {
		batch = append(batch, record(i, t0.Add(-time.Duration(6000-i)*time.Minute)))
	}
	if err := s.PutFindings(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, AuditEntry{At: t0, Who: "U1", What: "/netdiag", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Usage(ctx)
	res, err := s.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Usage(ctx)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before %+v, after %+v, result %+v", before, after, res)
	if res.Skipped || res.After >= res.Before/2 || fi.Size() != res.After || after.Findings != before.Findings || after.Findings != 24*60 {
		t.Fatalf("compaction: %+v, file %d bytes, findings %d then %d", res, fi.Size(), before.Findings, after.Findings)
	}
	// The store works on after its file was replaced, the audit log's
	// sequence included, and reopens.
	h, err := s.History(ctx, HistoryQuery{Limit: 5})
	if err != nil || len(h) != 5 {
		t.Fatalf("history after compaction: %d, %v", len(h), err)
	}
	if _, err := s.Finding(ctx, h[0].ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFinding(ctx, record(1, t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, AuditEntry{At: t0, Who: "U2", What: "/netdiag", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.AuditLog(ctx, time.Time{}, 10); len(a) != 2 || a[0].Who != "U2" {
		t.Fatalf("audit after compaction: %+v", a)
	}
	if res, err := s.Compact(ctx); err != nil || !res.Skipped {
		t.Fatalf("second compaction: %+v, %v; want skipped", res, err)
	}
	// No file is left beside it.
	dir, _ := os.ReadDir(filepath.Dir(s.Path()))
	if len(dir) != 1 {
		var names []string
		for _, e := range dir {
			names = append(names, e.Name())
		}
		t.Fatalf("files beside the store: %v", names)
	}
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, path, Options{Clock: clk.Now})
	if err := s2.check(ctx); err != nil {
		t.Fatal(err)
	}
	if u, _ := s2.Usage(ctx); u.Findings != after.Findings+1 {
		t.Fatalf("after reopening: %+v", u)
	}
}
