package collectors

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
)

// Iptables is `iptables-save -c` and `ip6tables-save -c` of a namespace,
// parsed, and for each probe flow the rules it meets in the order the kernel
// walks them: which match, what they do (DROP, REJECT, DNAT, MASQUERADE...),
// their counters, and whether the verdict is certain.
type Iptables struct {
	Tables map[string]*IptTable `json:"tables"`
	// Tables6 are the IPv6 tables (ip6tables-save); IPv6 flows are traced
	// through them.
	Tables6 map[string]*IptTable `json:"tables6,omitempty"`
	Traces  []FlowTrace          `json:"traces,omitempty"`
}

// IptTable is one table.
type IptTable struct {
	Chains map[string]*IptChain `json:"chains"`
	Order  []string             `json:"order"`
}

// IptChain is one chain with its policy (built-in chains) and rules.
type IptChain struct {
	Policy  string    `json:"policy,omitempty"`
	Packets uint64    `json:"packets"`
	Rules   []IptRule `json:"rules"`
}

// IptRule is one rule. The parsed matches are not serialised: the text is
// the rule, the traces carry what the matches meant.
type IptRule struct {
	Text    string `json:"text"` // as iptables-save prints it, without counters
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Target  string `json:"target,omitempty"`
	// Goto: -g, return to the caller's caller when the chain ends.
	Goto    bool   `json:"goto,omitempty"`
	Comment string `json:"comment,omitempty"`
	tests   []ruleMatch
	// Target options.
	toDestination    string
	rejectWith       string
	setMark, setMask uint32
	orMark, andMark  uint32
	hasAndMark       bool
	connmark         *connmarkOp
}

type connmarkOp struct {
	save, restore bool
	set, mask     uint32
}

// ruleMatch is one parsed match of a rule: it says yes, no, or that it cannot
// tell (and what it could not evaluate).
type ruleMatch func(st *traceState) (ok bool, unknown string)

// RejectWith is the rule's --reject-with.
func (r *IptRule) RejectWith() string { return r.rejectWith }

func init() {
	register(spec{name: "iptables", help: "iptables-save -c and ip6tables-save -c (filter, nat, mangle, raw) with counters, and the rules each probe flow meets: DROP, REJECT, DNAT, MASQUERADE, KUBE-* jumps",
		scopes: Scopes, timeout: 10 * time.Second}, collectIptables)
}

// maxRulesOutput bounds what iptables-save may print (a node with 100,000
// rules prints about 20 MB).
const maxRulesOutput = 256 << 20

func collectIptables(ctx context.Context, in Input) (*Iptables, error) {
	bin, err := tools.Find("iptables-save")
	if err != nil {
		return nil, err
	}
	text, err := in.NS.OutputLimit(ctx, maxRulesOutput, bin, "-c")
	if err != nil {
		return nil, err
	}
	out, err := ParseIptablesSave(string(text))
	if err != nil {
		return nil, err
	}
	// IPv6 rules are read beside the IPv4 ones; a node without ip6tables
	// gives partial evidence, not none.
	var partial error
	if bin6, err := tools.Find("ip6tables-save"); err != nil {
		partial = err
	} else if text6, err := in.NS.OutputLimit(ctx, maxRulesOutput, bin6, "-c"); err != nil {
		partial = fmt.Errorf("ip6tables-save: %w", err)
	} else if v6, err := ParseIptablesSave(string(text6)); err != nil {
		partial = fmt.Errorf("ip6tables-save: %w", err)
	} else {
		out.Tables6 = v6.Tables
	}
	rt, err := openKernelRoutes(in.NS)
	if err != nil {
		return out, errors.Join(partial, err)
	}
	defer rt.Close()
	for _, f := range in.flowsIn() {
		out.Traces = append(out.Traces, out.Trace(f, f.pathIn(in.Scope), rt))
	}
	return out, partial
}

