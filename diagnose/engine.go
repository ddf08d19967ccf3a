package diagnose

import (
	"context"
	"log/slog"
	"time"
)

// Engine answers requests: plan, run through the Runner, classify.
type Engine struct {
	Runner Runner
	Log    *slog.Logger
}

// Diagnose produces one Finding for the request. An error means no finding
// could be produced at all (a bad request, a runner that failed); a probe
// that fails is evidence, not an error.
func (e *Engine) Diagnose(ctx context.Context, r *Request) (*Finding, error) {
	log := e.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	plan, err := NewPlan(r)
	if err != nil {
		return nil, err
	}
	planned := time.Now()
	log.Debug("plan", "jobs", plan.String())
	evs, err := e.Runner.Run(ctx, plan)
	if err != nil {
		return nil, err
	}
	collected := time.Now()
	f := classify(r, evs, log)
	f.Timings.PlanMS = planned.Sub(start).Milliseconds()
	f.Timings.CollectMS = collected.Sub(planned).Milliseconds()
	f.Timings.ClassifyMS = time.Since(collected).Milliseconds()
	f.Timings.TotalMS = time.Since(start).Milliseconds()
	log.Info("diagnosis", "verdict", f.Class+"/"+f.Cause, "confidence", f.Confidence, "family", f.Family, "took_ms", f.Timings.TotalMS)
	return f, nil
}
