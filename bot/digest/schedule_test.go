package digest

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// guard bounds every wait of a test on the scheduler's goroutine, so that a
// bug fails the test instead of hanging it; working code never waits for it.
const guard = 10 * time.Second

var berlin = mustLoad("Europe/Berlin")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// call is one call of the RunFunc, held until the test answers it.
type call struct {
	slot, now time.Time
	reply     chan error
}

// harness runs a Scheduler on a fake clock and hands the test each call.
type harness struct {
	t      *testing.T
	clk    *fakeClock
	s      *Scheduler
	calls  chan call
	done   chan error
	cancel context.CancelFunc
}

func startScheduler(t *testing.T, spec Spec, last, now time.Time, opts ...Option) *harness {
	t.Helper()
	clk := newFakeClock(now)
	opts = append([]Option{WithClock(clk), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	s, err := NewScheduler(spec, last, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	h := &harness{t: t, clk: clk, s: s, calls: make(chan call), done: make(chan error, 1), cancel: cancel}
	go func() {
		h.done <- s.Run(ctx, func(ctx context.Context, got Spec, slot time.Time) error {
			if got != spec {
				t.Errorf("RunFunc got spec %+v, want %+v", got, spec)
			}
			c := call{slot: slot, now: clk.Now(), reply: make(chan error, 1)}
			select {
			case h.calls <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case err := <-c.reply:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(h.stop)
	return h
}

// next moves the clock from wait to wait until the scheduler calls its
// RunFunc, and returns that call (unanswered).
func (h *harness) next() call {
	h.t.Helper()
	deadline := time.After(guard)
	for {
		if at, ok := h.clk.earliest(); ok {
			h.clk.set(at)
		}
		select {
		case c := <-h.calls:
			return c
		case err := <-h.done:
			h.t.Fatalf("Run returned %v while a call was expected", err)
		case <-h.clk.added:
		case <-deadline:
			h.t.Fatalf("no call of the RunFunc within %v", guard)
		}
	}
}

// answer completes the call c and returns it.
func (h *harness) answer(c call, err error) call {
	c.reply <- err
	return c
}

func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v after cancel, want nil", err)
		}
		h.done <- nil
	case <-time.After(guard):
		h.t.Errorf("Run did not return within %v of cancel", guard)
	}
}

func weekdays9(tz string) Spec {
	return Spec{Name: "netops", Schedule: "0 9 * * 1-5", TZ: tz, Channel: "#netops"}
}

func TestSchedulerSlots(t *testing.T) {
	utc := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	tests := []struct {
		name     string
		spec     Spec
		now      time.Time
		wantUTC  []string
		wantWall string // the slots' wall clock in the spec's zone
	}{
		{
			name: "weekdays 09:00 Berlin, over the weekend of spring forward",
			spec: weekdays9("Europe/Berlin"),
			now:  time.Date(2026, 3, 26, 10, 0, 0, 0, berlin), // Thu
			// Fri in CET (UTC+1), Mon and Tue in CEST (UTC+2).
			wantUTC:  []string{"2026-03-27T08:00:00Z", "2026-03-30T07:00:00Z", "2026-03-31T07:00:00Z"},
			wantWall: "09:00",
		},
		{
			name:     "weekdays 09:00 Berlin, over the weekend of fall back",
			spec:     weekdays9("Europe/Berlin"),
			now:      time.Date(2026, 10, 23, 9, 0, 0, 0, berlin), // Fri 09:00 exactly: not again
			wantUTC:  []string{"2026-10-26T08:00:00Z", "2026-10-27T08:00:00Z"},
			wantWall: "09:00",
		},
		{
			name:     "daily 09:00 Berlin on the spring-forward Sunday",
			spec:     Spec{Schedule: "0 9 * * *", TZ: "Europe/Berlin", Channel: "#netops"},
			now:      time.Date(2026, 3, 28, 12, 0, 0, 0, berlin),
			wantUTC:  []string{"2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"},
			wantWall: "09:00",
		},
		{
			// 02:30 does not exist on 29 March 2026 in Berlin: cron skips it.
			name:     "daily 02:30 Berlin skips the spring-forward day",
			spec:     Spec{Schedule: "30 2 * * *", TZ: "Europe/Berlin", Channel: "#netops"},
			now:      time.Date(2026, 3, 28, 3, 0, 0, 0, berlin),
			wantUTC:  []string{"2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"},
			wantWall: "02:30",
		},
		{
			// 02:30 happens twice on 25 October 2026 in Berlin: cron fires
			// at both (CEST, then CET).
			name:     "daily 02:30 Berlin fires twice on the fall-back day",
			spec:     Spec{Schedule: "30 2 * * *", TZ: "Europe/Berlin", Channel: "#netops"},
			now:      time.Date(2026, 10, 24, 3, 0, 0, 0, berlin),
			wantUTC:  []string{"2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"},
			wantWall: "02:30",
		},
		{
			name:     "empty tz is UTC",
			spec:     Spec{Schedule: "15 6 * * *", Channel: "C0123456789"},
			now:      time.Date(2026, 3, 28, 12, 0, 0, 0, berlin),
			wantUTC:  []string{"2026-03-29T06:15:00Z", "2026-03-30T06:15:00Z"},
			wantWall: "06:15",
		},
		{
			name:     "New York weekdays",
			spec:     Spec{Schedule: "0 9 * * 1-5", TZ: "America/New_York", Channel: "#noc"},
			now:      time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC), // Fri; US DST starts Sun 8 March
			wantUTC:  []string{"2026-03-06T14:00:00Z", "2026-03-09T13:00:00Z"},
			wantWall: "09:00",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startScheduler(t, tt.spec, time.Time{}, tt.now)
			for _, want := range tt.wantUTC {
				c := h.answer(h.next(), nil)
				if !c.slot.Equal(utc(want)) {
					t.Fatalf("slot %v (%v), want %v", c.slot, c.slot.UTC(), want)
				}
				if !c.now.Equal(c.slot) {
					t.Errorf("called at %v for slot %v, want at the slot", c.now, c.slot)
				}
				if got := c.slot.Format("15:04"); got != tt.wantWall {
					t.Errorf("slot %v: wall clock %s in %s, want %s", c.slot, got, c.slot.Location(), tt.wantWall)
				}
				if c.slot.Location().String() != h.s.Location().String() {
					t.Errorf("slot %v is in %v, want the spec's zone %v", c.slot, c.slot.Location(), h.s.Location())
				}
			}
		})
	}
}

func TestSchedulerCatchUp(t *testing.T) {
	mon9 := time.Date(2026, 6, 1, 9, 0, 0, 0, berlin) // Monday
	tests := []struct {
		name      string
		spec      Spec
		last, now time.Time
		// catchUp is the slot posted at once on start, zero for none.
		catchUp time.Time
		// next is the first slot after that.
		next time.Time
	}{
		{
			name:    "down Tuesday to Thursday afternoon: one digest at start, for Thursday",
			spec:    weekdays9("Europe/Berlin"),
			last:    mon9,
			now:     time.Date(2026, 6, 4, 14, 0, 0, 0, berlin),
			catchUp: time.Date(2026, 6, 4, 9, 0, 0, 0, berlin),
			next:    time.Date(2026, 6, 5, 9, 0, 0, 0, berlin),
		},
		{
			name:    "down over a weekend: Friday's digest at start, Monday's at 09:00",
			spec:    weekdays9("Europe/Berlin"),
			last:    time.Date(2026, 6, 4, 9, 0, 0, 0, berlin),
			now:     time.Date(2026, 6, 8, 7, 30, 0, 0, berlin),
			catchUp: time.Date(2026, 6, 5, 9, 0, 0, 0, berlin),
			next:    time.Date(2026, 6, 8, 9, 0, 0, 0, berlin),
		},
		{
			name: "restart before the next slot: nothing missed",
			spec: weekdays9("Europe/Berlin"),
			last: mon9,
			now:  time.Date(2026, 6, 1, 15, 0, 0, 0, berlin),
			next: time.Date(2026, 6, 2, 9, 0, 0, 0, berlin),
		},
		{
			name: "never ran: no catch-up",
			spec: weekdays9("Europe/Berlin"),
			now:  time.Date(2026, 6, 4, 14, 0, 0, 0, berlin),
			next: time.Date(2026, 6, 5, 9, 0, 0, 0, berlin),
		},
		{
			name: "last run in the future (clock stepped back): not repeated",
			spec: weekdays9("Europe/Berlin"),
			last: time.Date(2026, 6, 3, 9, 0, 0, 0, berlin),
			now:  time.Date(2026, 6, 1, 15, 0, 0, 0, berlin),
			next: time.Date(2026, 6, 4, 9, 0, 0, 0, berlin),
		},
		{
			name:    "every minute, down for a year: one digest, for the latest minute",
			spec:    Spec{Schedule: "* * * * *", TZ: "Europe/Berlin", Channel: "#netops"},
			last:    time.Date(2025, 6, 1, 9, 0, 0, 0, berlin),
			now:     time.Date(2026, 6, 1, 9, 0, 30, 0, berlin),
			catchUp: time.Date(2026, 6, 1, 9, 0, 0, 0, berlin),
			next:    time.Date(2026, 6, 1, 9, 1, 0, 0, berlin),
		},
		{
			name:    "missed exactly one slot, started on it",
			spec:    weekdays9("Europe/Berlin"),
			last:    mon9,
			now:     time.Date(2026, 6, 2, 9, 0, 0, 0, berlin),
			catchUp: time.Date(2026, 6, 2, 9, 0, 0, 0, berlin),
			next:    time.Date(2026, 6, 3, 9, 0, 0, 0, berlin),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startScheduler(t, tt.spec, tt.last, tt.now)
			if !tt.catchUp.IsZero() {
				c := h.answer(h.next(), nil)
				if !c.slot.Equal(tt.catchUp) {
					t.Fatalf("catch-up for slot %v, want %v", c.slot, tt.catchUp)
				}
				if !c.now.Equal(tt.now) {
					t.Fatalf("catch-up ran at %v, want at start (%v)", c.now, tt.now)
				}
			}
			c := h.next()
			if !c.slot.Equal(tt.next) || !c.now.Equal(tt.next) {
				t.Fatalf("next call for slot %v at %v, want %v at the slot", c.slot, c.now, tt.next)
			}
			// Read while the next call is held, so after the first one ended.
			if want := cmp.Or(tt.catchUp, tt.last); !h.s.Last().Equal(want) {
				t.Errorf("Last() = %v before the slot after the catch-up, want %v", h.s.Last(), want)
			}
			h.answer(c, nil)
		})
	}
}

func TestSchedulerFailure(t *testing.T) {
	spec := weekdays9("Europe/Berlin")
	mon9 := time.Date(2026, 6, 1, 9, 0, 0, 0, berlin)
	tue9 := mon9.AddDate(0, 0, 1)
	wed9 := mon9.AddDate(0, 0, 2)
	failed := errors.New("slack: channel_not_found")

	t.Run("retried with back-off, Last advances on success only", func(t *testing.T) {
		h := startScheduler(t, spec, mon9, mon9.Add(time.Hour), WithRetry(time.Minute, 4*time.Minute))
		wantAt := []time.Time{tue9, tue9.Add(1 * time.Minute), tue9.Add(3 * time.Minute), tue9.Add(7 * time.Minute), tue9.Add(11 * time.Minute)}
		for i, at := range wantAt {
			c := h.next()
			if !c.slot.Equal(tue9) || !c.now.Equal(at) {
				t.Fatalf("try %d: slot %v at %v, want slot %v at %v", i+1, c.slot, c.now, tue9, at)
			}
			if i < len(wantAt)-1 {
				h.answer(c, failed)
				if got := h.s.Last(); !got.Equal(mon9) {
					t.Fatalf("Last() = %v after a failure, want still %v", got, mon9)
				}
			} else {
				h.answer(c, nil)
			}
		}
		c := h.answer(h.next(), nil)
		if !c.slot.Equal(wed9) {
			t.Fatalf("after the retry succeeded: slot %v, want %v", c.slot, wed9)
		}
		if got := h.s.Last(); !got.Equal(tue9) {
			// Last is read while the next call is held: it is Tuesday's.
			t.Errorf("Last() = %v, want %v", got, tue9)
		}
	})

	t.Run("failing until the next slot: that slot's digest takes over", func(t *testing.T) {
		h := startScheduler(t, spec, mon9, mon9.Add(time.Hour), WithRetry(6*time.Hour, 12*time.Hour))
		h.answer(h.next(), failed) // Tue 09:00
		h.answer(h.next(), failed) // Tue 15:00
		h.answer(h.next(), failed) // Wed 03:00 (12 h): the next retry would pass Wed 09:00
		c := h.next()
		if !c.slot.Equal(wed9) || !c.now.Equal(wed9) {
			t.Fatalf("slot %v at %v, want Wednesday's slot %v on time", c.slot, c.now, wed9)
		}
		if got := h.s.Last(); !got.Equal(mon9) {
			t.Fatalf("Last() = %v, want %v: Wednesday's digest covers Tuesday's too", got, mon9)
		}
		h.answer(c, nil)
	})

	t.Run("a panic is a failure, not a crash", func(t *testing.T) {
		clk := newFakeClock(mon9.Add(time.Hour))
		var logs strings.Builder
		s, err := NewScheduler(spec, mon9, WithClock(clk), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		calls := make(chan time.Time, 1)
		go func() {
			done <- s.Run(ctx, func(ctx context.Context, _ Spec, slot time.Time) error {
				calls <- clk.Now()
				panic("boom")
			})
		}()
		deadline := time.After(guard)
	wait:
		for {
			if at, ok := clk.earliest(); ok {
				clk.set(at)
			}
			select {
			case at := <-calls:
				if !at.Equal(tue9) {
					t.Fatalf("first call at %v, want %v", at, tue9)
				}
				break wait
			case <-clk.added:
			case <-deadline:
				t.Fatal("no call")
			}
		}
		// The retry's wait shows the panic was survived.
		for {
			if at, ok := clk.earliest(); ok {
				if want := tue9.Add(time.Minute); !at.Equal(want) {
					t.Fatalf("retry at %v, want %v", at, want)
				}
				break
			}
			select {
			case <-clk.added:
			case <-deadline:
				t.Fatal("no retry scheduled after the panic")
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), "panicked: boom") {
			t.Errorf("log does not name the panic:\n%s", logs.String())
		}
	})
}

func TestSchedulerCancel(t *testing.T) {
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, berlin)
	h := startScheduler(t, weekdays9("Europe/Berlin"), time.Time{}, now)
	if at, ok := waitForWaiter(t, h.clk); !ok || !at.After(now) {
		t.Fatalf("scheduler waits until %v, want a wait", at)
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run = %v, want nil on cancel", err)
		}
		h.done <- nil
	case <-time.After(guard):
		t.Fatal("Run did not return on cancel")
	}
}

