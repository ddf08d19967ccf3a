package digest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/store"
)

// Poster delivers a digest: the bot's Slack poster (the digest's text and
// its chart uploaded beside it), or a test's recorder.
type Poster interface {
	PostDigest(ctx context.Context, spec Spec, d *Digest, chart []byte) error
}

// Sweeper runs the active check from every node for a digest that asks
// for one (through the nodes' agents).
type Sweeper func(ctx context.Context) (*sweep.Table, error)

// Service runs the configured digests: one Scheduler each, whose last slot
// is kept in the store, so that a restart neither repeats a digest nor
// skips one (a slot missed while the bot was down is posted once when it
// starts, covering everything since the last one).
type Service struct {
	Store *store.Store
	Specs []Spec
	Post  Poster
	Sweep Sweeper
	Clock Clock
	Log   *slog.Logger
}

// Run runs every digest until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	clock := s.Clock
	if clock == nil {
		clock = SystemClock()
	}
	var scheds []*Scheduler
	for _, spec := range s.Specs {
		last, err := s.lastSlot(ctx, spec)
		if err != nil {
			return err
		}
		sc, err := NewScheduler(spec, last, WithClock(clock), WithLogger(log))
		if err != nil {
			return err
		}
		scheds = append(scheds, sc)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(scheds))
	for i, sc := range scheds {
		wg.Go(func() {
			errs[i] = sc.Run(ctx, func(ctx context.Context, spec Spec, slot time.Time) error {
				if err := s.post(ctx, spec, sc.Last(), slot); err != nil {
					return err
				}
				// Kept only once delivered: a digest that failed is
				// covered by the next one. Once delivered it is kept even
				// if the bot is stopping, or the next start would post it
				// again.
				kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				return s.Store.PutDigest(kctx, store.DigestState{Name: spec.Key(), LastRun: clock.Now(), LastSlot: slot})
			})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Now builds and posts a digest at once ("/netdiag digest"), covering the
// time since the spec's last scheduled one; the schedule does not move.
func (s *Service) Now(ctx context.Context, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	last, err := s.lastSlot(ctx, spec)
	if err != nil {
		return err
	}
	now := time.Now()
	if s.Clock != nil {
		now = s.Clock.Now()
	}
	return s.post(ctx, spec, last, now)
}

func (s *Service) lastSlot(ctx context.Context, spec Spec) (time.Time, error) {
	st, err := s.Store.Digest(ctx, spec.Key())
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("digest %q: last run: %w", spec.Key(), err)
	}
	return st.LastSlot, nil
}

// post collects the period, sweeps when asked, builds and delivers.
func (s *Service) post(ctx context.Context, spec Spec, from, to time.Time) error {
	_, loc, err := spec.compile()
	if err != nil {
		return err
	}
	p, err := Collect(ctx, s.Store, from, to.In(loc))
	if err != nil {
		return fmt.Errorf("digest %q: %w", spec.Key(), err)
	}
	if spec.Sweep && s.Sweep != nil {
		t, err := s.Sweep(ctx)
		if err != nil {
			// A digest without its sweep still goes out; it says why.
			p.Sweep = &SweepTable{At: to.In(loc), Rows: []SweepRow{{Node: "sweep failed: " + err.Error()}}}
		} else {
			p.Sweep = FromSweep(t, to.In(loc))
		}
	}
	d := Build(p)
	var chart bytes.Buffer
	if err := d.ChartPNG(&chart); err != nil {
		return fmt.Errorf("digest %q: chart: %w", spec.Key(), err)
	}
	return s.Post.PostDigest(ctx, spec, d, chart.Bytes())
}
