package digest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Clock is the scheduler's view of time, so that tests drive it without
// sleeping.
type Clock interface {
	Now() time.Time
	// After delivers once, d after now (at once when d <= 0).
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// SystemClock is the machine's clock.
func SystemClock() Clock { return systemClock{} }

// RunFunc builds and posts the digest for one slot. It returns nil only once
// the digest is delivered (and, for the caller that persists it, once slot is
// stored as the digest's last run). The digest's period is (Last(), slot]:
// Last is read before the call, from the Scheduler that calls it.
type RunFunc func(ctx context.Context, spec Spec, slot time.Time) error

// Scheduler fires one digest at the slots of its Spec's schedule, read in
// the Spec's time zone.
//
// Slots come from robfig/cron's Schedule.Next, so daylight saving time is
// what cron makes of it: a slot in the skipped hour (02:30 on the day
// Europe/Berlin springs forward) does not fire that day, and a slot in the
// repeated hour (02:30 on the day it falls back) fires twice, once per
// offset. Slots outside those hours (09:00) fire once a day at 09:00 local
// time on both sides of the change.
//
// A slot that passed while the bot was down is posted once when Run starts,
// however many were missed ("catch-up"), for the latest missed slot; the
// next one is the first slot after that start.
//
// A failed digest is never lost: Last stays where it was, so the next digest
// covers its period too. The failed slot is retried after a back-off
// (1, 2, 4 ... minutes, at most 30) as long as that comes before the next
// slot; then the next slot takes over. A restart retries it too, through the
// catch-up, as long as the caller persists only successful runs.
type Scheduler struct {
	spec  Spec
	sched cron.Schedule
	loc   *time.Location
	clock Clock
	log   *slog.Logger

	retryFirst, retryMax time.Duration
	maxWait              time.Duration

	mu   sync.Mutex
	last time.Time
}

// Option changes a Scheduler's defaults.
type Option func(*Scheduler)

// WithClock replaces the machine's clock (tests).
func WithClock(c Clock) Option { return func(s *Scheduler) { s.clock = c } }

// WithLogger sets the logger; the default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(s *Scheduler) { s.log = l } }

// WithRetry sets the first and the longest wait before a failed digest is
// tried again (default 1 and 30 minutes).
func WithRetry(first, longest time.Duration) Option {
	return func(s *Scheduler) { s.retryFirst, s.retryMax = first, longest }
}

// NewScheduler checks spec and returns its scheduler. last is the slot of the
// digest's last successful run as the store remembers it, the zero time if it
// never ran (then nothing is caught up).
func NewScheduler(spec Spec, last time.Time, opts ...Option) (*Scheduler, error) {
	sched, loc, err := spec.compile()
	if err != nil {
		return nil, fmt.Errorf("digest %q: %w", spec.Key(), err)
	}
	s := &Scheduler{
		spec:       spec,
		sched:      sched,
		loc:        loc,
		clock:      systemClock{},
		log:        slog.Default(),
		retryFirst: time.Minute,
		retryMax:   30 * time.Minute,
		// A timer runs on the monotonic clock; waking at least hourly keeps
		// a slot on time when the wall clock is stepped or the machine
		// sleeps.
		maxWait: time.Hour,
		last:    last,
	}
	for _, o := range opts {
		o(s)
	}
	if s.retryFirst <= 0 || s.retryMax < s.retryFirst {
		return nil, fmt.Errorf("digest %q: retry waits %v and %v: accepted: a positive first wait no longer than the longest", spec.Key(), s.retryFirst, s.retryMax)
	}
	s.log = s.log.With("digest", spec.Key())
	return s, nil
}

// Spec returns the digest's configuration.
func (s *Scheduler) Spec() Spec { return s.spec }

// Location is the time zone the schedule is read in.
func (s *Scheduler) Location() *time.Location { return s.loc }

// Last returns the slot of the last successful digest (the zero time if
// none): the start of the next digest's period.
func (s *Scheduler) Last() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// NextAfter returns the first slot after t, in the digest's time zone, or the
// zero time if the schedule has none within five years.
func (s *Scheduler) NextAfter(t time.Time) time.Time {
	return s.sched.Next(t.In(s.loc))
}

// errNoSlot stops Run: a valid schedule always has a next slot, so this only
// guards against looping on the zero time.
var errNoSlot = errors.New("the schedule has no further slot within five years")

// Run calls fn at each slot until ctx is done, then returns nil. Calls are
// sequential; a panic in fn counts as a failure.
func (s *Scheduler) Run(ctx context.Context, fn RunFunc) error {
	now := s.clock.Now()
	last := s.Last()
	var slot, due time.Time
	if missed := s.latestSlot(last, now); !missed.IsZero() {
		slot, due = missed, now
		s.log.Info("digest missed while netdiag was down: posting it now, once", "slot", missed, "last", last)
	} else {
		// A last run in the future (a clock stepped back) must not be
		// repeated.
		slot = s.NextAfter(later(last, now))
		due = slot
	}
	if slot.IsZero() {
		return fmt.Errorf("digest %q: %w", s.spec.Key(), errNoSlot)
	}
	s.log.Debug("digest scheduled", "slot", slot)

	failures := 0
	for {
		if err := s.waitUntil(ctx, due); err != nil {
			return nil
		}
		// Woken after more slots passed (the machine slept, the clock was
		// stepped): one digest, for the latest, as after downtime.
		if m := s.latestSlot(slot, s.clock.Now()); !m.IsZero() {
			slot = m
		}
		err := s.call(ctx, fn, slot)
		if err == nil {
			s.mu.Lock()
			s.last = slot
			s.mu.Unlock()
		}
		if ctx.Err() != nil {
			if err != nil {
				s.log.Warn("digest interrupted by shutdown; the next start posts it", "slot", slot, "err", err)
			}
			return nil
		}
		now = s.clock.Now()
		next := s.NextAfter(later(slot, now))
		if err == nil {
			failures = 0
			s.log.Info("digest posted", "slot", slot, "next", next)
			slot, due = next, next
		} else {
			retryAt := now.Add(s.backoff(failures))
			failures++
			if next.IsZero() || retryAt.Before(next) {
				s.log.Warn("digest failed; retrying", "slot", slot, "retry_at", retryAt, "err", err)
				due = retryAt
			} else {
				s.log.Warn("digest failed; the next slot's digest covers its period", "slot", slot, "next", next, "err", err)
				slot, due, failures = next, next, 0
			}
		}
		if slot.IsZero() {
			return fmt.Errorf("digest %q: %w", s.spec.Key(), errNoSlot)
		}
	}
}

// waitUntil returns when the clock reaches t, or ctx's error.
func (s *Scheduler) waitUntil(ctx context.Context, t time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := t.Sub(s.clock.Now())
		if d <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clock.After(min(d, s.maxWait)):
		}
	}
}

