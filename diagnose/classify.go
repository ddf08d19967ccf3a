package diagnose

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
)

// Classify turns the evidence of a run into one finding. It never panics:
// a rule that fails is skipped and named in the evidence, and if reading the
// evidence fails altogether the finding is inconclusive and says why.
func Classify(r *Request, evs []collectors.Evidence) *Finding {
	return classify(r, evs, slog.Default())
}

func classify(r *Request, evs []collectors.Evidence, log *slog.Logger) (out *Finding) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("classify panicked", "panic", p, "stack", string(debug.Stack()))
			out = classifyFailed(r, evs, fmt.Sprint(p))
		}
	}()
	if r.To == nil && r.AltTo != nil {
		// A second family without a first is the first.
		q := *r
		q.To, q.AltTo = r.AltTo, nil
		r = &q
	}
	if beforeRules != nil {
		beforeRules()
	}
	out = classifyFamily(r, evs, "", log)
	if r.AltTo != nil {
		alt := *r
		alt.To, alt.AltTo = r.AltTo, nil
		out = mergeFamilies(r, out, classifyFamily(&alt, evs, collectors.Family(r.AltTo.Addr), log))
	}
	finish(out, r, evs)
	return out
}

// beforeRules, when a test sets it, runs before the rules: it proves that a
// failure outside any rule still gives a finding.
var beforeRules func()

var familyNames = map[string]string{"ipv4": "IPv4", "ipv6": "IPv6"}

// classifyFamily runs the rule chain over the evidence of one family's
// probes (label "" for the question's own destination).
func classifyFamily(r *Request, evs []collectors.Evidence, label string, log *slog.Logger) *Finding {
	f := readFacts(r, evs, label)
	out := &Finding{}
	var considered []Considered
	var chosen *match
	var verdict Verdict
	for _, rl := range rules {
		o := runRule(rl, f, log)
		if chosen != nil {
			// Report why the rest did not apply too, so the reader sees
			// what was checked.
			if o.m == nil && o.ruledOut != "" && rl.verdict != verdict {
				considered = appendConsidered(considered, rl.verdict, o.ruledOut)
			}
			continue
		}
		if o.m == nil {
			if o.ruledOut != "" {
				considered = appendConsidered(considered, rl.verdict, o.ruledOut)
			}
			continue
		}
		chosen, verdict = o.m, rl.verdict
		if o.m.verdict != nil {
			verdict = *o.m.verdict
		}
	}
	// A rule's own verdict may be ruled out above under another rule's name.
	considered = slices.DeleteFunc(considered, func(c Considered) bool { return c.Class == verdict.Class && c.Cause == verdict.Cause })
	bad, fails := f.failing()
	switch {
	case chosen != nil:
		out.Class, out.Cause = verdict.Class, verdict.Cause
		out.Confidence, out.Summary = chosen.confidence, chosen.summary
		out.Evidence, out.NextSteps = chosen.evidence, chosen.next
		out.AlsoConsidered = append(chosen.alternatives, considered...)
	case !bad && len(f.failures) == 0 && f.probed():
		out.Class, out.Cause = Healthy.Class, Healthy.Cause
		out.Confidence = 0.9
		out.Evidence = f.checked()
		out.Summary = "Every probe passed and nothing on the path is misconfigured: " + summarizeChecked(out.Evidence)
		out.AlsoConsidered = considered
		out.NextSteps = []string{"If the application still fails, look above the network: its logs, TLS, HTTP status codes; or run again with --capture to see the traffic."}
	default:
		out.Class, out.Cause = Insufficient.Class, Insufficient.Cause
		out.Confidence = 0.3
		out.Evidence = append(fails, f.failures...)
		out.Summary = "Probes failed, but the evidence does not single out a cause."
		if !bad {
			out.Summary = "Some collectors could not run, so netdiag cannot say the path is healthy."
		}
		out.AlsoConsidered = considered
		out.NextSteps = []string{
			"Run again with --peer-netns (the destination's namespace) and --node-netns, so both ends and the node are read.",
			"Run with --capture 5s to record the probes' packets at both ends.",
		}
	}
	out.Evidence = f.withDrops(out.Evidence)
	if label != "" {
		out.Family = label
	} else if r.To != nil {
		out.Family = collectors.Family(r.To.Addr)
	}
	return out
}

