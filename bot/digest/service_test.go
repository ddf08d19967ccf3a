package digest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/store"
	"github.com/netdiag/netdiag/store/storetest"
)

type recorder struct {
	mu    sync.Mutex
	posts []*Digest
	got   chan struct{}
}

func (r *recorder) PostDigest(_ context.Context, _ Spec, d *Digest, chart []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(chart) == 0 {
		panic("no chart")
	}
	r.posts = append(r.posts, d)
	r.got <- struct{}{}
	return nil
}

// TestServiceAcrossRestarts: a digest posts at its slot; the bot is down
// for three slots; when it starts again one digest goes out, covering all
// of the time since the last one, and the schedule goes on from there.
// The last slot lives in the store, as across a real restart.
func TestServiceAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "netdiag.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mon := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC) // a Monday
	for i := range 96 {
		tg, _, node := storetest.Target(i % 5)
		f := storetest.Finding(i, mon.Add(-24*time.Hour).Add(time.Duration(i)*time.Hour))
		if _, err := st.PutFinding(ctx, &store.FindingRecord{FindingSummary: store.FindingSummary{Target: tg, Node: node}, Finding: f}); err != nil {
			t.Fatal(err)
		}
	}
	spec := Spec{Name: "morning", Schedule: "0 9 * * *", TZ: "UTC", Channel: "#netops"}
	rec := &recorder{got: make(chan struct{}, 8)}
	run := func(clk *fakeClock) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		svc := &Service{Store: st, Specs: []Spec{spec}, Post: rec, Clock: clk}
		go func() { svc.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}
	wait := func() {
		select {
		case <-rec.got:
		case <-time.After(10 * time.Second):
			t.Fatal("no digest posted")
		}
	}

	// Monday: the bot runs; at 09:00 the digest goes out.
	clk := newFakeClock(mon)
	stop := run(clk)
	if at, _ := waitForWaiter(t, clk); at.After(mon.Add(time.Hour)) {
		t.Fatalf("waits until %v, want 09:00", at)
	}
	clk.set(mon.Add(time.Hour))
	wait()
	stop()
	if s, err := st.Digest(ctx, spec.Key()); err != nil || !s.LastSlot.Equal(mon.Add(time.Hour)) {
		t.Fatalf("stored state %+v %v, want the 09:00 slot", s, err)
	}

	// Down Tuesday to Thursday; back on Thursday at 10:00: one digest, for
	// Thursday's slot, covering Monday 09:00 to Thursday 09:00.
	thu := mon.Add(3*24*time.Hour + 2*time.Hour)
	clk = newFakeClock(thu)
	stop = run(clk)
	wait()
	// It then waits (an hour at most at a time, to notice a clock
	// change) for Friday 09:00, not for another catch-up.
	if at, _ := waitForWaiter(t, clk); !at.After(thu) || at.After(mon.Add(4*24*time.Hour+time.Hour)) {
		t.Errorf("then waits until %v, want a wait towards Friday 09:00", at)
	}
	stop()
	select {
	case <-rec.got:
		t.Fatal("a missed slot was posted more than once")
	default:
	}
	if len(rec.posts) != 2 {
		t.Fatalf("%d digests, want 2", len(rec.posts))
	}
	d := rec.posts[1]
	if !d.From.Equal(mon.Add(time.Hour)) || !d.To.Equal(mon.Add(3*24*time.Hour+time.Hour)) {
		t.Errorf("the catch-up covers %v to %v, want Monday 09:00 to Thursday 09:00", d.From, d.To)
	}
	if rec.posts[0].Total == 0 {
		t.Error("Monday's digest holds no finding")
	}

	// "/netdiag digest": now, from the last slot; the schedule stays.
	svc := &Service{Store: st, Specs: []Spec{spec}, Post: rec, Clock: newFakeClock(thu.Add(time.Hour))}
	if err := svc.Now(ctx, spec); err != nil {
		t.Fatal(err)
	}
	<-rec.got
	if s, _ := st.Digest(ctx, spec.Key()); !s.LastSlot.Equal(mon.Add(3*24*time.Hour + time.Hour)) {
		t.Errorf("a digest now moved the schedule to %v", s.LastSlot)
	}
}
