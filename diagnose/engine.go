package diagnose

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// Engine answers requests: plan, run through the Runner, classify.
type Engine struct {
	Runner Runner
	Log    *slog.Logger
	// Progress, when set, hears each step as it starts, in words a person
	// waiting for the answer understands ("collecting on node-a, node-b",
	// "classifying"); the bot shows them in place.
	Progress func(step string)
}

func (e *Engine) progress(step string) {
	if e.Progress != nil {
		e.Progress(step)
	}
}

// collectingStep names where the evidence comes from.
func collectingStep(plan *Plan) string {
	var nodes []string
	for _, p := range plan.Split() {
		if p.Node != "" {
			nodes = append(nodes, p.Node)
		}
	}
	if len(nodes) == 0 {
		return "collecting"
	}
	return "collecting on " + strings.Join(nodes, ", ")
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
	e.progress(collectingStep(plan))
	evs, err := e.Runner.Run(ctx, plan)
	if err != nil {
		return nil, err
	}
	collected := time.Now()
	e.progress("classifying")
	f := classify(r, evs, log)
	f.Timings.PlanMS = planned.Sub(start).Milliseconds()
	f.Timings.CollectMS = collected.Sub(planned).Milliseconds()
	f.Timings.ClassifyMS = time.Since(collected).Milliseconds()
	f.Timings.TotalMS = time.Since(start).Milliseconds()
	log.Info("diagnosis", "verdict", f.Class+"/"+f.Cause, "confidence", f.Confidence, "family", f.Family, "took_ms", f.Timings.TotalMS)
	return f, nil
}