// ParseIptablesSave parses the output of `iptables-save -c` (or
// ip6tables-save).
func ParseIptablesSave(text string) (*Iptables, error) {
	out := &Iptables{Tables: map[string]*IptTable{}}
	var t *IptTable
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			t = &IptTable{Chains: map[string]*IptChain{}}
			out.Tables[line[1:]] = t
		case strings.HasPrefix(line, ":"):
			if t == nil {
				return nil, fmt.Errorf("line %d: chain outside a table", n)
			}
			f := strings.Fields(line[1:])
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: chain without a name", n)
			}
			c := &IptChain{}
			if len(f) > 1 && f[1] != "-" {
				c.Policy = f[1]
			}
			if len(f) > 2 {
				c.Packets, _ = parseCounters(f[2])
			}
			if _, dup := t.Chains[f[0]]; !dup {
				t.Order = append(t.Order, f[0])
			}
			t.Chains[f[0]] = c
		default:
			if t == nil {
				return nil, fmt.Errorf("line %d: rule outside a table", n)
			}
			var pk, by uint64
			if strings.HasPrefix(line, "[") {
				end := strings.IndexByte(line, ']')
				if end < 0 {
					return nil, fmt.Errorf("line %d: bad counters", n)
				}
				pk, by = parseCounters(line[:end+1])
				line = strings.TrimSpace(line[end+1:])
			}
			args := splitArgs(line)
			if len(args) < 2 || args[0] != "-A" {
				return nil, fmt.Errorf("line %d: expected -A CHAIN: %q", n, line)
			}
			c := t.Chains[args[1]]
			if c == nil {
				c = &IptChain{}
				t.Chains[args[1]] = c
				t.Order = append(t.Order, args[1])
			}
			r := parseRule(args[2:])
			r.Text, r.Packets, r.Bytes = line, pk, by
			c.Rules = append(c.Rules, r)
		}
	}
	return out, sc.Err()
}

func parseCounters(s string) (uint64, uint64) {
	s = strings.Trim(s, "[]")
	a, b, _ := strings.Cut(s, ":")
	p, _ := strconv.ParseUint(a, 10, 64)
	q, _ := strconv.ParseUint(b, 10, 64)
	return p, q
}

// splitArgs splits a rule like a shell would split iptables-save's quoting
// (comments are double-quoted), without running one.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, has := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && inQ && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			inQ, has = !inQ, true
		case ch == ' ' && !inQ:
			if has || cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(ch)
		}
	}
	if has || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// parseRule reads a rule's matches and target. Every match it knows becomes
// a test on the traced packet; one it does not know becomes an unevaluated
// match that the trace explores both ways.
func parseRule(a []string) IptRule {
	var r IptRule
	neg := false
	next := func(i *int) string {
		if *i+1 < len(a) {
			*i++
			return a[*i]
		}
		return ""
	}
	add := func(m ruleMatch) { r.tests = append(r.tests, m) }
	module := ""
	var rpInvert *bool
	for i := 0; i < len(a); i++ {
		arg := a[i]
		if arg == "!" {
			neg = true
			continue
		}
		n := neg
		neg = false
		switch arg {
		case "-s", "--source":
			add(addrMatch(next(&i), n, true))
		case "-d", "--destination":
			add(addrMatch(next(&i), n, false))
		case "-p", "--protocol":
			add(protoMatch(strings.ToLower(next(&i)), n))
		case "-i", "--in-interface":
			add(ifaceRule(next(&i), n, true))
		case "-o", "--out-interface":
			add(ifaceRule(next(&i), n, false))
		case "-f", "--fragment":
			// Probes are never fragments.
			add(constMatch(n))
		case "-m", "--match":
			module = next(&i)
			switch module {
			case "rpfilter":
				// The trace takes the input interface from the route back
				// to the source, so the reverse-path check passes by
				// construction: -m rpfilter matches, --invert does not.
				inv := false
				rpInvert = &inv
				add(func(st *traceState) (bool, string) {
					if !st.inKnown {
						return true, "-m rpfilter"
					}
					return !inv, ""
				})
			case "socket":
				add(func(*traceState) (bool, string) { return true, "-m socket" })
			}
		case "--invert":
			if module == "rpfilter" && rpInvert != nil {
				*rpInvert = true
			}
		case "-j", "--jump":
			r.Target = next(&i)
		case "-g", "--goto":
			r.Target, r.Goto = next(&i), true
		default:
			if !r.targetOption(arg, next, &i) {
				if m := matchOption(module, arg, n, next, &i, a); m != nil {
					add(m)
				}
			}
		}
	}
	return r
}

