package collectors

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
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
	register("nftables", "nft list ruleset: native nftables chains with counters, and the rules each probe flow meets",
		[]Scope{ScopeSource, ScopePeer, ScopeNode, ScopePeerNode}, false, 3*time.Second, collectNftables)
}

func collectNftables(ctx context.Context, in Input) (*Nftables, error) {
	bin, err := tools.Find("nft")
	if err != nil {
		return nil, err
	}
	js, err := in.NS.Output(ctx, bin, "-j", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	out, err := ParseNftJSON(js)
	if err != nil {
		return nil, err
	}
	for _, f := range in.flows(in.Src, in.Scope) {
		out.Traces = append(out.Traces, out.Trace(f, f.pathIn(in.Scope)))
	}
	return out, nil
}

var iptablesNftTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

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
	skip := func(family, table string) bool {
		return (family == "ip" || family == "ip6") && iptablesNftTables[table]
	}
	for _, obj := range doc.Nftables {
		switch {
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

// Trace walks a new flow through the base chains of each hook on the path in
// priority order. Expressions it cannot evaluate count as matching and are
// named in Uncertain.
func (n *Nftables) Trace(f Flow, path string) FlowTrace {
	tr := FlowTrace{Flow: f, Path: path, Verdict: "ACCEPT"}
	byName := map[string]*NftChain{}
	for i := range n.Chains {
		c := &n.Chains[i]
		byName[c.Family+"/"+c.Table+"/"+c.Name] = c
	}
	for _, hook := range nftHooks[path] {
		var base []*NftChain
		for i := range n.Chains {
			c := &n.Chains[i]
			if c.Hook == hook && (c.Family == "inet" || c.Family == "ip") {
				base = append(base, c)
			}
		}
		sort.SliceStable(base, func(i, j int) bool { return base[i].Prio < base[j].Prio })
		for _, c := range base {
			v := n.walk(c, byName, f, &tr, 0)
			if v == "" {
				v = c.Policy
			}
			if v == "drop" || v == "reject" {
				tr.Verdict = strings.ToUpper(v)
				if tr.VerdictBy == "" {
					tr.VerdictBy = fmt.Sprintf("%s %s chain %s policy %s", c.Family, c.Table, c.Name, v)
				}
				return tr
			}
		}
	}
	return tr
}

func (n *Nftables) walk(c *NftChain, byName map[string]*NftChain, f Flow, tr *FlowTrace, depth int) string {
	if depth > 16 {
		return ""
	}
	for _, r := range c.Rules {
		var exprs []map[string]json.RawMessage
		json.Unmarshal(r.Expr, &exprs)
		ok := true
		var unsure []string
		for _, e := range exprs {
			m, has := e["match"]
			if !has {
				continue
			}
			res, sure := nftMatch(m, f)
			if !sure {
				unsure = append(unsure, describeNftExpr(e, &NftRule{}))
				continue
			}
			if !res {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if len(unsure) > 0 {
			tr.Uncertain = append(tr.Uncertain, fmt.Sprintf("%s %s %s: %s", c.Family, c.Table, c.Name, strings.Join(unsure, ", ")))
		}
		where := fmt.Sprintf("%s %s chain %s", c.Family, c.Table, c.Name)
		tr.Steps = append(tr.Steps, RuleStep{Table: c.Family + " " + c.Table, Chain: c.Name, Rule: r.Text, Target: r.Verdict, Packets: r.Packets})
		switch {
		case r.Verdict == "accept":
			return "accept"
		case r.Verdict == "drop" || r.Verdict == "reject":
			tr.VerdictBy = where + ": " + r.Text
			if r.Comment != "" {
				tr.VerdictBy += " (" + r.Comment + ")"
			}
			tr.RejectWith = r.Reject
			return r.Verdict
		case r.Verdict == "return":
			return ""
		case strings.HasPrefix(r.Verdict, "jump ") || strings.HasPrefix(r.Verdict, "goto "):
			target := byName[c.Family+"/"+c.Table+"/"+r.Verdict[5:]]
			if target != nil {
				if v := n.walk(target, byName, f, tr, depth+1); v != "" || strings.HasPrefix(r.Verdict, "goto ") {
					return v
				}
			}
		}
	}
	return ""
}

// nftMatch evaluates the common matches: addresses, protocol, ports,
// conntrack state (a probe's first packet is new), ICMP type.
func nftMatch(raw json.RawMessage, f Flow) (result, sure bool) {
	var m struct {
		Op   string
		Left struct {
			Payload *struct{ Protocol, Field string }
			Meta    *struct{ Key string }
			Ct      *struct{ Key string }
		}
		Right json.RawMessage
	}
	if json.Unmarshal(raw, &m) != nil {
		return false, false
	}
	neg := m.Op == "!="
	var got string
	switch {
	case m.Left.Payload != nil:
		p := m.Left.Payload
		switch {
		case p.Protocol == "ip" && p.Field == "saddr":
			got = f.Src.String()
		case p.Protocol == "ip" && p.Field == "daddr":
			got = f.Dst.String()
		case p.Protocol == "ip" && p.Field == "protocol":
			got = f.Proto
		case (p.Protocol == "tcp" || p.Protocol == "udp" || p.Protocol == "th") && (p.Field == "dport" || p.Field == "sport"):
			if p.Protocol != "th" && p.Protocol != f.Proto {
				return neg, true // the header is absent: the match fails
			}
			if p.Field == "sport" {
				if f.SPort == 0 {
					return false, false
				}
				got = strconv.Itoa(int(f.SPort))
			} else {
				got = strconv.Itoa(int(f.DPort))
			}
		case p.Protocol == "icmp" && p.Field == "type":
			if f.Proto != "icmp" {
				return neg, true
			}
			got = "echo-request"
		default:
			return false, false
		}
	case m.Left.Meta != nil:
		switch m.Left.Meta.Key {
		case "l4proto", "protocol":
			got = f.Proto
			if m.Left.Meta.Key == "protocol" {
				got = "ip"
			}
		case "nfproto":
			got = "ipv4"
		case "iifname":
			if f.InIface == "" {
				return false, false
			}
			got = f.InIface
		case "oifname":
			if f.OutIface == "" {
				return false, false
			}
			got = f.OutIface
		default:
			return false, false
		}
	case m.Left.Ct != nil && m.Left.Ct.Key == "state":
		got = "new"
	default:
		return false, false
	}
	in := nftRightContains(m.Right, got)
	if neg {
		return !in, true
	}
	return in, true
}

// nftRightContains reports whether a match's right side (a value, a prefix,
// a range or a set of those; a flag list for ct state) contains v.
func nftRightContains(raw json.RawMessage, v string) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s == v
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String() == v
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		for _, e := range list {
			if nftRightContains(e, v) {
				return true
			}
		}
		return false
	}
	var obj struct {
		Set    []json.RawMessage
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
			if nftRightContains(e, v) {
				return true
			}
		}
	case obj.Prefix != nil:
		p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", obj.Prefix.Addr, obj.Prefix.Len))
		a, err2 := netip.ParseAddr(v)
		return err == nil && err2 == nil && p.Contains(a)
	case len(obj.Range) == 2:
		lo, hi := strings.Trim(string(obj.Range[0]), `"`), strings.Trim(string(obj.Range[1]), `"`)
		if a, err := strconv.Atoi(v); err == nil {
			l, _ := strconv.Atoi(lo)
			h, _ := strconv.Atoi(hi)
			return a >= l && a <= h
		}
		a, err := netip.ParseAddr(v)
		l, err1 := netip.ParseAddr(lo)
		h, err2 := netip.ParseAddr(hi)
		return err == nil && err1 == nil && err2 == nil && a.Compare(l) >= 0 && a.Compare(h) <= 0
	}
	return false
}
