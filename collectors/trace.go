package collectors

import (
	"net/netip"
	"slices"
	"strings"
)

// FlowTrace is the walk of one flow through a namespace's rules.
type FlowTrace struct {
	Flow Flow `json:"flow"`
	// Path is "output" (from this namespace), "forward" (through it) or
	// "input" (to it); a DNAT to a local address turns forward into input.
	Path  string     `json:"path"`
	Steps []RuleStep `json:"steps"`
	// Verdict is ACCEPT, DROP or REJECT; NATTo the address a DNAT chose.
	Verdict    string `json:"verdict"`
	VerdictBy  string `json:"verdict_by,omitempty"` // table/chain rule text
	RejectWith string `json:"reject_with,omitempty"`
	NATTo      string `json:"nat_to,omitempty"`
	Masquerade bool   `json:"masquerade,omitempty"`
	// Certain: whichever way the matches the tracer could not evaluate go,
	// the verdict is this one. When it is false, Assumes says what the
	// verdict rests on and Otherwise what the flow gets if that is wrong.
	Certain   bool          `json:"certain"`
	Assumes   []string      `json:"assumes,omitempty"`
	Otherwise []TraceBranch `json:"otherwise,omitempty"`
	// Uncertain lists matches that could not be evaluated on the way.
	Uncertain []string `json:"uncertain,omitempty"`
	// InIface and OutIface are the interfaces the trace took the packet
	// to use ("" for none, e.g. no input interface on the output path).
	InIface  string `json:"in_iface,omitempty"`
	OutIface string `json:"out_iface,omitempty"`
}

// TraceBranch is another verdict the flow gets under other assumptions.
type TraceBranch struct {
	Verdict   string   `json:"verdict"`
	VerdictBy string   `json:"verdict_by,omitempty"`
	Assumes   []string `json:"assumes"`
}

// Blocks reports whether the trace stops the flow.
func (t *FlowTrace) Blocks() bool { return t.Verdict == "DROP" || t.Verdict == "REJECT" }

// RuleStep is one rule that matched.
type RuleStep struct {
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Rule    string `json:"rule"`
	Target  string `json:"target"`
	Packets uint64 `json:"packets"`
}

// Router says which interface a namespace sends a packet for an address by,
// and whether the address is the namespace's own. The tracers use it to
// evaluate -i/-o (iifname/oifname) matches with the interfaces the packet
// really uses, and to route again after a DNAT.
type Router interface {
	Route(dst netip.Addr) (dev string, local bool, ok bool)
}

// maxBranches bounds how many ways through the rules one trace explores:
// each match the tracer cannot evaluate doubles them.
const maxBranches = 32

// decider answers, for one walk, whether each unevaluated match holds:
// as the prefix says, then "it matches" by default.
type decider struct {
	prefix []bool
	taken  []bool
	descs  []string
	// pessimistic answers so that the flow is stopped if anything can
	// stop it: rules that would let it pass do not match, others do.
	pessimistic bool
}

// choose answers whether an unevaluated match holds; passes says whether
// the rule, if it matches, lets the flow through (ACCEPT, RETURN).
func (d *decider) choose(desc string, passes bool) bool {
	v := true
	if i := len(d.taken); i < len(d.prefix) {
		v = d.prefix[i]
	} else if d.pessimistic {
		v = !passes
	}
	d.taken = append(d.taken, v)
	d.descs = append(d.descs, desc)
	return v
}

func (d *decider) assumptions() []string {
	out := make([]string, len(d.taken))
	for i, v := range d.taken {
		if v {
			out[i] = d.descs[i] + " matches"
		} else {
			out[i] = d.descs[i] + " does not match"
		}
	}
	return out
}