// targetOption reads an option of the rule's target; false if arg is not one.
func (r *IptRule) targetOption(arg string, next func(*int) string, i *int) bool {
	switch arg {
	case "--to-destination":
		r.toDestination = next(i)
	case "--reject-with":
		r.rejectWith = next(i)
	case "--set-xmark", "--set-mark":
		v, m := parseMark(next(i))
		if r.Target == "CONNMARK" {
			r.connmark = &connmarkOp{set: v, mask: m}
			if arg == "--set-mark" {
				r.connmark.mask = m
			}
			return true
		}
		r.setMark, r.setMask = v, m
		if arg == "--set-mark" && m == 0xffffffff {
			r.setMask = 0xffffffff
		}
	case "--or-mark":
		r.orMark, _ = parseMark(next(i))
	case "--and-mark":
		r.andMark, _ = parseMark(next(i))
		r.hasAndMark = true
	case "--save-mark":
		r.connmark = &connmarkOp{save: true}
	case "--restore-mark":
		r.connmark = &connmarkOp{restore: true}
	case "--nfmask", "--ctmask":
		next(i)
	case "--random-fully", "--random", "--persistent", "--log-uid", "--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
		"--queue-bypass", "--notrack", "--checksum-fill", "--clamp-mss-to-pmtu":
	case "--to-ports", "--to-source", "--to", "--log-prefix", "--log-level", "--nflog-group", "--nflog-prefix", "--nflog-range",
		"--nflog-size", "--nflog-threshold", "--queue-num", "--queue-balance", "--set-mss", "--zone", "--helper", "--ctevents",
		"--expevents", "--timeout", "--set-dscp", "--set-dscp-class", "--set-tos", "--set-class", "--add-set", "--del-set",
		"--exist", "--tproxy-mark", "--on-port", "--on-ip", "--to-source-ports", "--ulog-prefix", "--ulog-nlgroup":
		next(i)
	default:
		return false
	}
	return true
}

