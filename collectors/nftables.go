package collectors

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
)

// Nftables is `nft list ruleset` of a namespace: the native nftables tables
// (NetworkPolicy engines, host firewalls, kube-proxy's nftables mode), their
// rules with counters, and the rules each probe flow meets. The tables
// iptables-nft manages (ip filter/nat/mangle/raw/security) are left to the
// iptables collector, which reads them with their iptables meaning.
type Nftables struct {
	Tables []string    `json:"tables"`
	Chains []NftChain  `json:"chains"`
	Traces []FlowTrace `json:"traces,omitempty"`
	// Skipped are the iptables-nft tables left to the iptables collector.
	Skipped []string `json:"skipped,omitempty"`
	// Sets are the named sets' and maps' elements (family/table/name), as
	// nft prints them; the tracer looks rules' @set references up there.
	Sets map[string][]json.RawMessage `json:"sets,omitempty"`

	once sync.Once
	ix   *nftIndex
}

// NftChain is one chain; base chains have a hook and a priority.
type NftChain struct {
	Family string    `json:"family"`
	Table  string    `json:"table"`
	Name   string    `json:"name"`
	Hook   string    `json:"hook,omitempty"`
	Prio   int       `json:"prio,omitempty"`
	Policy string    `json:"policy,omitempty"`
	Rules  []NftRule `json:"rules"`
}

// NftRule is one rule, its text summary, counter and verdict.
type NftRule struct {
	Handle  int             `json:"handle"`
	Text    string          `json:"text"`
	Comment string          `json:"comment,omitempty"`
	Packets uint64          `json:"packets"`
	Verdict string          `json:"verdict,omitempty"` // accept, drop, reject, jump X, goto X, return
	Reject  string          `json:"reject,omitempty"`
	Expr    json.RawMessage `json:"-"`
}

func init() {
	register(spec{name: "nftables", help: "nft list table for every native nftables table: chains with counters, sets and maps, and the rules each probe flow meets",
		scopes: Scopes, timeout: 10 * time.Second}, collectNftables)
}

func collectNftables(ctx context.Context, in Input) (*Nftables, error) {
	bin, err := tools.Find("nft")
	if err != nil {
		return nil, err
	}
	tables, err := listNftTables(in.NS)
	if err != nil {
		return nil, err
	}
	// The tables iptables-nft manages are the iptables collector's; only
	// the native ones are listed (each listing reads that table alone).
	var listings [][]byte
	var skipped []string
	for _, t := range tables {
		if skipNftTable(t.family, t.name) {
			skipped = append(skipped, t.family+" "+t.name)
			continue
		}
		js, err := in.NS.OutputLimit(ctx, maxRulesOutput, bin, "-j", "list", "table", t.family, t.name)
		if err != nil {
			return nil, err
		}
		listings = append(listings, js)
	}
	js, err := mergeNftListings(listings)
	if err != nil {
		return nil, err
	}
	out, err := ParseNftJSON(js)
	if err != nil {
		return nil, err
	}
	out.Skipped = skipped
	rt, err := openKernelRoutes(in.NS)
	if err != nil {
		return out, err
	}
	defer rt.Close()
	for _, f := range in.flowsIn() {
		out.Traces = append(out.Traces, out.Trace(f, f.pathIn(in.Scope), rt))
	}
	return out, nil
}

var iptablesNftTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

// skipNftTable reports a table iptables-nft manages (read by the iptables
// collector with its iptables meaning).
func skipNftTable(family, table string) bool {
	return (family == "ip" || family == "ip6") && iptablesNftTables[table]
}

