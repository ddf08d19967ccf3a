package diagnose

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// rule is one step of the chain: it concludes its verdict, or says on which
// evidence it ruled the verdict out, or has nothing to look at.
type rule struct {
	verdict Verdict
	check   func(f *facts) outcome
}

// outcome is what a rule made of the evidence.
type outcome struct {
	// m is set when the rule concludes.
	m *match
	// ruledOut says, when the rule checked evidence that exists and found
	// its cause absent, what showed it ("port 8080 is open on 0.0.0.0").
	// Empty with no match: the rule had nothing to check.
	ruledOut string
}

func concluded(m *match) outcome { return outcome{m: m} }

func ruledOut(format string, a ...any) outcome {
	return outcome{ruledOut: fmt.Sprintf(format, a...)}
}

// notApplicable is the outcome of a rule with nothing to look at: no such
// probe, no such dump. It is never reported as "ruled out".
var notApplicable = outcome{}

// match is what a rule concludes.
type match struct {
	confidence float64
	summary    string
	evidence   []Observation
	next       []string
	// alternatives are verdicts the evidence cannot rule out, with what
	// would tell them apart.
	alternatives []Considered
	// verdict overrides the rule's own (one rule may conclude a
	// neighbouring cause, such as a link-down rule naming the neighbour).
	verdict *Verdict
}

func obs(collector, format string, a ...any) Observation {
	return Observation{Collector: collector, Observation: fmt.Sprintf(format, a...)}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func pastTense(verdict string) string {
	switch verdict {
	case "DROP":
		return "dropped"
	case "REJECT":
		return "rejected"
	}
	return strings.ToLower(verdict) + "ed"
}

func inPrefix(addr, prefix string) bool {
	a, err1 := netip.ParseAddr(addr)
	p, err2 := netip.ParsePrefix(prefix)
	return err1 == nil && err2 == nil && p.Contains(a)
}

func icmpErrs(errs []collectors.ProbeError) string {
	var parts []string
	for _, e := range errs {
		if e.Kind == "timeout" {
			continue
		}
		s := e.Kind
		if e.From != "" {
			s += " from " + e.From
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func tcpResults(t *collectors.TCP) string {
	counts := map[string]int{}
	var order []string
	for _, a := range t.Attempts {
		if counts[a.Result] == 0 {
			order = append(order, a.Result)
		}
		counts[a.Result]++
	}
	var parts []string
	for _, r := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
	}
	return strings.Join(parts, ", ")
}

// lastQuery tells how a lookup ended: "timeout for web.default.svc.".
func lastQuery(l collectors.DNSLookup) string {
	q, ok := l.Last()
	if !ok {
		return "no query sent"
	}
	if q.Error != "" {
		return q.Error + " for " + q.FQDN
	}
	return q.Rcode + " for " + q.FQDN
}

// traceLine tells what a firewall trace found: "TCP 8080 to 198.19.1.10 is
// dropped on pod default/web by filter/INPUT: -A INPUT ...", and, when the
// trace rests on matches the tracer could not evaluate, on what.
func (f *facts) traceLine(b block) Observation {
	tr := b.tr
	what := strings.ToUpper(strings.TrimSuffix(tr.Flow.Proto, "6"))
	if tr.Flow.DPort != 0 {
		what = fmt.Sprintf("%s %d", what, tr.Flow.DPort)
	}
	line := fmt.Sprintf("%s from %s to %s is %s on %s by %s", what, tr.Flow.Src, tr.Flow.Dst, pastTense(tr.Verdict), f.scopeName(b.scope), tr.VerdictBy)
	if !tr.Certain {
		line += fmt.Sprintf(" — if %s (the tracer could not evaluate it; otherwise %s)", strings.Join(tr.Assumes, " and "), otherwise(tr))
	}
	return obs(b.tool, "%s", line)
}

func otherwise(tr *collectors.FlowTrace) string {
	var parts []string
	for _, o := range tr.Otherwise {
		parts = append(parts, strings.ToLower(o.Verdict))
	}
	return "it is " + orNone(parts)
}
