package diagnose

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
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
	f := Classify(r, evs)
	f.Timings.PlanMS = planned.Sub(start).Milliseconds()
	f.Timings.CollectMS = collected.Sub(planned).Milliseconds()
	f.Timings.ClassifyMS = time.Since(collected).Milliseconds()
	f.Timings.TotalMS = time.Since(start).Milliseconds()
	log.Info("diagnosis", "verdict", f.Class+"/"+f.Cause, "confidence", f.Confidence, "took_ms", f.Timings.TotalMS)
	return f, nil
}

// notApplicable are rule answers that only say the rule had nothing to look
// at; they are left out of also_considered.
var notApplicable = []string{
	"no DNS question", "no TCP probe", "no destination", "the destination is not a Service",
	"the question is not about a Service", "no destination to route to", "the DNS endpoints were not asked directly",
	"the destination's sockets were not read", "the node's rules were not read", "no path-MTU evidence",
	"connects were not refused", "every probe got through",
}

// Classify runs the rule chain over the evidence.
func Classify(r *Request, evs []collectors.Evidence) *Finding {
	f := readFacts(r, evs)
	out := &Finding{Question: r.Question, Raw: evs, At: time.Now().UTC(), Timings: Timings{CollectorsMS: map[string]float64{}}}
	for _, ev := range evs {
		k := ev.Collector + "@" + string(ev.Scope)
		if ev.Label != "" {
			k += "(" + ev.Label + ")"
		}
		out.Timings.CollectorsMS[k] = ev.DurationMS
	}
	if f.capture != nil {
		p := f.capture.File
		out.Pcap = &p
	}
	var considered []Considered
	var chosen *match
	var verdict Verdict
	for _, rl := range rules {
		if chosen != nil {
			// Report why the rest did not apply too, so the reader sees
			// what was checked.
			if _, why := rl.check(f); why != "" && !slices.Contains(notApplicable, why) && rl.verdict != verdict {
				considered = appendConsidered(considered, rl.verdict, why)
			}
			continue
		}
		m, why := rl.check(f)
		if m == nil {
			if why != "" && !slices.Contains(notApplicable, why) {
				considered = appendConsidered(considered, rl.verdict, why)
			}
			continue
		}
		chosen, verdict = m, rl.verdict
		if m.verdict != nil {
			verdict = *m.verdict
		}
	}
	// A rule's own verdict may be ruled out above under another rule's name.
	considered = slices.DeleteFunc(considered, func(c Considered) bool { return c.Class == verdict.Class && c.Cause == verdict.Cause })
	switch {
	case chosen != nil:
		out.Class, out.Cause = verdict.Class, verdict.Cause
		out.Confidence, out.Summary = chosen.confidence, chosen.summary
		out.Evidence, out.NextSteps = chosen.evidence, chosen.next
		out.AlsoConsidered = append(chosen.alternatives, considered...)
	default:
		bad, fails := f.failing()
		if !bad && len(f.failures) == 0 {
			out.Class, out.Cause = Healthy.Class, Healthy.Cause
			out.Confidence = 0.9
			out.Evidence = f.checked()
			out.Summary = "Every probe passed and nothing on the path is misconfigured: " + summarizeChecked(out.Evidence)
			out.AlsoConsidered = considered
			out.NextSteps = []string{"If the application still fails, look above the network: its logs, TLS, HTTP status codes; or run again with --capture to see the traffic."}
			break
		}
		out.Class, out.Cause = Insufficient.Class, Insufficient.Cause
		out.Confidence = 0.3
		out.Evidence = append(fails, f.failures...)
		out.Summary = "Probes failed, but the evidence does not single out a cause."
		out.AlsoConsidered = considered
		out.NextSteps = []string{
			"Run again with --peer-netns (the destination's namespace) and --node-netns, so both ends and the node are read.",
			"Run with --capture 5s to record the probes' packets at both ends.",
		}
	}
	out.Evidence = f.withDrops(out.Evidence)
	if out.Evidence == nil {
		out.Evidence = []Observation{}
	}
	if out.AlsoConsidered == nil {
		out.AlsoConsidered = []Considered{}
	}
	if out.NextSteps == nil {
		out.NextSteps = []string{}
	}
	return out
}

func appendConsidered(cs []Considered, v Verdict, why string) []Considered {
	for _, c := range cs {
		if c.Class == v.Class && c.Cause == v.Cause {
			return cs
		}
	}
	return append(cs, Considered{Class: v.Class, Cause: v.Cause, RuledOutBy: why})
}

// checked lists what a healthy finding checked.
func (f *facts) checked() []Observation {
	var out []Observation
	if f.ping != nil {
		out = append(out, obs("ping", "%d/%d ICMP echoes to %s answered, avg %.2f ms", f.ping.Received, f.ping.Sent, f.ping.Dst, f.ping.AvgMS))
	}
	if f.tcp != nil {
		out = append(out, obs("tcp", "%d/%d TCP connects to %s succeeded, avg %.2f ms", f.tcp.Connected, len(f.tcp.Attempts), f.tcp.Dst, f.tcp.AvgConnectMS))
	}
	if f.pmtu != nil {
		out = append(out, obs("pmtu", "full-size (%d bytes) DF packets reach %s", f.pmtu.PathMTU, f.pmtu.Dst))
	}
	if f.dns != nil {
		var names []string
		for _, l := range f.dns.Lookups {
			if l.Role == "resolv.conf" {
				names = append(names, fmt.Sprintf("%s -> %s", l.Name, strings.Join(l.Answers, ",")))
			}
		}
		out = append(out, obs("dns", "resolved %s", strings.Join(names, "; ")))
	}
	if l := f.links[collectors.ScopeSource]; l != nil {
		for _, lk := range l.Links {
			if lk.Name != "lo" {
				out = append(out, obs("links", "%s is up with carrier, MTU %d, %s", lk.Name, lk.MTU, strings.Join(lk.Addrs, ",")))
			}
		}
	}
	if r := f.routes[collectors.ScopeSource]; r != nil && r.Chosen != nil {
		out = append(out, obs("routes", "%s is reached via %s %s", r.Chosen.Dst, r.Chosen.Dev, r.Chosen.Gateway))
	}
	return out
}

func summarizeChecked(obs []Observation) string {
	var kinds []string
	for _, o := range obs {
		if !slices.Contains(kinds, o.Collector) {
			kinds = append(kinds, o.Collector)
		}
	}
	return strings.Join(kinds, ", ") + " all fine."
}