// explore walks every way the unevaluated matches can go (up to
// maxBranches walks) and folds the walks into one trace: the verdict stated
// is the first that stops the flow if any walk stops it (a trace never
// hides a rule that may apply), and it is certain only when every walk
// agrees.
func explore(walk func(d *decider) FlowTrace) FlowTrace {
	var outs []FlowTrace
	var assumes [][]string
	stack := [][]bool{nil}
	for len(stack) > 0 && len(outs) < maxBranches {
		prefix := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d := &decider{prefix: prefix}
		outs = append(outs, walk(d))
		assumes = append(assumes, d.assumptions())
		for i := len(d.taken) - 1; i >= len(prefix); i-- {
			stack = append(stack, append(slices.Clone(d.taken[:i]), !d.taken[i]))
		}
	}
	if len(stack) > 0 {
		// Too many ways to follow them all: one more walk that stops the
		// flow wherever a rule could, so a drop is never missed.
		d := &decider{pessimistic: true}
		outs = append(outs, walk(d))
		assumes = append(assumes, d.assumptions())
	}
	primary := 0
	for i, o := range outs {
		if o.Blocks() {
			primary = i
			break
		}
	}
	tr := outs[primary]
	tr.Certain = len(stack) == 0
	for i, o := range outs {
		tr.Uncertain = appendNew(tr.Uncertain, o.Uncertain...)
		if o.Verdict == tr.Verdict {
			continue
		}
		tr.Certain = false
		b := TraceBranch{Verdict: o.Verdict, VerdictBy: o.VerdictBy, Assumes: assumes[i]}
		if !slices.ContainsFunc(tr.Otherwise, func(x TraceBranch) bool { return x.Verdict == b.Verdict && x.VerdictBy == b.VerdictBy }) {
			tr.Otherwise = append(tr.Otherwise, b)
		}
	}
	if !tr.Certain {
		tr.Assumes = assumes[primary]
		if len(stack) > 0 {
			tr.Assumes = append(tr.Assumes, "(more unevaluated matches than the tracer follows)")
		}
	}
	return tr
}

func appendNew(dst []string, src ...string) []string {
	for _, s := range src {
		if !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// ifaceMatch matches an interface name against an iptables pattern, where a
// trailing "+" matches any suffix.
func ifaceMatch(name, pat string) bool {
	if p, ok := strings.CutSuffix(pat, "+"); ok {
		return strings.HasPrefix(name, p)
	}
	return name == pat
}

// pathIfaces are the interfaces a packet of the flow uses on a path, from the
// namespace's routes: none in and the route's device out on output, the
// device back towards the source in (the reverse path, as rp_filter checks
// it) on input, both on forward. known is false for an end the router could
// not answer.
func pathIfaces(f Flow, path string, rt Router) (in, out string, inKnown, outKnown bool) {
	in, out = f.InIface, f.OutIface
	inKnown, outKnown = in != "", out != ""
	switch path {
	case "output":
		in, inKnown = "", true
	case "input":
		out, outKnown = "", true
	}
	if rt == nil {
		return in, out, inKnown, outKnown
	}
	if !inKnown {
		if dev, _, ok := rt.Route(f.Src); ok {
			in, inKnown = dev, true
		}
	}
	if !outKnown {
		if dev, _, ok := rt.Route(f.Dst); ok {
			out, outKnown = dev, true
		}
	}
	return in, out, inKnown, outKnown
}

// StaticRouter is a Router from a table: the device for each prefix
// (longest match wins) and the namespace's own addresses. Tests and the
// tracer benchmark use it for rule dumps read from files.
type StaticRouter struct {
	Routes map[netip.Prefix]string
	Local  []netip.Addr
}

// Route implements Router.
func (s StaticRouter) Route(dst netip.Addr) (string, bool, bool) {
	if slices.Contains(s.Local, dst) {
		return "lo", true, true
	}
	best, dev := -1, ""
	for p, d := range s.Routes {
		if p.Contains(dst) && p.Bits() > best {
			best, dev = p.Bits(), d
		}
	}
	return dev, false, best >= 0
}