// matchOption reads one option of a match module; nil when it needs no test
// (comments, options that only set up the next test).
func matchOption(module, arg string, neg bool, next func(*int) string, i *int, a []string) ruleMatch {
	switch arg {
	case "--dport", "--destination-port", "--dports", "--destination-ports":
		return portMatch(next(i), neg, false)
	case "--sport", "--source-port", "--sports", "--source-ports":
		return portMatch(next(i), neg, true)
	case "--ports":
		list := next(i)
		return func(st *traceState) (bool, string) {
			if st.flow.Proto != "tcp" && st.flow.Proto != "udp" {
				return neg, ""
			}
			if portIn(st.flow.DPort, strings.Split(list, ",")) {
				return !neg, ""
			}
			// Either port may match; the source port is the kernel's pick.
			return true, "--ports " + list
		}
	case "--ctstate", "--state":
		return ctStateMatch(next(i), neg)
	case "--mark":
		v, m := parseMark(next(i))
		if module == "connmark" {
			return func(st *traceState) (bool, string) { return (st.connmark&m == v) != neg, "" }
		}
		return func(st *traceState) (bool, string) { return (st.mark&m == v) != neg, "" }
	case "--dst-type", "--src-type":
		return addrTypeMatch(next(i), neg, arg == "--dst-type")
	case "--limit-iface-in", "--limit-iface-out":
		return nil
	case "--comment":
		next(i)
		return nil
	case "--icmp-type", "--icmpv6-type":
		return icmpTypeMatch(next(i), neg)
	case "--syn":
		return func(st *traceState) (bool, string) { return (st.flow.Proto == "tcp") != neg, "" }
	case "--tcp-flags":
		mask, comp := tcpFlagSet(next(i)), tcpFlagSet(next(i))
		return func(st *traceState) (bool, string) {
			if st.flow.Proto != "tcp" {
				return neg, ""
			}
			// A probe's first packet is a SYN and nothing else.
			return (mask&tcpSYN == comp) != neg, ""
		}
	case "--pkt-type":
		t := next(i)
		return func(st *traceState) (bool, string) { return (t == "unicast") != neg, "" }
	case "--src-range", "--dst-range":
		return rangeMatch(next(i), neg, arg == "--src-range")
	case "--physdev-is-bridged":
		return func(st *traceState) (bool, string) {
			if !st.inKnown || !st.outKnown {
				return true, "-m physdev --physdev-is-bridged"
			}
			// Bridged: forwarded between two ports of one bridge, which
			// iptables sees with the bridge as both interfaces.
			return (st.path == "forward" && st.in != "" && st.in == st.out) != neg, ""
		}
	case "--ctorigdst":
		return addrMatch(next(i), neg, false)
	case "--ctorigsrc":
		return addrMatch(next(i), neg, true)
	case "--probability", "--every":
		// kube-proxy's random choice of an endpoint: one of them is taken;
		// which does not change the verdict, so it is not explored.
		next(i)
		return func(st *traceState) (bool, string) {
			st.note("random endpoint choice (statistic)")
			return true, ""
		}
	case "--mode", "--packet":
		next(i)
		return nil
	case "--validmark", "--loose", "--accept-local":
		if module == "rpfilter" {
			return nil
		}
	}
	// Unknown: name it, skip its value, and let the trace explore it.
	desc := strings.TrimSpace("-m " + module + " " + arg)
	if neg {
		desc = strings.TrimSpace("-m " + module + " ! " + arg)
	}
	if *i+1 < len(a) && !strings.HasPrefix(a[*i+1], "-") && a[*i+1] != "!" {
		*i++
		desc += " " + a[*i]
		// ipset's --match-set NAME DIRECTIONS takes two values.
		if arg == "--match-set" && *i+1 < len(a) && !strings.HasPrefix(a[*i+1], "-") && a[*i+1] != "!" {
			*i++
			desc += " " + a[*i]
		}
	}
	return func(*traceState) (bool, string) { return true, desc }
}

const tcpSYN = 1 << 1

// tcpFlagSet reads a --tcp-flags list ("SYN,RST,ACK", "ALL", "NONE") as the
// bits of the TCP flags byte.
func tcpFlagSet(list string) uint8 {
	bits := map[string]uint8{"FIN": 1, "SYN": tcpSYN, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ALL": 63, "NONE": 0}
	var out uint8
	for _, f := range strings.Split(strings.ToUpper(list), ",") {
		out |= bits[f]
	}
	return out
}

func parseMark(s string) (uint32, uint32) {
	v, m, ok := strings.Cut(s, "/")
	val, _ := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 32)
	mask := uint64(0xffffffff)
	if ok {
		mask, _ = strconv.ParseUint(strings.TrimPrefix(m, "0x"), 16, 32)
	}
	return uint32(val), uint32(mask)
}

func constMatch(neg bool) ruleMatch {
	return func(*traceState) (bool, string) { return neg, "" }
}

// addrMatch is -s/-d: an address or prefix (iptables-save prints /32).
func addrMatch(s string, neg, src bool) ruleMatch {
	var p netip.Prefix
	if q, err := netip.ParsePrefix(s); err == nil {
		p = q.Masked()
	} else if a, err := netip.ParseAddr(s); err == nil {
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		desc := "-s " + s
		if !src {
			desc = "-d " + s
		}
		return func(*traceState) (bool, string) { return true, desc }
	}
	return func(st *traceState) (bool, string) {
		a := st.flow.Dst
		if src {
			a = st.flow.Src
		}
		if !a.IsValid() {
			return true, "address " + s + " (the flow's address is unknown)"
		}
		return p.Contains(a) != neg, ""
	}
}