// runRule runs one rule; a rule that panics is skipped, logged with its
// stack, and named among the evidence's failures.
func runRule(rl rule, f *facts, log *slog.Logger) (o outcome) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("rule panicked", "rule", rl.verdict.String(), "panic", p, "stack", string(debug.Stack()))
			f.failures = append(f.failures, obs("classify", "the rule for %s failed (panic: %v); it was skipped", rl.verdict, p))
			o = notApplicable
		}
	}()
	return rl.check(f)
}

// probed reports whether any probe ran: a finding with no probe cannot say
// the path is healthy.
func (f *facts) probed() bool {
	return f.ping != nil || f.tcp != nil || f.dns != nil || f.pmtu != nil
}

// mergeFamilies folds the findings of a dual-stack destination's two
// families into one that says which family failed.
func mergeFamilies(r *Request, a, b *Finding) *Finding {
	ah, bh := a.Verdict() == Healthy, b.Verdict() == Healthy
	an, bn := familyNames[a.Family], familyNames[b.Family]
	switch {
	case ah && bh:
		out := *a
		out.Family = ""
		out.Evidence = append(prefixed(an, a.Evidence, false), prefixed(bn, b.Evidence, true)...)
		out.Summary = fmt.Sprintf("Both %s (%s) and %s (%s) work. %s", an, r.To.Addr, bn, r.AltTo.Addr, a.Summary)
		out.AlsoConsidered = mergeConsidered(a.AlsoConsidered, b.AlsoConsidered)
		return &out
	case ah || bh:
		bad, good, gn := a, b, bn
		if ah {
			bad, good, gn = b, a, an
		}
		out := *bad
		out.Summary = fmt.Sprintf("Over %s only: %s %s works.", familyNames[bad.Family], bad.Summary, gn)
		out.Evidence = append(append([]Observation{}, bad.Evidence...), prefixed(gn, good.Evidence, true)...)
		return &out
	}
	main, other := a, b
	if b.Confidence > a.Confidence {
		main, other = b, a
	}
	out := *main
	if main.Verdict() == other.Verdict() {
		out.Family = ""
		out.Summary = fmt.Sprintf("Over both IPv4 and IPv6: %s", main.Summary)
	} else {
		out.Summary = fmt.Sprintf("Over %s: %s Over %s it is %s: %s", familyNames[main.Family], main.Summary, familyNames[other.Family], other.Verdict(), other.Summary)
	}
	out.Evidence = append(append([]Observation{}, main.Evidence...), firstN(prefixed(familyNames[other.Family], other.Evidence, true), 3)...)
	out.NextSteps = uniq(append(append([]string{}, main.NextSteps...), other.NextSteps...))
	out.AlsoConsidered = mergeConsidered(main.AlsoConsidered, other.AlsoConsidered)
	return &out
}

// prefixed names the family on the observations that are about it (the
// probes and the route to the destination); with only, the others (the
// namespace's links, the kernel's drops, shared by both families) are left
// out rather than told twice.
func prefixed(family string, obs []Observation, only bool) []Observation {
	var out []Observation
	for _, o := range obs {
		switch {
		case collectors.IsProbe(o.Collector) || o.Collector == "routes":
			out = append(out, Observation{Collector: o.Collector, Observation: family + ": " + o.Observation})
		case !only:
			out = append(out, o)
		}
	}
	return out
}

