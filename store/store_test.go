package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/store/storetest"
)

func TestMain(m *testing.M) {
	// The crash and lock tests run this binary again as the other process.
	maybeChild()
	code := m.Run()
	cleanupBenchFixture()
	os.Exit(code)
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// openTest opens a store in a test's temporary directory; it is closed when
// the test ends.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "netdiag.db"), opts)
}

func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger(t)
	}
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// record is the i-th test finding, about the i-th target, made at at.
func record(i int, at time.Time) *FindingRecord {
	target, ns, node := storetest.Target(i)
	return &FindingRecord{FindingSummary: FindingSummary{Target: target, Namespace: ns, Node: node, Source: SourceSlack,
		Requester: "U024BE7LH", Channel: "C0NETOPS", Thread: "1712345678.000100"}, Finding: storetest.Finding(i, at)}
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFindingRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	rec := record(3, t0)
	want := jsonOf(t, rec.Finding)
	id, err := s.PutFinding(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if id != rec.ID || len(id) != 26 || !IDTime(id).Equal(t0) {
		t.Fatalf("ID %q (record %q) does not carry the finding's time %s: %s", id, rec.ID, t0, IDTime(id))
	}
	if rec.Class != rec.Finding.Class || rec.Summary != rec.Finding.Summary || !rec.At.Equal(t0) || rec.Namespace != "kube-system" {
		t.Fatalf("derived fields not filled: %+v", rec)
	}
	for _, withRaw := range []bool{false, true} {
		got, err := s.Finding(ctx, strings.ToLower(id), withRaw)
		if err != nil {
			t.Fatal(err)
		}
		if withRaw {
			if g := jsonOf(t, got.Finding); g != want {
				t.Fatalf("finding with raw differs:\n got %s\nwant %s", g, want)
			}
		} else if got.Finding.Raw != nil {
			t.Fatal("raw evidence returned without withRaw")
		}
		got.Finding = rec.Finding
		if jsonOf(t, got) != jsonOf(t, rec) {
			t.Fatalf("record differs:\n got %s\nwant %s", jsonOf(t, got), jsonOf(t, rec))
		}
	}
	if _, err := s.Finding(ctx, NewID(t0), false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown ID: %v, want ErrNotFound", err)
	}

	// Replacing the record under the same ID moves its index entries.
	rec2 := record(4, t0.Add(time.Hour))
	rec2.ID = id
	if _, err := s.PutFinding(ctx, rec2); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		target string
		n      int
	}{{rec.Target, 0}, {rec2.Target, 1}} {
		h, err := s.History(ctx, HistoryQuery{Target: x.target})
		if err != nil || len(h) != x.n {
			t.Fatalf("history of %s after replace: %d entries, %v; want %d", x.target, len(h), err, x.n)
		}
	}
	if h, _ := s.History(ctx, HistoryQuery{}); len(h) != 1 {
		t.Fatalf("all history after replace: %d entries, want 1", len(h))
	}
}