// protoMatch is -p, by name or number, for both families.
func protoMatch(p string, neg bool) ruleMatch {
	if p == "" || p == "all" || p == "0" {
		return func(*traceState) (bool, string) { return !neg, "" }
	}
	names := map[string]string{"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp6", "ipv6-icmp": "icmp6", "icmpv6": "icmp6"}
	if n, ok := names[p]; ok {
		p = n
	}
	return func(st *traceState) (bool, string) { return (st.flow.Proto == p) != neg, "" }
}

func ifaceRule(pat string, neg, in bool) ruleMatch {
	return func(st *traceState) (bool, string) {
		name, known := st.out, st.outKnown
		flag := "-o "
		if in {
			name, known, flag = st.in, st.inKnown, "-i "
		}
		if !known {
			if neg {
				flag = "! " + flag
			}
			return true, flag + pat
		}
		return ifaceMatch(name, pat) != neg, ""
	}
}

func portMatch(list string, neg, src bool) ruleMatch {
	return func(st *traceState) (bool, string) {
		p := st.flow.DPort
		if src {
			p = st.flow.SPort
			if p == 0 {
				// The kernel picks the probe's source port at connect time.
				return true, "--sport " + list
			}
		}
		if st.flow.Proto != "tcp" && st.flow.Proto != "udp" {
			return false, ""
		}
		return portIn(p, strings.Split(list, ",")) != neg, ""
	}
}

func portIn(p uint16, list []string) bool {
	for _, s := range list {
		lo, hi, rng := strings.Cut(s, ":")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if rng {
			if b, err = strconv.Atoi(hi); err != nil {
				b = 65535
			}
		}
		if int(p) >= a && int(p) <= b {
			return true
		}
	}
	return false
}

// ctStateMatch: a probe's first packet is NEW; DNAT once a DNAT rule has
// translated it.
func ctStateMatch(list string, neg bool) ruleMatch {
	states := strings.Split(strings.ToUpper(list), ",")
	return func(st *traceState) (bool, string) {
		hit := false
		for _, s := range states {
			switch s {
			case "NEW":
				hit = true
			case "DNAT":
				hit = hit || st.dnat
			case "SNAT":
				hit = hit || st.masq
			}
		}
		return hit != neg, ""
	}
}

func addrTypeMatch(t string, neg, dst bool) ruleMatch {
	return func(st *traceState) (bool, string) {
		a := st.flow.Src
		local := st.fromLocal
		if dst {
			a, local = st.flow.Dst, st.toLocal
		}
		var hit bool
		switch strings.ToUpper(t) {
		case "LOCAL":
			hit = local
		case "UNICAST":
			hit = a.IsValid() && !a.IsMulticast() && !a.IsUnspecified()
		case "MULTICAST":
			hit = a.IsMulticast()
		case "BROADCAST", "ANYCAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE":
			hit = false
		default:
			return true, "--" + map[bool]string{true: "dst", false: "src"}[dst] + "-type " + t
		}
		return hit != neg, ""
	}
}

// icmpTypeMatch: an ICMP probe is an echo request.
func icmpTypeMatch(t string, neg bool) ruleMatch {
	return func(st *traceState) (bool, string) {
		if !st.flow.IsICMP() {
			return false, ""
		}
		switch strings.ToLower(t) {
		case "8", "echo-request", "128", "any", "255":
			return !neg, ""
		}
		return neg, ""
	}
}

func rangeMatch(r string, neg, src bool) ruleMatch {
	lo, hi, _ := strings.Cut(r, "-")
	l, err1 := netip.ParseAddr(lo)
	h, err2 := netip.ParseAddr(hi)
	return func(st *traceState) (bool, string) {
		if err1 != nil || err2 != nil {
			return true, "-m iprange " + r
		}
		a := st.flow.Dst
		if src {
			a = st.flow.Src
		}
		return (a.Compare(l) >= 0 && a.Compare(h) <= 0) != neg, ""
	}
}