func TestSchedulerLongWaitsWakeHourly(t *testing.T) {
	now := time.Date(2026, 6, 5, 10, 0, 0, 0, berlin) // Fri: next slot Mon 09:00
	h := startScheduler(t, weekdays9("Europe/Berlin"), time.Time{}, now)
	at, _ := waitForWaiter(t, h.clk)
	if want := now.Add(time.Hour); !at.Equal(want) {
		t.Fatalf("first wait ends at %v, want %v (at most an hour)", at, want)
	}
	// A wall clock stepped forward past two slots is noticed at the next
	// wake-up, not three days later, and gives one digest, for the latest.
	h.clk.set(time.Date(2026, 6, 9, 9, 30, 0, 0, berlin))
	c := h.answer(h.next(), nil)
	if want := time.Date(2026, 6, 9, 9, 0, 0, 0, berlin); !c.slot.Equal(want) {
		t.Fatalf("slot %v, want %v", c.slot, want)
	}
	c = h.answer(h.next(), nil)
	if want := time.Date(2026, 6, 10, 9, 0, 0, 0, berlin); !c.slot.Equal(want) || !c.now.Equal(want) {
		t.Fatalf("slot %v at %v, want %v on time", c.slot, c.now, want)
	}
}

func waitForWaiter(t *testing.T, clk *fakeClock) (time.Time, bool) {
	t.Helper()
	deadline := time.After(guard)
	for {
		if at, ok := clk.earliest(); ok {
			return at, true
		}
		select {
		case <-clk.added:
		case <-deadline:
			t.Fatal("the scheduler did not wait on the clock")
			return time.Time{}, false
		}
	}
}

func TestNewSchedulerRejects(t *testing.T) {
	if _, err := NewScheduler(Spec{Schedule: "0 9 * *", Channel: "#x"}, time.Time{}); err == nil || !strings.Contains(err.Error(), "schedule") {
		t.Fatalf("err = %v, want a schedule error", err)
	}
	if _, err := NewScheduler(weekdays9("UTC"), time.Time{}, WithRetry(0, time.Minute)); err == nil {
		t.Fatal("a zero retry wait was accepted")
	}
}
