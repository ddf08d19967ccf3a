package diagnose

import (
	"fmt"
	"strings"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// What the firewall rules (rulePortFirewall, ruleNetFirewall) share: which
// traced verdicts fit what the probes saw, how sure a verdict is, and what
// to do about it.

// connectResult is what a TCP connect meets when a trace's verdict applies
// to its SYN: a DROP makes it time out; a REJECT with a TCP reset or an ICMP
// port-unreachable (REJECT's default) makes it refused; other ICMP errors
// (host or admin prohibited) make it unreachable.
func connectResult(tr *collectors.FlowTrace) string {
	if tr.Verdict == "DROP" {
		return "timeout"
	}
	rw := strings.ToLower(tr.RejectWith)
	switch {
	case rw == "", strings.Contains(rw, "reset"), strings.Contains(rw, "port-unreach"), strings.Contains(rw, "port unreach"):
		return "refused"
	}
	return "unreachable"
}

// fits reports whether a trace's verdict explains what the probes saw: a
// DROP explains timeouts, not refused connects.
func (f *facts) fits(tr *collectors.FlowTrace) bool {
	if tr.Flow.Proto != "tcp" || f.tcp == nil || len(f.tcp.Attempts) == 0 {
		return true
	}
	return f.tcpAny(connectResult(tr))
}

// fittingBlock is the first firewall verdict stopping the flow that fits
// what the probes saw.
func (f *facts) fittingBlock(match func(collectors.Flow) bool) (block, bool) {
	for _, b := range f.blocked(match) {
		if f.fits(b.tr) {
			return b, true
		}
	}
	return block{}, false
}

// misfits describes verdicts that would stop the flow but do not explain
// what the probes saw, for "ruled out".
func (f *facts) misfits(match func(collectors.Flow) bool) string {
	for _, b := range f.blocked(match) {
		if !f.fits(b.tr) {
			return fmt.Sprintf("%s on %s would %s the SYN (%s), but the connects were %s",
				b.tool, f.scopeName(b.scope), strings.ToLower(b.tr.Verdict), connectResult(b.tr)+" expected", tcpResults(f.tcp))
		}
	}
	return ""
}

// uncertainConfidence is how sure a verdict can be that rests on a match
// the tracer could not evaluate: the kernel's own NETFILTER_DROP of the
// probes in that namespace makes it likely, without it it is a lead.
func (f *facts) uncertainConfidence(b block, netfilterDrops []drops.Drop) float64 {
	for _, d := range netfilterDrops {
		if dropScope(d) == b.scope {
			return 0.8
		}
	}
	return 0.55
}

// firewallByKernel concludes a firewall from the kernel's word alone: the
// probe's packet was freed by netfilter in a namespace whose rules were not
// read (or whose rule the tracer could not follow).
func (f *facts) firewallByKernel(v Verdict, d drops.Drop, fails []Observation) *match {
	verb := "drops"
	if f.tcpAll("refused") && v == PortFirewall {
		verb = "rejects (with a TCP reset, so it looks like a closed port)"
	}
	what := "TCP to " + f.to()
	if v == NetFirewall {
		what = "traffic to " + f.to()
	}
	ev := append([]Observation{f.dropLine(d)}, fails...)
	if v == PortFirewall {
		ev = append(ev, obs("ping", "echoes to %s get replies", f.req.To.Addr))
	}
	port := d.DPort
	if d.Answer {
		port = d.SPort
	}
	in := f.nsCommand(d)
	grep := ""
	if port != 0 {
		grep = fmt.Sprintf(" | grep -n -- '--dport %d'", port)
	}
	save := "iptables-save"
	if f.family() == "ipv6" {
		save = "ip6tables-save"
	}
	next := []string{
		fmt.Sprintf("Find the rule in %s: `%s%s -c%s` and `%snft list ruleset`; the rule whose counter rises with each attempt is the one (the kernel dropped the packet in %s).", f.dropPlace(d), in, save, grep, in, d.Func()),
		"If it comes from a NetworkPolicy, `kubectl get networkpolicy -A` and allow this traffic explicitly; if from a host firewall, open it there.",
	}
	alts := []Considered{}
	if v == PortFirewall && f.tcpAll("refused") {
		alts = append(alts, Considered{PortNotListen.Class, PortNotListen.Cause, fmt.Sprintf("ruled out by the kernel: the SYN was freed by netfilter (NETFILTER_DROP) in %s, not for want of a socket (NO_SOCKET)", f.dropPlace(d))})
	}
	return &match{verdict: &v, confidence: 0.85,
		summary:      fmt.Sprintf("A firewall rule in %s %s %s: the kernel dropped the probe's %s there (NETFILTER_DROP).", f.dropPlace(d), verb, what, orWord(d.Packet, "packet")),
		evidence:     ev,
		next:         next,
		alternatives: alts}
}

// firewallNext is what to do about a rule the trace found.
func firewallNext(f *facts, b block) []string {
	where := f.scopeName(b.scope)
	rule := b.tr.VerdictBy
	if _, r, ok := strings.Cut(rule, ": "); ok {
		rule = r
	}
	step := fmt.Sprintf("Remove or narrow the rule on %s: `%s` (%s).", where, rule, b.tool)
	if b.tool == "iptables" && strings.HasPrefix(rule, "-A ") {
		cmd := "iptables"
		if b.tr.Flow.Dst.Is6() && !b.tr.Flow.Dst.Is4In6() {
			cmd = "ip6tables"
		}
		table, _, _ := strings.Cut(b.tr.VerdictBy, "/")
		step = fmt.Sprintf("Remove or narrow the rule on %s: `%s -t %s -D %s` (or fix what installs it).", where, cmd, table, strings.TrimPrefix(rule, "-A "))
	}
	out := []string{step}
	if !b.tr.Certain {
		out = append(out, fmt.Sprintf("First confirm the rule applies: the tracer could not evaluate %s; watch its counter (`iptables-save -c` / `nft list ruleset`) rise while you retry.", strings.Join(b.tr.Assumes, " and ")))
	}
	return append(out, "If it comes from a NetworkPolicy, `kubectl get networkpolicy -A` and allow this traffic explicitly; if from a host firewall or security group, open it there.")
}