// hookPaths are the tables and chains a packet meets, in the kernel's order.
var hookPaths = map[string][][2]string{
	"output":  {{"raw", "OUTPUT"}, {"mangle", "OUTPUT"}, {"nat", "OUTPUT"}, {"filter", "OUTPUT"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}},
	"forward": {{"raw", "PREROUTING"}, {"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"mangle", "FORWARD"}, {"filter", "FORWARD"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}},
	"input":   {{"raw", "PREROUTING"}, {"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"mangle", "INPUT"}, {"filter", "INPUT"}},
}

// traceState is the packet as the walk has changed it so far.
type traceState struct {
	flow               Flow
	mark, connmark     uint32
	path               string
	toLocal, fromLocal bool
	dnat, masq         bool
	in, out            string
	inKnown, outKnown  bool
	d                  *decider
	tr                 *FlowTrace
}

func (st *traceState) note(s string) { st.tr.Uncertain = appendNew(st.tr.Uncertain, s) }

// Trace walks a new flow through the rules along a path ("output", "forward"
// or "input"), following jumps, gotos and returns, applying DNAT and marks
// as it goes. rt gives the interfaces the packet uses (nil: the flow's own
// InIface/OutIface, else unknown). Matches it cannot evaluate are explored
// both ways, and the trace says whether its verdict depends on them.
func (ipt *Iptables) Trace(f Flow, path string, rt Router) FlowTrace {
	tables := ipt.Tables
	if f.Dst.Is6() && !f.Dst.Is4In6() {
		tables = ipt.Tables6
	}
	return explore(func(d *decider) FlowTrace {
		return traceTables(tables, f, path, rt, d)
	})
}

func traceTables(tables map[string]*IptTable, f Flow, path string, rt Router, d *decider) FlowTrace {
	tr := FlowTrace{Flow: f, Path: path, Verdict: "ACCEPT"}
	st := &traceState{flow: f, path: path, toLocal: path == "input", fromLocal: path == "output", d: d, tr: &tr}
	st.in, st.out, st.inKnown, st.outKnown = pathIfaces(f, path, rt)
	hooks := hookPaths[path]
	for i := 0; i < len(hooks); i++ {
		hook := hooks[i]
		t := tables[hook[0]]
		if t == nil || t.Chains[hook[1]] == nil {
			continue
		}
		dst := st.flow.Dst
		v := walkChain(t, hook[0], hook[1], st, 0)
		if v == "" {
			v = t.Chains[hook[1]].Policy
		}
		switch v {
		case "DROP", "REJECT":
			tr.Verdict = v
			if tr.VerdictBy == "" {
				tr.VerdictBy = hook[0] + "/" + hook[1] + " policy " + v
			}
			tr.InIface, tr.OutIface = st.in, st.out
			return tr
		}
		// A DNAT changes the route: find the new output interface, and a
		// DNAT to this namespace's own address turns forward into input.
		if st.flow.Dst != dst && rt != nil && hook[0] == "nat" {
			if dev, local, ok := rt.Route(st.flow.Dst); ok {
				st.out, st.outKnown = dev, true
				if local && path == "forward" {
					path, st.path, st.toLocal = "input", "input", true
					st.out = ""
					tr.Path = "input"
					hooks = append(hooks[:i+1:i+1], hookPaths["input"][3:]...)
				}
			}
		}
	}
	if st.flow.Dst != f.Dst || st.flow.DPort != f.DPort {
		tr.NATTo = netip.AddrPortFrom(st.flow.Dst, st.flow.DPort).String()
	}
	tr.Masquerade = st.masq
	tr.InIface, tr.OutIface = st.in, st.out
	return tr
}

// walkChain evaluates a chain; it returns a terminal verdict, or "" to
// continue after the calling rule (RETURN or end of a user chain).
func walkChain(t *IptTable, table, chain string, st *traceState, depth int) string {
	if depth > 32 {
		st.note(table + "/" + chain + ": jumps nested too deep to follow")
		return ""
	}
	c := t.Chains[chain]
	if c == nil {
		return ""
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if !r.matches(st, table, chain) {
			continue
		}
		st.tr.Steps = append(st.tr.Steps, RuleStep{Table: table, Chain: chain, Rule: r.Text, Target: r.Target, Packets: r.Packets})
		switch r.Target {
		case "":
			continue
		case "ACCEPT":
			return "ACCEPT"
		case "DROP", "REJECT":
			st.tr.VerdictBy = table + "/" + chain + ": " + r.Text
			st.tr.RejectWith = r.rejectWith
			if r.Target == "REJECT" && r.rejectWith == "" {
				st.tr.RejectWith = "icmp-port-unreachable"
			}
			return r.Target
		case "RETURN":
			return ""
		case "DNAT":
			st.applyDNAT(r.toDestination)
			return "ACCEPT"
		case "REDIRECT":
			st.toLocal, st.dnat = true, true
			return "ACCEPT"
		case "MASQUERADE", "SNAT":
			st.masq = true
			return "ACCEPT"
		case "MARK":
			switch {
			case r.orMark != 0:
				st.mark |= r.orMark
			case r.hasAndMark:
				st.mark &= r.andMark
			default:
				st.mark = (st.mark &^ r.setMask) ^ r.setMark
			}
		case "CONNMARK":
			if op := r.connmark; op != nil {
				switch {
				case op.save:
					st.connmark = st.mark
				case op.restore:
					st.mark = st.connmark
				default:
					st.connmark = (st.connmark &^ op.mask) ^ op.set
				}
			}
		case "LOG", "NFLOG", "ULOG", "CT", "NOTRACK", "TRACE", "CHECKSUM", "TCPMSS", "TOS", "DSCP", "CLASSIFY", "AUDIT", "SET", "TEE", "CONNSECMARK", "SECMARK", "IDLETIMER", "LED":
		case "NFQUEUE", "QUEUE":
			st.note(table + "/" + chain + ": " + r.Text + " (a user-space program decides)")
			return "ACCEPT"
		default:
			if _, isChain := t.Chains[r.Target]; isChain {
				v := walkChain(t, table, r.Target, st, depth+1)
				if v != "" || r.Goto {
					return v
				}
				continue
			}
			st.note(table + "/" + chain + ": target " + r.Target + " not followed")
		}
	}
	return ""
}

// matches evaluates a rule on the packet. A match the tracer cannot evaluate
// is put to the decider, which explores both answers across walks; a rule
// whose target changes nothing is taken as matching without exploring.
func (r *IptRule) matches(st *traceState, table, chain string) bool {
	var unknown []string
	for _, m := range r.tests {
		ok, u := m(st)
		if !ok {
			return false
		}
		if u != "" {
			unknown = append(unknown, u)
		}
	}
	if len(unknown) == 0 {
		return true
	}
	desc := table + "/" + chain + " `" + r.Text + "` (" + strings.Join(unknown, ", ") + ")"
	switch r.Target {
	case "", "LOG", "NFLOG", "ULOG", "CT", "NOTRACK", "TRACE", "CHECKSUM", "TCPMSS", "TOS", "DSCP", "CLASSIFY", "AUDIT", "SET":
		return true
	}
	st.note(table + "/" + chain + ": " + strings.Join(unknown, ", "))
	return st.d.choose(desc, r.Target == "ACCEPT" || r.Target == "RETURN")
}

// applyDNAT rewrites the destination as --to-destination says: an address,
// an address and port ("a:p", "[v6]:p"), or ranges, of which the first is
// taken.
func (st *traceState) applyDNAT(to string) {
	st.dnat = true
	to, _, _ = strings.Cut(to, "-") // a range: its first address
	if ap, err := netip.ParseAddrPort(to); err == nil {
		st.flow.Dst, st.flow.DPort = ap.Addr(), ap.Port()
		return
	}
	if a, err := netip.ParseAddr(strings.Trim(to, "[]")); err == nil {
		st.flow.Dst = a
		return
	}
	if host, port, ok := strings.Cut(to, ":"); ok && !strings.Contains(port, ":") {
		if a, err := netip.ParseAddr(host); err == nil {
			st.flow.Dst = a
		}
		if p, err := strconv.ParseUint(port, 10, 16); err == nil {
			st.flow.DPort = uint16(p)
		}
	}
}