// ParseNftJSON parses `nft -j list ruleset`.
func ParseNftJSON(b []byte) (*Nftables, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse nft -j output: %w", err)
	}
	out := &Nftables{}
	chains := map[string]*NftChain{}
	skip := skipNftTable
	for _, obj := range doc.Nftables {
		switch {
		case obj["set"] != nil || obj["map"] != nil:
			raw := obj["set"]
			if raw == nil {
				raw = obj["map"]
			}
			var st struct {
				Family, Table, Name string
				Elem                []json.RawMessage
			}
			json.Unmarshal(raw, &st)
			if skip(st.Family, st.Table) {
				continue
			}
			if out.Sets == nil {
				out.Sets = map[string][]json.RawMessage{}
			}
			out.Sets[st.Family+"/"+st.Table+"/"+st.Name] = st.Elem
		case obj["table"] != nil:
			var t struct{ Family, Name string }
			json.Unmarshal(obj["table"], &t)
			if skip(t.Family, t.Name) {
				out.Skipped = append(out.Skipped, t.Family+" "+t.Name)
				continue
			}
			out.Tables = append(out.Tables, t.Family+" "+t.Name)
		case obj["chain"] != nil:
			var c struct {
				Family, Table, Name, Hook, Policy string
				Prio                              int
			}
			json.Unmarshal(obj["chain"], &c)
			if skip(c.Family, c.Table) {
				continue
			}
			ch := &NftChain{Family: c.Family, Table: c.Table, Name: c.Name, Hook: c.Hook, Prio: c.Prio, Policy: c.Policy}
			chains[c.Family+"/"+c.Table+"/"+c.Name] = ch
			out.Chains = append(out.Chains, *ch)
		case obj["rule"] != nil:
			var r struct {
				Family, Table, Chain, Comment string
				Handle                        int
				Expr                          []map[string]json.RawMessage
			}
			json.Unmarshal(obj["rule"], &r)
			if skip(r.Family, r.Table) {
				continue
			}
			ch := chains[r.Family+"/"+r.Table+"/"+r.Chain]
			if ch == nil {
				continue
			}
			raw, _ := json.Marshal(r.Expr)
			rule := NftRule{Handle: r.Handle, Comment: r.Comment, Expr: raw}
			var parts []string
			for _, e := range r.Expr {
				parts = append(parts, describeNftExpr(e, &rule))
			}
			rule.Text = strings.Join(parts, " ")
			ch.Rules = append(ch.Rules, rule)
		}
	}
	for i := range out.Chains {
		c := &out.Chains[i]
		c.Rules = chains[c.Family+"/"+c.Table+"/"+c.Name].Rules
	}
	return out, nil
}

func describeNftExpr(e map[string]json.RawMessage, r *NftRule) string {
	for k, v := range e {
		switch k {
		case "match":
			var m struct {
				Op    string
				Left  json.RawMessage
				Right json.RawMessage
			}
			json.Unmarshal(v, &m)
			return fmt.Sprintf("%s %s %s", nftLeft(m.Left), m.Op, compactJSON(m.Right))
		case "counter":
			var c struct{ Packets uint64 }
			json.Unmarshal(v, &c)
			r.Packets = c.Packets
			return "counter"
		case "accept", "drop", "return", "continue":
			r.Verdict = k
			return k
		case "reject":
			var rj struct{ Type, Expr string }
			json.Unmarshal(v, &rj)
			r.Verdict, r.Reject = "reject", strings.TrimSpace(rj.Type+" "+rj.Expr)
			return "reject " + r.Reject
		case "jump", "goto":
			var j struct{ Target string }
			json.Unmarshal(v, &j)
			r.Verdict = k + " " + j.Target
			return r.Verdict
		default:
			return k
		}
	}
	return ""
}

func nftLeft(b json.RawMessage) string {
	var l struct {
		Payload *struct{ Protocol, Field string }
		Meta    *struct{ Key string }
		Ct      *struct{ Key string }
	}
	json.Unmarshal(b, &l)
	switch {
	case l.Payload != nil:
		return l.Payload.Protocol + " " + l.Payload.Field
	case l.Meta != nil:
		return "meta " + l.Meta.Key
	case l.Ct != nil:
		return "ct " + l.Ct.Key
	}
	return compactJSON(b)
}

func compactJSON(b json.RawMessage) string {
	s := strings.ReplaceAll(string(b), `"`, "")
	return s
}