func (s *Scheduler) call(ctx context.Context, fn RunFunc, slot time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("digest for %v panicked: %v\n%s", slot, r, debug.Stack())
		}
	}()
	return fn(ctx, s.spec, slot)
}

func (s *Scheduler) backoff(failures int) time.Duration {
	d := s.retryFirst
	for range failures {
		if d >= s.retryMax/2 {
			return s.retryMax
		}
		d *= 2
	}
	return min(d, s.retryMax)
}

// latestSlot returns the latest slot in (last, now], or the zero time when
// last is zero or no slot passed since.
func (s *Scheduler) latestSlot(last, now time.Time) time.Time {
	if last.IsZero() {
		return time.Time{}
	}
	first := s.NextAfter(last)
	if first.IsZero() || first.After(now) {
		return time.Time{}
	}
	// Walking slot by slot from last could take a year of minutes; look back
	// from now in doubling windows for a start close to the latest slot.
	from := first
	for w := time.Minute; w < 100*365*24*time.Hour; w *= 2 {
		start := now.Add(-w)
		if !start.After(last) {
			break
		}
		if c := s.NextAfter(start); !c.IsZero() && !c.After(now) {
			from = c
			break
		}
	}
	latest := from
	for {
		n := s.NextAfter(latest)
		if n.IsZero() || n.After(now) {
			return latest
		}
		latest = n
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
