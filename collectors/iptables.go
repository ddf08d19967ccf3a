package collectors

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
)

// Iptables is `iptables-save -c` of a namespace, parsed, and for each probe
// flow the rules it meets in the order the kernel walks them: which match,
// what they do (DROP, REJECT, DNAT, MASQUERADE...), and their counters.
type Iptables struct {
	Tables map[string]*IptTable `json:"tables"`
	Traces []FlowTrace          `json:"traces,omitempty"`
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

// IptRule is one rule.
type IptRule struct {
	Text    string `json:"text"` // as iptables-save prints it, without counters
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Target  string `json:"target,omitempty"`
	// Parsed matches and target options.
	Src, Dst         string   `json:"-"`
	NotSrc, NotDst   bool     `json:"-"`
	Proto            string   `json:"-"`
	NotProto         bool     `json:"-"`
	In, Out          string   `json:"-"`
	NotIn, NotOut    bool     `json:"-"`
	DPorts, SPorts   []string `json:"-"`
	NotDPort         bool     `json:"-"`
	CtStates         []string `json:"-"`
	NotCtState       bool     `json:"-"`
	Mark, MarkMask   uint32   `json:"-"`
	HasMark, NotMark bool     `json:"-"`
	Comment          string   `json:"comment,omitempty"`
	ICMPType         string   `json:"-"`
	DstType, SrcType string   `json:"-"` // addrtype match
	NotDstType       bool     `json:"-"`
	Probability      bool     `json:"-"`
	Unknown          []string `json:"-"` // matches not evaluated
	ToDestination    string   `json:"-"`
	RejectWith       string   `json:"-"`
	SetMark, SetMask uint32   `json:"-"`
	OrMark           uint32   `json:"-"`
}

// FlowTrace is the walk of one flow through the namespace's rules.
type FlowTrace struct {
	Flow Flow `json:"flow"`
	// Path is "output" (from this namespace), "forward" (through it) or
	// "input" (to it).
	Path  string     `json:"path"`
	Steps []RuleStep `json:"steps"`
	// Verdict is ACCEPT, DROP or REJECT; NATTo the address a DNAT chose.
	Verdict    string `json:"verdict"`
	VerdictBy  string `json:"verdict_by,omitempty"` // table/chain rule text
	RejectWith string `json:"reject_with,omitempty"`
	NATTo      string `json:"nat_to,omitempty"`
	Masquerade bool   `json:"masquerade,omitempty"`
	// Uncertain lists matches that could not be evaluated on the way.
	Uncertain []string `json:"uncertain,omitempty"`
}

// RuleStep is one rule that matched.
type RuleStep struct {
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Rule    string `json:"rule"`
	Target  string `json:"target"`
	Packets uint64 `json:"packets"`
}

func init() {
	register("iptables", "iptables-save -c (filter, nat, mangle, raw) with counters, and the rules each probe flow meets: DROP, REJECT, DNAT, MASQUERADE, KUBE-* jumps",
		[]Scope{ScopeSource, ScopePeer, ScopeNode, ScopePeerNode}, false, 3*time.Second, collectIptables)
}

func collectIptables(ctx context.Context, in Input) (*Iptables, error) {
	bin, err := tools.Find("iptables-save")
	if err != nil {
		return nil, err
	}
	text, err := in.NS.Output(ctx, bin, "-c")
	if err != nil {
		return nil, err
	}
	out, err := ParseIptablesSave(string(text))
	if err != nil {
		return nil, err
	}
	for _, f := range in.flows(in.Src, in.Scope) {
		out.Traces = append(out.Traces, out.Trace(f, f.pathIn(in.Scope)))
	}
	return out, nil
}

// ParseIptablesSave parses the output of `iptables-save -c`.
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
			c := &IptChain{}
			if len(f) > 1 && f[1] != "-" {
				c.Policy = f[1]
			}
			if len(f) > 2 {
				c.Packets, _ = parseCounters(f[2])
			}
			t.Chains[f[0]] = c
			t.Order = append(t.Order, f[0])
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
	module := ""
	for i := 0; i < len(a); i++ {
		arg := a[i]
		if arg == "!" {
			neg = true
			continue
		}
		switch arg {
		case "-s", "--source":
			r.Src, r.NotSrc = next(&i), neg
		case "-d", "--destination":
			r.Dst, r.NotDst = next(&i), neg
		case "-p", "--protocol":
			r.Proto, r.NotProto = strings.ToLower(next(&i)), neg
		case "-i", "--in-interface":
			r.In, r.NotIn = next(&i), neg
		case "-o", "--out-interface":
			r.Out, r.NotOut = next(&i), neg
		case "-m", "--match":
			module = next(&i)
		case "-j", "--jump", "-g", "--goto":
			r.Target = next(&i)
		case "--dport", "--destination-port", "--dports", "--destination-ports":
			r.DPorts, r.NotDPort = strings.Split(next(&i), ","), neg
		case "--sport", "--source-port", "--sports", "--source-ports":
			r.SPorts = strings.Split(next(&i), ",")
		case "--ctstate", "--state":
			r.CtStates, r.NotCtState = strings.Split(next(&i), ","), neg
		case "--mark":
			v := next(&i)
			r.HasMark, r.NotMark = true, neg
			r.Mark, r.MarkMask = parseMark(v)
		case "--dst-type":
			r.DstType, r.NotDstType = next(&i), neg
		case "--src-type":
			r.SrcType = next(&i)
		case "--comment":
			r.Comment = next(&i)
		case "--icmp-type":
			r.ICMPType = next(&i)
		case "--probability", "--mode", "--every", "--packet":
			r.Probability = true
			next(&i)
		case "--to-destination":
			r.ToDestination = next(&i)
		case "--reject-with":
			r.RejectWith = next(&i)
		case "--set-xmark", "--set-mark":
			r.SetMark, r.SetMask = parseMark(next(&i))
		case "--or-mark":
			r.OrMark, _ = parseMark(next(&i))
		case "--syn", "--tcp-flags", "--random-fully", "--random", "--to-ports", "--to-source", "--log-prefix",
			"--persistent", "--mask":
			if arg == "--tcp-flags" {
				next(&i)
			}
			if arg != "--syn" && arg != "--random-fully" && arg != "--random" && arg != "--persistent" {
				next(&i)
			}
		default:
			if strings.HasPrefix(arg, "--") {
				r.Unknown = append(r.Unknown, module+" "+arg)
				// Options take one value unless the next token is an option.
				if i+1 < len(a) && !strings.HasPrefix(a[i+1], "-") && a[i+1] != "!" {
					i++
				}
			}
		}
		neg = false
	}
	return r
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

// hookPaths are the tables and chains a packet meets, in the kernel's order.
var hookPaths = map[string][][2]string{
	"output":  {{"raw", "OUTPUT"}, {"mangle", "OUTPUT"}, {"nat", "OUTPUT"}, {"filter", "OUTPUT"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}},
	"forward": {{"raw", "PREROUTING"}, {"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"mangle", "FORWARD"}, {"filter", "FORWARD"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}},
	"input":   {{"raw", "PREROUTING"}, {"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"mangle", "INPUT"}, {"filter", "INPUT"}},
}

// Trace walks a new flow through the rules along a path ("output", "forward"
// or "input"), following jumps and returns, applying DNAT and marks as it
// goes.
func (ipt *Iptables) Trace(f Flow, path string) FlowTrace {
	tr := FlowTrace{Flow: f, Path: path, Verdict: "ACCEPT"}
	st := &traceState{flow: f, toLocal: path == "input", fromLocal: path == "output"}
	for _, hook := range hookPaths[path] {
		t := ipt.Tables[hook[0]]
		if t == nil || t.Chains[hook[1]] == nil {
			continue
		}
		v := ipt.walk(hook[0], hook[1], st, &tr, 0)
		if v == "" {
			v = t.Chains[hook[1]].Policy
		}
		switch v {
		case "DROP", "REJECT":
			tr.Verdict = v
			if tr.VerdictBy == "" {
				tr.VerdictBy = hook[0] + "/" + hook[1] + " policy " + v
			}
			return tr
		}
	}
	if st.flow.Dst != f.Dst || st.flow.DPort != f.DPort {
		tr.NATTo = netip.AddrPortFrom(st.flow.Dst, st.flow.DPort).String()
	}
	return tr
}

type traceState struct {
	flow               Flow
	mark               uint32
	toLocal, fromLocal bool
}

// walk evaluates a chain; it returns a terminal verdict, or "" to continue
// after the calling rule (RETURN or end of a user chain).
func (ipt *Iptables) walk(table, chain string, st *traceState, tr *FlowTrace, depth int) string {
	if depth > 32 {
		return ""
	}
	c := ipt.Tables[table].Chains[chain]
	if c == nil {
		return ""
	}
	for _, r := range c.Rules {
		ok, unsure := r.matches(st)
		if !ok {
			continue
		}
		if len(unsure) > 0 {
			tr.Uncertain = append(tr.Uncertain, table+"/"+chain+": "+strings.Join(unsure, ", "))
		}
		tr.Steps = append(tr.Steps, RuleStep{Table: table, Chain: chain, Rule: r.Text, Target: r.Target, Packets: r.Packets})
		switch r.Target {
		case "":
			continue
		case "ACCEPT":
			return "ACCEPT"
		case "DROP", "REJECT":
			tr.VerdictBy = table + "/" + chain + ": " + r.Text
			tr.RejectWith = r.RejectWith
			return r.Target
		case "RETURN":
			return ""
		case "DNAT":
			if ap, err := netip.ParseAddrPort(r.ToDestination); err == nil {
				st.flow.Dst, st.flow.DPort = ap.Addr(), ap.Port()
			} else if a, err := netip.ParseAddr(r.ToDestination); err == nil {
				st.flow.Dst = a
			}
			return "ACCEPT"
		case "MASQUERADE", "SNAT":
			tr.Masquerade = true
			return "ACCEPT"
		case "MARK":
			if r.OrMark != 0 {
				st.mark |= r.OrMark
			} else {
				st.mark = (st.mark &^ r.SetMask) ^ r.SetMark
			}
		case "LOG", "CT", "NOTRACK", "CONNMARK", "CHECKSUM", "TRACE":
		default:
			if _, isChain := ipt.Tables[table].Chains[r.Target]; isChain {
				if v := ipt.walk(table, r.Target, st, tr, depth+1); v != "" {
					return v
				}
			}
		}
	}
	return ""
}

// matches evaluates a rule against the flow. Matches it cannot evaluate are
// taken as matching and named, so a trace never hides a rule that may apply.
func (r IptRule) matches(st *traceState) (bool, []string) {
	f := st.flow
	if r.Src != "" && inCIDR(f.Src, r.Src) == r.NotSrc {
		return false, nil
	}
	if r.Dst != "" && inCIDR(f.Dst, r.Dst) == r.NotDst {
		return false, nil
	}
	if r.Proto != "" && r.Proto != "all" && (r.Proto == f.Proto) == r.NotProto {
		return false, nil
	}
	var unsure []string
	if r.In != "" {
		if f.InIface == "" {
			unsure = append(unsure, "-i "+r.In)
		} else if ifaceMatch(f.InIface, r.In) == r.NotIn {
			return false, nil
		}
	}
	if r.Out != "" {
		if f.OutIface == "" {
			unsure = append(unsure, "-o "+r.Out)
		} else if ifaceMatch(f.OutIface, r.Out) == r.NotOut {
			return false, nil
		}
	}
	if len(r.DPorts) > 0 && portIn(f.DPort, r.DPorts) == r.NotDPort {
		return false, nil
	}
	if len(r.SPorts) > 0 && f.SPort != 0 && !portIn(f.SPort, r.SPorts) {
		return false, nil
	}
	if len(r.CtStates) > 0 {
		isNew := false
		for _, s := range r.CtStates {
			if s == "NEW" {
				isNew = true
			}
		}
		if isNew == r.NotCtState {
			return false, nil
		}
	}
	// addrtype LOCAL: the namespace's own addresses. A probe's flow is to a
	// local address only on the input path, from one only on output.
	if r.DstType == "LOCAL" && st.toLocal == r.NotDstType {
		return false, nil
	}
	if r.SrcType == "LOCAL" && !st.fromLocal {
		return false, nil
	}
	if r.HasMark && ((st.mark&r.MarkMask) == r.Mark) == r.NotMark {
		return false, nil
	}
	if r.ICMPType != "" && f.Proto == "icmp" && r.ICMPType != "8" && r.ICMPType != "echo-request" && r.ICMPType != "any" {
		return false, nil
	}
	if r.Probability {
		unsure = append(unsure, "random endpoint choice (statistic)")
	}
	unsure = append(unsure, r.Unknown...)
	return true, unsure
}

func inCIDR(a netip.Addr, s string) bool {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Contains(a)
	}
	b, err := netip.ParseAddr(s)
	return err == nil && a == b
}

func ifaceMatch(name, pat string) bool {
	if strings.HasSuffix(pat, "+") {
		return strings.HasPrefix(name, strings.TrimSuffix(pat, "+"))
	}
	return name == pat
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
			b, _ = strconv.Atoi(hi)
		}
		if int(p) >= a && int(p) <= b {
			return true
		}
	}
	return false
}