var nftHooks = map[string][]string{
	"output":  {"output", "postrouting"},
	"forward": {"prerouting", "forward", "postrouting"},
	"input":   {"prerouting", "input"},
}

// nftIndex is what the tracer looks up while it walks, built once per dump.
type nftIndex struct {
	chains map[string]*NftChain         // family/table/name
	sets   map[string][]json.RawMessage // family/table/name -> elements
	exprs  map[*NftRule][]map[string]json.RawMessage
}

func (n *Nftables) index() *nftIndex {
	n.once.Do(func() {
		ix := &nftIndex{chains: map[string]*NftChain{}, sets: n.Sets, exprs: map[*NftRule][]map[string]json.RawMessage{}}
		for i := range n.Chains {
			c := &n.Chains[i]
			ix.chains[c.Family+"/"+c.Table+"/"+c.Name] = c
			for j := range c.Rules {
				var exprs []map[string]json.RawMessage
				json.Unmarshal(c.Rules[j].Expr, &exprs)
				ix.exprs[&c.Rules[j]] = exprs
			}
		}
		if ix.sets == nil {
			ix.sets = map[string][]json.RawMessage{}
		}
		n.ix = ix
	})
	return n.ix
}

// Trace walks a new flow through the base chains of each hook on the path in
// priority order, in the tables of the flow's family (inet, and ip or ip6).
// rt gives the interfaces the packet uses, as for iptables; expressions the
// tracer cannot evaluate are explored both ways.
func (n *Nftables) Trace(f Flow, path string, rt Router) FlowTrace {
	ix := n.index()
	return explore(func(d *decider) FlowTrace { return n.trace(ix, f, path, rt, d) })
}