// uniq keeps the first of each string, in order.
func uniq(s []string) []string {
	var out []string
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func firstN(obs []Observation, n int) []Observation {
	return obs[:min(n, len(obs))]
}

func mergeConsidered(a, b []Considered) []Considered {
	out := append([]Considered{}, a...)
	for _, c := range b {
		if !slices.ContainsFunc(out, func(x Considered) bool { return x.Class == c.Class && x.Cause == c.Cause }) {
			out = append(out, c)
		}
	}
	return out
}

// classifyFailed is the finding when classifying itself failed.
func classifyFailed(r *Request, evs []collectors.Evidence, why string) *Finding {
	out := &Finding{Class: Insufficient.Class, Cause: Insufficient.Cause, Confidence: 0.1,
		Summary:   "netdiag collected the evidence but could not classify it: " + why,
		Evidence:  []Observation{obs("classify", "failed: panic: %s (stack in the log)", why)},
		NextSteps: []string{"Report this as a bug with the raw evidence (-o json); the raw evidence below is complete."}}
	finish(out, r, evs)
	return out
}

// finish fills what every finding carries, whatever its verdict.
func finish(out *Finding, r *Request, evs []collectors.Evidence) {
	out.Question, out.Raw, out.At = r.Question, evs, time.Now().UTC()
	out.Timings.CollectorsMS = map[string]float64{}
	for _, ev := range evs {
		k := ev.Collector + "@" + string(ev.Scope)
		if ev.Label != "" {
			k += "(" + ev.Label + ")"
		}
		out.Timings.CollectorsMS[k] = ev.DurationMS
		if c, ok := ev.Data.(*collectors.CaptureResult); ok && ev.Scope == collectors.ScopeSource && out.Pcap == nil {
			p := c.File
			out.Pcap = &p
		}
	}
	// What the cluster's own objects say is wrong belongs beside what the
	// network showed, once.
	if c := r.Cluster; c != nil && out.Verdict() != Healthy {
		for _, ck := range c.Checks {
			if ck.Result != "failed" || slices.ContainsFunc(out.Evidence, func(o Observation) bool { return o.Observation == ck.Message }) {
				continue
			}
			out.Evidence = append(out.Evidence, obs("kubernetes", "%s", ck.Message))
		}
	}
	if out.Evidence == nil {
		out.Evidence = []Observation{}
	}
	if out.AlsoConsidered == nil {
		out.AlsoConsidered = []Considered{}
	}
	if out.NextSteps == nil {
		out.NextSteps = []string{}
	}
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
		out = append(out, obs("ping", "%d/%d echoes to %s answered, avg %.2f ms", f.ping.Received, f.ping.Sent, f.ping.Dst, f.ping.AvgMS))
	}
	if f.tcp != nil {
		out = append(out, obs("tcp", "%d/%d TCP connects to %s succeeded, avg %.2f ms", f.tcp.Connected, len(f.tcp.Attempts), f.tcp.Dst, f.tcp.AvgConnectMS))
	}
	if f.pmtu != nil {
		out = append(out, obs("pmtu", "full-size (%d bytes) DF packets reach %s", f.pmtu.PathMTU, f.pmtu.Dst))
	}
	if f.dns != nil {
		var names []string
		for _, l := range f.podLookups() {
			names = append(names, fmt.Sprintf("%s -> %s", l.Name, strings.Join(l.Answers, ",")))
		}
		if len(names) > 0 {
			out = append(out, obs("dns", "resolved %s", strings.Join(names, "; ")))
		}
	}
	if l := f.links[collectors.ScopeSource]; l != nil {
		for _, lk := range l.Links {
			if lk.Name != "lo" {
				out = append(out, obs("links", "%s is up with carrier, MTU %d, %s", lk.Name, lk.MTU, strings.Join(lk.Addrs, ",")))
			}
		}
	}
	if c := f.chosen(collectors.ScopeSource); c != nil {
		out = append(out, obs("routes", "%s is reached via %s %s", c.Dst, c.Dev, c.Gateway))
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
