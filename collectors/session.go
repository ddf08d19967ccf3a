package collectors

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Run runs jobs in parallel on the target and returns their evidence in job
// order: Start, Probe, Finish in one go.
func Run(ctx context.Context, t *Target, jobs []Job, p *Params) []Evidence {
	s := Start(ctx, t, jobs, p)
	s.Probe()
	return s.Finish()
}

// Session is a run in its phases, so that the watches of several nodes can
// all be started before the probes leave the source: Start starts the
// watches (captures, the drops watch) and returns once every capture socket
// is bound and the drops program attached, the dumps already running; Probe
// lets the probes go; Finish waits for every job and ends the watches. A
// capture ends at its own bound (duration, packets, bytes), the drops watch
// at Finish.
type Session struct {
	out     []Evidence
	mu      sync.Mutex
	watches []running
	work    sync.WaitGroup
	probe   chan struct{}
	once    sync.Once
}

type running struct {
	i     int
	end   func() (any, error)
	start time.Time
}

// Start begins a run (see Session). The context bounds every job and watch
// of the session, so a session that is never finished still ends.
func Start(ctx context.Context, t *Target, jobs []Job, p *Params) *Session {
	if p == nil {
		p = &Params{}
	}
	if !p.Prepared && t.Source != nil {
		if err := Prepare(t, p, jobs); err != nil {
			slog.Warn("collectors: could not prepare the run; firewall traces may lack source addresses", "err", err)
		}
	}
	s := &Session{out: make([]Evidence, len(jobs)), probe: make(chan struct{})}
	var setup sync.WaitGroup
	for i, j := range jobs {
		if !IsWatch(j.Collector) {
			continue
		}
		ns := t.ns(j.Scope)
		s.out[i] = Evidence{Collector: j.Collector, Scope: j.Scope, Label: j.Label, Started: time.Now().UTC()}
		if ns == nil {
			s.out[i].setResult(nil, noNamespace(j.Scope))
			continue
		}
		s.out[i].Netns = ns.Path()
		setup.Go(func() {
			start := time.Now()
			var end func() (any, error)
			err := func() (err error) {
				defer Recover("watch "+j.Collector, &err)
				end, err = registry[j.Collector].watch(ctx, Input{NS: ns, Scope: j.Scope, Params: j.params(p)}, t)
				return err
			}()
			if err != nil {
				s.out[i].setResult(nil, err)
				return
			}
			s.mu.Lock()
			s.watches = append(s.watches, running{i, end, start})
			s.mu.Unlock()
		})
	}
	for i, j := range jobs {
		if IsWatch(j.Collector) {
			continue
		}
		s.work.Go(func() {
			if IsProbe(j.Collector) {
				select {
				case <-s.probe:
				case <-ctx.Done():
				}
			}
			s.out[i] = RunOne(ctx, t.ns(j.Scope), j.Scope, j.Collector, j.params(p))
			s.out[i].Label = j.Label
		})
	}
	setup.Wait()
	return s
}

// Probe lets the session's probes go. Calling it again does nothing.
func (s *Session) Probe() { s.once.Do(func() { close(s.probe) }) }

// Finish waits for every job, ends the watches and returns the evidence in
// job order. Probes that were never let go run now, so that no job is left
// without evidence.
func (s *Session) Finish() []Evidence {
	s.Probe()
	s.work.Wait()
	// Each watch ends its own way: the drops watch at once, a capture at
	// its duration, packet or byte bound.
	var ending sync.WaitGroup
	for _, r := range s.watches {
		ending.Go(func() {
			data, err := func() (data any, err error) {
				defer Recover("watch "+s.out[r.i].Collector, &err)
				return r.end()
			}()
			s.out[r.i].setResult(data, err)
			s.out[r.i].DurationMS = float64(time.Since(r.start).Microseconds()) / 1000
		})
	}
	ending.Wait()
	return s.out
}