func (n *Nftables) trace(ix *nftIndex, f Flow, path string, rt Router, d *decider) FlowTrace {
	tr := FlowTrace{Flow: f, Path: path, Verdict: "ACCEPT"}
	st := &traceState{flow: f, path: path, toLocal: path == "input", fromLocal: path == "output", d: d, tr: &tr}
	st.in, st.out, st.inKnown, st.outKnown = pathIfaces(f, path, rt)
	fam := "ip"
	if f.Dst.Is6() && !f.Dst.Is4In6() {
		fam = "ip6"
	}
	hooks := nftHooks[path]
	for i := 0; i < len(hooks); i++ {
		hook := hooks[i]
		var base []*NftChain
		for j := range n.Chains {
			c := &n.Chains[j]
			if c.Hook == hook && (c.Family == "inet" || c.Family == fam) {
				base = append(base, c)
			}
		}
		sort.SliceStable(base, func(i, j int) bool { return base[i].Prio < base[j].Prio })
		dst := st.flow.Dst
		for _, c := range base {
			v := n.walk(ix, c, st, 0)
			if v == "" {
				v = c.Policy
			}
			if v == "drop" || v == "reject" {
				tr.Verdict = strings.ToUpper(v)
				if tr.VerdictBy == "" {
					tr.VerdictBy = fmt.Sprintf("%s %s chain %s policy %s", c.Family, c.Table, c.Name, v)
				}
				tr.InIface, tr.OutIface = st.in, st.out
				return tr
			}
		}
		if st.flow.Dst != dst && rt != nil {
			if dev, local, ok := rt.Route(st.flow.Dst); ok {
				st.out, st.outKnown = dev, true
				if local && path == "forward" {
					path, st.path, st.toLocal, st.out = "input", "input", true, ""
					tr.Path = "input"
					hooks = append(hooks[:i+1:i+1], "input")
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

func (n *Nftables) walk(ix *nftIndex, c *NftChain, st *traceState, depth int) string {
	if depth > 16 {
		st.note(fmt.Sprintf("%s %s %s: jumps nested too deep to follow", c.Family, c.Table, c.Name))
		return ""
	}
	where := fmt.Sprintf("%s %s chain %s", c.Family, c.Table, c.Name)
	for i := range c.Rules {
		r := &c.Rules[i]
		v, stop := n.evalRule(ix, c, r, where, st, depth)
		if stop {
			return v
		}
	}
	return ""
}

// evalRule runs one rule's expressions in order: matches, statements and
// the verdict. stop is true when the chain ends here (a verdict, or a
// return); v is "" for a return.
func (n *Nftables) evalRule(ix *nftIndex, c *NftChain, r *NftRule, where string, st *traceState, depth int) (v string, stop bool) {
	var unknown []string
	stepped := false
	step := func(target string) {
		if !stepped {
			st.tr.Steps = append(st.tr.Steps, RuleStep{Table: c.Family + " " + c.Table, Chain: c.Name, Rule: r.Text, Target: target, Packets: r.Packets})
			stepped = true
		}
	}
	// decide settles the unevaluated matches seen so far before the rule
	// acts on the packet.
	decide := func() bool {
		if len(unknown) == 0 {
			return true
		}
		st.note(where + ": " + strings.Join(unknown, ", "))
		ok := st.d.choose(where+" `"+r.Text+"` ("+strings.Join(unknown, ", ")+")", r.Verdict == "accept" || r.Verdict == "return")
		unknown = nil
		return ok
	}
	verdict := func(kind string, target string, rej string) (string, bool) {
		if !decide() {
			return "", false
		}
		step(kind)
		switch kind {
		case "accept":
			return "accept", true
		case "drop", "reject":
			st.tr.VerdictBy = where + ": " + r.Text
			if r.Comment != "" {
				st.tr.VerdictBy += " (" + r.Comment + ")"
			}
			st.tr.RejectWith = rej
			return kind, true
		case "return":
			return "", true
		case "jump", "goto":
			t := ix.chains[c.Family+"/"+c.Table+"/"+target]
			if t == nil {
				return "", false
			}
			if v := n.walk(ix, t, st, depth+1); v != "" || kind == "goto" {
				return v, true
			}
		}
		return "", false
	}
	for _, e := range ix.exprs[r] {
		for k, raw := range e {
			switch k {
			case "match":
				ok, u := nftMatch(ix, c, raw, st)
				if !ok {
					return "", false
				}
				if u != "" {
					unknown = append(unknown, u)
				}
			case "accept", "drop", "return", "continue":
				if k == "continue" {
					continue
				}
				if v, stop := verdict(k, "", ""); stop {
					return v, true
				}
				if k != "return" {
					return "", false
				}
			case "reject":
				var rj struct{ Type, Expr string }
				json.Unmarshal(raw, &rj)
				rej := strings.TrimSpace(rj.Type + " " + rj.Expr)
				if rej == "" {
					rej = "icmp port-unreachable"
				}
				if v, stop := verdict("reject", "", rej); stop {
					return v, true
				}
				return "", false
			case "jump", "goto":
				var j struct{ Target string }
				json.Unmarshal(raw, &j)
				if v, stop := verdict(k, j.Target, ""); stop {
					return v, true
				}
			case "vmap":
				var vm struct {
					Key  json.RawMessage
					Data json.RawMessage
				}
				json.Unmarshal(raw, &vm)
				vals, desc := nftValue(vm.Key, st)
				if desc != "" {
					st.note(where + ": verdict map on " + desc + " not followed")
					continue
				}
				kind, target, found := nftMapLookup(ix, c, vm.Data, vals)
				if !found {
					continue
				}
				if v, stop := verdict(kind, target, ""); stop {
					return v, true
				}
			case "dnat", "redirect":
				if !decide() {
					return "", false
				}
				step(k)
				st.dnat = true
				if k == "redirect" {
					st.toLocal = true
				}
				var nat struct {
					Addr json.RawMessage
					Port json.RawMessage
				}
				json.Unmarshal(raw, &nat)
				if addr, desc := nftScalar(ix, c, nat.Addr, st); desc == "" {
					if a, err := netip.ParseAddr(addr); err == nil {
						st.flow.Dst = a
					}
				}
				if port, desc := nftScalar(ix, c, nat.Port, st); desc == "" {
					if p, err := strconv.ParseUint(port, 10, 16); err == nil {
						st.flow.DPort = uint16(p)
					}
				}
				return "accept", true
			case "snat", "masquerade":
				if !decide() {
					return "", false
				}
				step(k)
				st.masq = true
				return "accept", true
			case "mangle":
				var m struct {
					Key   json.RawMessage
					Value json.RawMessage
				}
				json.Unmarshal(raw, &m)
				var key struct{ Meta, Ct *struct{ Key string } }
				json.Unmarshal(m.Key, &key)
				if val, desc := nftScalar(ix, c, m.Value, st); desc == "" && key.Meta != nil && key.Meta.Key == "mark" {
					if decide() {
						if x, err := strconv.ParseUint(val, 0, 32); err == nil {
							st.mark = uint32(x)
						}
					} else {
						return "", false
					}
				}
			case "counter", "log", "limit", "notrack", "quota", "ct helper", "meter", "set", "xt", "flow", "tproxy", "synproxy":
				if k == "xt" {
					unknown = append(unknown, "an iptables (xt) match")
				}
			}
		}
	}
	return "", false
}

// nftValue evaluates a left-hand expression on the packet: one value, or one
// per element of a concatenation. desc names what could not be evaluated.
func nftValue(raw json.RawMessage, st *traceState) (vals []string, desc string) {
	var l struct {
		Payload *struct{ Protocol, Field string }
		Meta    *struct{ Key string }
		Ct      *struct{ Key string }
		Fib     *struct {
			Result string
			Flags  []string
		}
		Concat []json.RawMessage
		And    []json.RawMessage `json:"&"`
		Numgen *struct{ Mode string }
	}
	if json.Unmarshal(raw, &l) != nil {
		return nil, compactJSON(raw)
	}
	f := st.flow
	v4 := !(f.Dst.Is6() && !f.Dst.Is4In6())
	one := func(s string) ([]string, string) { return []string{s}, "" }
	switch {
	case l.Concat != nil:
		for _, c := range l.Concat {
			v, d := nftValue(c, st)
			if d != "" {
				return nil, d
			}
			vals = append(vals, v...)
		}
		return vals, ""
	case len(l.And) == 2:
		v, d := nftValue(l.And[0], st)
		var mask uint64
		if d != "" || json.Unmarshal(l.And[1], &mask) != nil || len(v) != 1 {
			return nil, "a masked value"
		}
		x, err := strconv.ParseUint(v[0], 0, 64)
		if err != nil {
			return nil, "a masked value"
		}
		return one(strconv.FormatUint(x&mask, 10))
	case l.Payload != nil:
		p := l.Payload
		switch {
		case (p.Protocol == "ip" && v4) || (p.Protocol == "ip6" && !v4):
			switch p.Field {
			case "saddr":
				return one(f.Src.String())
			case "daddr":
				return one(f.Dst.String())
			case "protocol", "nexthdr":
				return one(nftProtoName(f.Proto))
			}
		case p.Protocol == "ip" || p.Protocol == "ip6":
			return nil, "absent" // the other family's header
		case p.Protocol == "tcp" || p.Protocol == "udp" || p.Protocol == "th":
			if p.Protocol != "th" && p.Protocol != f.Proto {
				return nil, "absent"
			}
			switch p.Field {
			case "dport":
				return one(strconv.Itoa(int(f.DPort)))
			case "sport":
				if f.SPort == 0 {
					return nil, "the source port (the kernel's pick)"
				}
				return one(strconv.Itoa(int(f.SPort)))
			case "flags":
				return one("syn")
			}
		case p.Protocol == "icmp" || p.Protocol == "icmpv6":
			if (p.Protocol == "icmp") != (f.Proto == "icmp") || !f.IsICMP() {
				return nil, "absent"
			}
			if p.Field == "type" {
				return one("echo-request")
			}
		}
		return nil, p.Protocol + " " + p.Field
	case l.Meta != nil:
		switch l.Meta.Key {
		case "l4proto":
			return one(nftProtoName(f.Proto))
		case "nfproto":
			if v4 {
				return one("ipv4")
			}
			return one("ipv6")
		case "protocol":
			if v4 {
				return one("ip")
			}
			return one("ip6")
		case "iifname", "iif":
			if !st.inKnown {
				return nil, "meta " + l.Meta.Key
			}
			return one(st.in)
		case "oifname", "oif":
			if !st.outKnown {
				return nil, "meta " + l.Meta.Key
			}
			return one(st.out)
		case "mark":
			return one(strconv.FormatUint(uint64(st.mark), 10))
		case "pkttype":
			return one("host")
		}
		return nil, "meta " + l.Meta.Key
	case l.Ct != nil:
		switch l.Ct.Key {
		case "state":
			return one("new")
		case "status":
			if st.dnat {
				return one("dnat")
			}
			return one("")
		case "mark":
			return one(strconv.FormatUint(uint64(st.connmark), 10))
		}
		return nil, "ct " + l.Ct.Key
	case l.Fib != nil:
		switch l.Fib.Result {
		case "type":
			if slices.Contains(l.Fib.Flags, "daddr") {
				if st.toLocal {
					return one("local")
				}
				return one("unicast")
			}
		case "oif", "oifname":
			// fib saddr . iif: the route back to the source, which is how
			// the trace chose the input interface.
			if slices.Contains(l.Fib.Flags, "saddr") && st.inKnown {
				return one("true")
			}
		}
		return nil, "fib " + l.Fib.Result
	case l.Numgen != nil:
		st.note("random endpoint choice (numgen)")
		return one("0")
	}
	return nil, compactJSON(raw)
}

func nftProtoName(p string) string {
	if p == "icmp6" {
		return "ipv6-icmp"
	}
	return p
}

// nftScalar evaluates an expression that must give one value (a DNAT
// address, a mark): a constant, or a map lookup.
func nftScalar(ix *nftIndex, c *NftChain, raw json.RawMessage, st *traceState) (string, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", "none"
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, ""
	}
	var num json.Number
	if json.Unmarshal(raw, &num) == nil {
		return num.String(), ""
	}
	var m struct {
		Map *struct {
			Key  json.RawMessage
			Data json.RawMessage
		}
	}
	if json.Unmarshal(raw, &m) == nil && m.Map != nil {
		vals, d := nftValue(m.Map.Key, st)
		if d != "" {
			return "", d
		}
		for _, e := range nftElems(ix, c, m.Map.Data) {
			var pair []json.RawMessage
			if json.Unmarshal(e, &pair) == nil && len(pair) == 2 && nftContains(ix, c, pair[0], vals) {
				return nftScalar(ix, c, pair[1], st)
			}
		}
		return "", "no map entry"
	}
	return "", compactJSON(raw)
}

// nftMapLookup finds the verdict a verdict map gives the key.
func nftMapLookup(ix *nftIndex, c *NftChain, data json.RawMessage, key []string) (kind, target string, found bool) {
	for _, e := range nftElems(ix, c, data) {
		var pair []json.RawMessage
		if json.Unmarshal(e, &pair) != nil || len(pair) != 2 || !nftContains(ix, c, pair[0], key) {
			continue
		}
		var v map[string]json.RawMessage
		if json.Unmarshal(pair[1], &v) != nil {
			return "", "", false
		}
		for k, raw := range v {
			var j struct{ Target string }
			json.Unmarshal(raw, &j)
			return k, j.Target, true
		}
	}
	return "", "", false
}

// nftElems lists the elements of an anonymous set or map, or of a named one
// ("@name") of the chain's table.
func nftElems(ix *nftIndex, c *NftChain, raw json.RawMessage) []json.RawMessage {
	var name string
	if json.Unmarshal(raw, &name) == nil && strings.HasPrefix(name, "@") {
		return ix.sets[c.Family+"/"+c.Table+"/"+name[1:]]
	}
	var obj struct{ Set []json.RawMessage }
	if json.Unmarshal(raw, &obj) == nil && obj.Set != nil {
		return obj.Set
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	return nil
}

// nftMatch evaluates one match expression. It returns false when the packet
// certainly does not match, and a description when it cannot tell.
func nftMatch(ix *nftIndex, c *NftChain, raw json.RawMessage, st *traceState) (bool, string) {
	var m struct {
		Op    string
		Left  json.RawMessage
		Right json.RawMessage
	}
	if json.Unmarshal(raw, &m) != nil {
		return true, "a match the tracer cannot read"
	}
	neg := m.Op == "!="
	vals, desc := nftValue(m.Left, st)
	if desc == "absent" {
		// The header is not in this packet: the match fails, both ways.
		return false, ""
	}
	if desc != "" {
		return true, desc
	}
	var b bool
	if json.Unmarshal(m.Right, &b) == nil {
		// fib ... oif exists / missing.
		return (len(vals) == 1 && vals[0] == "true") == b != neg, ""
	}
	switch m.Op {
	case "==", "!=", "in", "":
		in := nftContains(ix, c, m.Right, vals)
		if m.Op == "in" && len(vals) == 1 && vals[0] == "" {
			in = false
		}
		return in != neg, ""
	}
	return true, compactJSON(m.Left) + " " + m.Op + " " + compactJSON(m.Right)
}

// nftContains reports whether a right-hand side (a value, a prefix, a range,
// a set of those, a named set, a concatenation) contains the values.
func nftContains(ix *nftIndex, c *NftChain, raw json.RawMessage, vals []string) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if strings.HasPrefix(s, "@") {
			for _, e := range nftElems(ix, c, raw) {
				if nftContains(ix, c, e, vals) {
					return true
				}
			}
			return false
		}
		return len(vals) == 1 && nftEqual(s, vals[0])
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return len(vals) == 1 && n.String() == vals[0]
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		for _, e := range list {
			if nftContains(ix, c, e, vals) {
				return true
			}
		}
		return false
	}
	var obj struct {
		Set    []json.RawMessage
		Concat []json.RawMessage
		Elem   *struct{ Val json.RawMessage }
		Prefix *struct {
			Addr string
			Len  int
		}
		Range []json.RawMessage
	}
	if json.Unmarshal(raw, &obj) != nil {
		return false
	}
	switch {
	case obj.Set != nil:
		for _, e := range obj.Set {
			if nftContains(ix, c, e, vals) {
				return true
			}
		}
	case obj.Concat != nil:
		if len(obj.Concat) != len(vals) {
			return false
		}
		for i, e := range obj.Concat {
			if !nftContains(ix, c, e, vals[i:i+1]) {
				return false
			}
		}
		return true
	case obj.Elem != nil:
		return nftContains(ix, c, obj.Elem.Val, vals)
	case obj.Prefix != nil && len(vals) == 1:
		p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", obj.Prefix.Addr, obj.Prefix.Len))
		a, err2 := netip.ParseAddr(vals[0])
		return err == nil && err2 == nil && p.Contains(a)
	case len(obj.Range) == 2 && len(vals) == 1:
		lo, hi := strings.Trim(string(obj.Range[0]), `"`), strings.Trim(string(obj.Range[1]), `"`)
		if a, err := strconv.Atoi(vals[0]); err == nil {
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			return err1 == nil && err2 == nil && a >= l && a <= h
		}
		a, err := netip.ParseAddr(vals[0])
		l, err1 := netip.ParseAddr(lo)
		h, err2 := netip.ParseAddr(hi)
		return err == nil && err1 == nil && err2 == nil && a.Compare(l) >= 0 && a.Compare(h) <= 0
	}
	return false
}

// nftEqual compares a rule's constant with a packet value: protocol names
// have aliases, ct state lists flags.
func nftEqual(rule, pkt string) bool {
	if rule == pkt {
		return true
	}
	alias := map[string]string{"icmpv6": "ipv6-icmp", "58": "ipv6-icmp", "6": "tcp", "17": "udp", "1": "icmp"}
	if a, ok := alias[rule]; ok && a == pkt {
		return true
	}
	if a, err := netip.ParseAddr(rule); err == nil {
		b, err := netip.ParseAddr(pkt)
		return err == nil && a == b
	}
	return false
}