func TestRecords(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	s := openTest(t, Options{Clock: clk.Now})
	findingID := NewID(t0)
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"alert firing then resolved", func(t *testing.T) {
			a := AlertSeen{Fingerprint: "4f3c2a1b", Status: AlertFiring, StartsAt: t0.Add(-time.Minute), GroupKey: `{}:{alertname="PodNetDown"}`,
				Thread: ThreadRef{Channel: "C0NETOPS", TS: "1712345678.000100"}, FindingID: strings.ToLower(findingID), LastNotified: t0, Count: 1}
			if err := s.PutAlert(ctx, a); err != nil {
				t.Fatal(err)
			}
			got, err := s.Alert(ctx, a.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			a.FindingID, a.UpdatedAt = findingID, t0
			if jsonOf(t, got) != jsonOf(t, a) {
				t.Fatalf("alert: got %s, want %s", jsonOf(t, got), jsonOf(t, a))
			}
			open, err := s.OpenAlerts(ctx)
			if err != nil || len(open) != 1 || open[0].Fingerprint != a.Fingerprint {
				t.Fatalf("open alerts: %+v, %v", open, err)
			}
			a.Status, a.EndsAt, a.Count = AlertResolved, t0, 2
			if err := s.PutAlert(ctx, a); err != nil {
				t.Fatal(err)
			}
			if open, _ := s.OpenAlerts(ctx); len(open) != 0 {
				t.Fatalf("a resolved alert is still open: %+v", open)
			}
			if got, _ := s.Alert(ctx, a.Fingerprint); got.Count != 2 || got.Status != AlertResolved {
				t.Fatalf("alert after resolve: %+v", got)
			}
			if _, err := s.Alert(ctx, "nope"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown alert: %v", err)
			}
		}},
		{"thread of a group", func(t *testing.T) {
			th := ThreadRef{Channel: "C0NETOPS", TS: "1712345678.000200"}
			if err := s.PutThread(ctx, "group-a", th); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Thread(ctx, "group-a"); err != nil || got != th {
				t.Fatalf("thread: %+v, %v", got, err)
			}
			if _, err := s.Thread(ctx, "group-b"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown group: %v", err)
			}
		}},
		{"audit log newest first", func(t *testing.T) {
			var want []AuditEntry
			for i := range 5 {
				e := AuditEntry{At: t0.Add(time.Duration(i/2) * time.Second), Who: "U024BE7LH", What: "/netdiag pod shop/web --to svc/shop/db:5432",
					Where: "C0NETOPS", Target: "pod shop/web", Result: "firewall/drop", FindingID: findingID}
				if i == 4 {
					e.Who, e.Result, e.FindingID = "alertmanager", "refused: namespace kube-system is not allowed for this channel", ""
				}
				if err := s.Audit(ctx, e); err != nil {
					t.Fatal(err)
				}
				want = append([]AuditEntry{e}, want...)
			}
			got, err := s.AuditLog(ctx, time.Time{}, 10)
			if err != nil || jsonOf(t, got) != jsonOf(t, want) {
				t.Fatalf("audit log:\n got %s, %v\nwant %s", jsonOf(t, got), err, jsonOf(t, want))
			}
			if got, _ := s.AuditLog(ctx, t0.Add(time.Second), 10); len(got) != 3 {
				t.Fatalf("audit since: %d entries, want 3", len(got))
			}
			if got, _ := s.AuditLog(ctx, time.Time{}, 2); len(got) != 2 || got[0].Who != "alertmanager" {
				t.Fatalf("audit limit: %+v", got)
			}
		}},
		{"outbox survives until done", func(t *testing.T) {
			id1, err := s.Enqueue(ctx, Message{Channel: "C0NETOPS", Kind: "finding", Payload: []byte(`{"blocks":[]}`)})
			if err != nil {
				t.Fatal(err)
			}
			id2, err := s.Enqueue(ctx, Message{Channel: "C0NETOPS", Thread: "1712345678.000100", Kind: "pcap", Payload: []byte{0, 1, 2}, NextAttempt: t0.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			due, err := s.Due(ctx, t0, 10)
			if err != nil || len(due) != 1 || due[0].ID != id1 || !bytes.Equal(due[0].Payload, []byte(`{"blocks":[]}`)) {
				t.Fatalf("due now: %+v, %v", due, err)
			}
			if err := s.Retry(ctx, id1, t0.Add(2*time.Minute), "slack: rate_limited"); err != nil {
				t.Fatal(err)
			}
			due, _ = s.Due(ctx, t0.Add(3*time.Minute), 10)
			if len(due) != 2 || due[0].ID != id2 || due[1].ID != id1 || due[1].Attempts != 1 || due[1].LastError != "slack: rate_limited" {
				t.Fatalf("due later: %+v", due)
			}
			if err := s.Done(ctx, id1); err != nil {
				t.Fatal(err)
			}
			if err := s.Done(ctx, id1); err != nil {
				t.Fatalf("done twice: %v", err)
			}
			if err := s.Retry(ctx, id1, t0, "x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("retry of a delivered message: %v", err)
			}
			if due, _ = s.Due(ctx, t0.Add(time.Hour), 10); len(due) != 1 || due[0].ID != id2 {
				t.Fatalf("due after done: %+v", due)
			}
			if err := s.Done(ctx, id2); err != nil {
				t.Fatal(err)
			}
		}},
		{"digest state", func(t *testing.T) {
			d := DigestState{Name: "daily-health", LastRun: t0, LastSlot: t0.Truncate(24 * time.Hour)}
			if err := s.PutDigest(ctx, d); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Digest(ctx, d.Name); err != nil || jsonOf(t, got) != jsonOf(t, d) {
				t.Fatalf("digest: %+v, %v", got, err)
			}
			if _, err := s.Digest(ctx, "weekly"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown digest: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	withTarget := func(target string) *FindingRecord {
		r := record(1, t0)
		r.Target, r.Namespace = target, ""
		return r
	}
	tests := []struct {
		name string
		err  func() error
		want string
	}{
		{"no target", func() error { _, err := s.PutFinding(ctx, withTarget("")); return err }, "accepted: \"pod NS/NAME\""},
		{"unknown kind", func() error { _, err := s.PutFinding(ctx, withTarget("deploy shop/web")); return err }, "unknown kind \"deploy\""},
		{"pod without namespace", func() error { _, err := s.PutFinding(ctx, withTarget("pod web")); return err }, "a pod is NS/NAME"},
		{"NUL in target", func() error { _, err := s.PutFinding(ctx, withTarget("netns a\x00b")); return err }, "accepted"},
		{"no finding", func() error {
			_, err := s.PutFinding(ctx, &FindingRecord{FindingSummary: FindingSummary{Target: "pod a/b"}})
			return err
		}, "needs its Finding"},
		{"bad source", func() error { r := record(1, t0); r.Source = "email"; _, err := s.PutFinding(ctx, r); return err }, "accepted: slack, alert, cli, digest"},
		{"bad ID", func() error { r := record(1, t0); r.ID = "not-an-id"; _, err := s.PutFinding(ctx, r); return err }, "accepted: the 26 characters"},
		{"bad ID character", func() error { _, err := s.Finding(ctx, "01HZZZZZZZZZZZZZZZZZZZZZZU", false); return err }, "is not one of its characters"},
		{"two selectors", func() error {
			_, err := s.History(ctx, HistoryQuery{Target: "pod a/b", Namespace: "a"})
			return err
		}, "give one of Target, TargetPrefix, Namespace or Node"},
		{"history limit", func() error { _, err := s.History(ctx, HistoryQuery{Limit: MaxHistory + 1}); return err }, "accepted: 1 to 10000"},
		{"alert status", func() error { return s.PutAlert(ctx, AlertSeen{Fingerprint: "x", Status: "pending"}) }, "accepted: firing, resolved"},
		{"alert without fingerprint", func() error { return s.PutAlert(ctx, AlertSeen{Status: AlertFiring}) }, "no alert fingerprint"},
		{"thread without ts", func() error { return s.PutThread(ctx, "g", ThreadRef{Channel: "C1"}) }, "give its channel and ts"},
		{"audit without who", func() error { return s.Audit(ctx, AuditEntry{What: "/netdiag"}) }, "give Who"},
		{"message without channel", func() error { _, err := s.Enqueue(ctx, Message{Kind: "finding"}); return err }, "give its Channel and Kind"},
		{"negative option", func() error { _, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{MaxAge: -1}); return err }, "Options.MaxAge is negative"},
		{"path is a directory", func() error { _, err := Open(ctx, t.TempDir(), Options{}); return err }, "is a directory"},
		{"missing directory", func() error {
			_, err := Open(ctx, filepath.Join(t.TempDir(), "no", "x.db"), Options{})
			return err
		}, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	prev := ""
	for i := range 1000 {
		id := NewID(t0.Add(time.Duration(i) * time.Millisecond))
		if id <= prev {
			t.Fatalf("IDs do not sort by time: %s after %s", id, prev)
		}
		if got, err := ParseID(strings.ToLower(id)); err != nil || got != id {
			t.Fatalf("ParseID(%s) = %s, %v", strings.ToLower(id), got, err)
		}
		prev = id
	}
	if !IDTime(prev).Equal(t0.Add(999 * time.Millisecond)) {
		t.Fatalf("IDTime = %s", IDTime(prev))
	}
}

func TestPcap(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{MaxPcapBytes: 1024})
	rec := record(2, t0)
	id, err := s.PutFinding(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	small := append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, bytes.Repeat([]byte{7}, 1000)...)
	big := append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, bytes.Repeat([]byte{7}, 2000)...)
	bigFile := filepath.Join(t.TempDir(), "big.pcap")
	if err := os.WriteFile(bigFile, big, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		put      func() error
		wantErr  error
		wantText string
		stored   []byte
		note     string
	}{
		{"small", func() error { return s.PutPcap(ctx, id, bytes.NewReader(small)) }, nil, "", small, ""},
		{"too large from a reader", func() error { return s.PutPcap(ctx, id, bytes.NewReader(big)) }, ErrPcapTooLarge, *rec.Finding.Pcap, nil, "limit of 1024 bytes"},
		{"small again", func() error { return s.PutPcap(ctx, id, bytes.NewReader(small)) }, nil, "", small, ""},
		{"too large file, not read", func() error { return s.PutPcapFile(ctx, id, bigFile) }, ErrPcapTooLarge, "its 2004 bytes are over", nil, "it was at " + *rec.Finding.Pcap},
		{"not a capture", func() error { return s.PutPcap(ctx, id, strings.NewReader("hello")) }, nil, "not a capture file", nil, "it was at"},
		{"unknown finding", func() error { return s.PutPcap(ctx, NewID(t0), bytes.NewReader(small)) }, ErrNotFound, "store the finding first", nil, "it was at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.put()
			if tt.wantText == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantText != "" && (err == nil || !strings.Contains(err.Error(), tt.wantText)) {
				t.Fatalf("got %v, want an error saying %q", err, tt.wantText)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			got, gerr := s.Pcap(ctx, id)
			if !bytes.Equal(got, tt.stored) || (tt.stored == nil) != errors.Is(gerr, ErrNotFound) {
				t.Fatalf("stored pcap: %d bytes, %v; want %d bytes", len(got), gerr, len(tt.stored))
			}
			r, _ := s.Finding(ctx, id, false)
			if !strings.Contains(r.PcapNote, tt.note) || (tt.note == "") != (r.PcapNote == "") {
				t.Fatalf("record's pcap note %q, want one with %q", r.PcapNote, tt.note)
			}
			if tt.stored != nil && r.PcapBytes != int64(len(tt.stored)) {
				t.Fatalf("record's pcap bytes %d, want %d", r.PcapBytes, len(tt.stored))
			}
		})
	}
	// A finding replaced under its ID keeps its pcap.
	if err := s.PutPcap(ctx, id, bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	again := record(2, t0)
	again.ID = id
	if _, err := s.PutFinding(ctx, again); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Finding(ctx, id, false); r.PcapBytes != int64(len(small)) {
		t.Fatalf("replaced finding lost its pcap: %+v", r)
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	const n, targets = 3000, 40
	var all []*FindingRecord
	var batch []*FindingRecord
	for i := range n {
		// Times out of order, some equal, to exercise the indexes.
		at := t0.Add(time.Duration((i*7919)%n) * time.Minute)
		r := record(i%targets, at)
		batch = append(batch, r)
		all = append(all, r)
		if len(batch) == 500 {
			if err := s.PutFindings(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	expect := func(q HistoryQuery) []string {
		var hits []*FindingRecord
		for _, r := range all {
			ok := (q.Target == "" || r.Target == q.Target) && strings.HasPrefix(r.Target, q.TargetPrefix) &&
				(q.Namespace == "" || r.Namespace == q.Namespace) && (q.Node == "" || r.Node == q.Node) &&
				(q.Since.IsZero() || !r.At.Before(q.Since)) && (q.Until.IsZero() || r.At.Before(q.Until))
			if ok {
				hits = append(hits, r)
			}
		}
		slices.SortFunc(hits, func(a, b *FindingRecord) int {
			if c := b.At.Compare(a.At); c != 0 {
				return c
			}
			return strings.Compare(b.ID, a.ID)
		})
		limit := q.Limit
		if limit == 0 {
			limit = DefaultHistory
		}
		var ids []string
		for _, r := range hits[:min(limit, len(hits))] {
			ids = append(ids, r.ID)
		}
		return ids
	}
	target, ns, node := storetest.Target(5)
	tests := []struct {
		name string
		q    HistoryQuery
	}{
		{"all, default limit", HistoryQuery{}},
		{"one target", HistoryQuery{Target: target, Limit: 1000}},
		{"one target, a window", HistoryQuery{Target: target, Since: t0.Add(500 * time.Minute), Until: t0.Add(1500 * time.Minute), Limit: 1000}},
		{"one target, limit 3", HistoryQuery{Target: target, Limit: 3}},
		{"one target, until only", HistoryQuery{Target: target, Until: t0.Add(100 * time.Minute), Limit: 1000}},
		{"target prefix", HistoryQuery{TargetPrefix: "pod shop/", Limit: 1000}},
		{"target prefix, window, limit", HistoryQuery{TargetPrefix: "svc ", Since: t0.Add(10 * time.Minute), Until: t0.Add(2000 * time.Minute), Limit: 17}},
		{"namespace", HistoryQuery{Namespace: ns, Limit: 1000}},
		{"node", HistoryQuery{Node: node, Since: t0.Add(2900 * time.Minute), Limit: 1000}},
		{"all in a window", HistoryQuery{Since: t0.Add(10 * time.Minute), Until: t0.Add(20 * time.Minute), Limit: 1000}},
		{"nothing before the first", HistoryQuery{Target: target, Until: t0}},
		{"unknown target", HistoryQuery{Target: "pod nope/nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.History(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, g := range got {
				ids = append(ids, g.ID)
			}
			want := expect(tt.q)
			if !slices.Equal(ids, want) {
				t.Fatalf("got %d findings, want %d\n got %v\nwant %v", len(ids), len(want), ids, want)
			}
			for _, g := range got {
				if g.Summary == "" || g.Class == "" || g.Target == "" {
					t.Fatalf("summary not filled: %+v", g)
				}
			}
		})
	}

	// A cancelled context stops a scan.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.History(cctx, HistoryQuery{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("history with a cancelled context: %v", err)
	}
}

// TestConcurrent runs writers and readers of every kind at once; run it
// with -race.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Options{})
	const writers, perWriter, readers = 4, 40, 4
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	done := make(chan struct{})
	var mu sync.Mutex
	var ids []string
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				n := w*perWriter + i
				id, err := s.PutFinding(ctx, record(n, t0.Add(time.Duration(n)*time.Second)))
				if err == nil {
					err = s.Audit(ctx, AuditEntry{Who: "U1", What: "/netdiag", Result: "ok", FindingID: id})
				}
				if err == nil {
					_, err = s.Enqueue(ctx, Message{Channel: "C1", Kind: "finding", Payload: []byte(id)})
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	var rg sync.WaitGroup
	for r := range readers {
		rg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				target, _, _ := storetest.Target(r)
				h, err := s.History(ctx, HistoryQuery{Target: target})
				if err == nil && len(h) > 0 {
					_, err = s.Finding(ctx, h[0].ID, true)
				}
				if err == nil {
					_, err = s.Due(ctx, t0.Add(time.Hour*1e4), 100)
				}
				if err == nil {
					_, err = s.Usage(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	u, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Findings != writers*perWriter || u.Audit != writers*perWriter || u.Outbox != writers*perWriter || len(ids) != writers*perWriter {
		t.Fatalf("after %d writes each: %+v, %d IDs", writers*perWriter, u, len(ids))
	}
	all, err := s.History(ctx, HistoryQuery{Limit: MaxHistory})
	if err != nil || len(all) != writers*perWriter {
		t.Fatalf("history of all: %d, %v", len(all), err)
	}
}
