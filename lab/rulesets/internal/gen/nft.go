package gen

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// nftMetainfo is the metainfo object nft 1.0.6 (Debian 12) prints first.
var nftMetainfo = obj{{"metainfo", obj{{"version", "1.0.6"}, {"release_name", "Lester Gooch #5"}, {"json_schema_version", 1}}}}

// nftRuleset builds `nft -j list ruleset` output. Handles are assigned as
// the kernel does when the ruleset is loaded into an empty namespace in
// load order (tables, then each table's chains, sets and rules; an
// anonymous set in a rule takes a handle before its rule).
type nftRuleset struct {
	tables []*nftTable
}

type nftTable struct {
	family, name string
	sets         []obj // set and map objects, without handle
	setKinds     []string
	chains       []*nftChain
	index        map[string]*nftChain
}

type nftChain struct {
	name              string
	typ, hook, policy string
	prio              int
	base              bool
	rules             []nftRule
}

type nftRule struct {
	comment string
	expr    arr
	anon    int // anonymous sets the rule carries
}

func (rs *nftRuleset) table(family, name string) *nftTable {
	t := &nftTable{family: family, name: name, index: map[string]*nftChain{}}
	rs.tables = append(rs.tables, t)
	return t
}

func (t *nftTable) chain(name string) *nftChain {
	if c := t.index[name]; c != nil {
		return c
	}
	c := &nftChain{name: name}
	t.chains = append(t.chains, c)
	t.index[name] = c
	return c
}

func (t *nftTable) baseChain(name, typ, hook string, prio int) *nftChain {
	c := t.chain(name)
	c.base, c.typ, c.hook, c.prio, c.policy = true, typ, hook, prio, "accept"
	return c
}

// set adds a set (kind "set") or verdict map (kind "map") with its elements.
func (t *nftTable) set(kind, name string, typ any, comment string, elems arr) {
	o := obj{{"family", t.family}, {"name", name}, {"table", t.name}, {"type", typ}, {"handle", 0}}
	if comment != "" {
		o = append(o, kv{"comment", comment})
	}
	if kind == "map" {
		o = append(o, kv{"map", "verdict"})
	}
	if len(elems) > 0 {
		o = append(o, kv{"elem", elems})
	}
	t.sets = append(t.sets, o)
	t.setKinds = append(t.setKinds, kind)
}

func (c *nftChain) add(comment string, expr ...any) {
	// A literal set in a rule (numgen's vmap of endpoints) is an anonymous
	// set, which the kernel numbers with the table's next handle.
	anon := 0
	for _, e := range expr {
		if strings.Contains(jsonText(e), `"set": [`) {
			anon++
		}
	}
	c.rules = append(c.rules, nftRule{comment: comment, expr: arr(expr), anon: anon})
}

func jsonText(v any) string {
	var b strings.Builder
	writeJSON(&b, v)
	return b.String()
}

func (rs *nftRuleset) json() string {
	list := arr{nftMetainfo}
	for ti, t := range rs.tables {
		list = append(list, obj{{"table", obj{{"family", t.family}, {"name", t.name}, {"handle", ti + 1}}}})
		h := 0
		chainHandle := map[string]int{}
		for _, c := range t.chains {
			h++
			chainHandle[c.name] = h
		}
		for i, s := range t.sets {
			h++
			s2 := append(obj{}, s...)
			for j := range s2 {
				if s2[j].k == "handle" {
					s2[j].v = h
				}
			}
			list = append(list, obj{{t.setKinds[i], s2}})
		}
		for _, c := range t.chains {
			o := obj{{"family", t.family}, {"table", t.name}, {"name", c.name}, {"handle", chainHandle[c.name]}}
			if c.base {
				o = append(o, kv{"type", c.typ}, kv{"hook", c.hook}, kv{"prio", c.prio}, kv{"policy", c.policy})
			}
			list = append(list, obj{{"chain", o}})
		}
		for _, c := range t.chains {
			for _, r := range c.rules {
				h += r.anon + 1
				o := obj{{"family", t.family}, {"table", t.name}, {"chain", c.name}, {"handle", h}}
				if r.comment != "" {
					o = append(o, kv{"comment", r.comment})
				}
				o = append(o, kv{"expr", r.expr})
				list = append(list, obj{{"rule", o}})
			}
		}
	}
	var b strings.Builder
	writeJSON(&b, obj{{"nftables", list}})
	b.WriteByte('\n')
	return b.String()
}

// Expression builders, in the JSON shapes nft prints.
func payload(proto, field string) obj {
	return obj{{"payload", obj{{"protocol", proto}, {"field", field}}}}
}
func meta(key string) obj { return obj{{"meta", obj{{"key", key}}}} }
func match(op string, left, right any) obj {
	return obj{{"match", obj{{"op", op}, {"left", left}, {"right", right}}}}
}
func prefix(cidr string) any {
	p := netip.MustParsePrefix(cidr)
	if p.Bits() == 32 {
		return p.Addr().String()
	}
	return obj{{"prefix", obj{{"addr", p.Addr().String()}, {"len", p.Bits()}}}}
}
func ctNew() obj        { return match("in", obj{{"ct", obj{{"key", "state"}}}}, "new") }
func jump(t string) obj { return obj{{"jump", obj{{"target", t}}}} }
func gotoV(t string) obj {
	return obj{{"goto", obj{{"target", t}}}}
}
func verdict(v string) obj { return obj{{v, null{}}} }
func vmap(key any, data any) obj {
	return obj{{"vmap", obj{{"key", key}, {"data", data}}}}
}
func concat(xs ...any) obj { return obj{{"concat", arr(xs)}} }
func markExpr(op string, v int) obj {
	return obj{{"mangle", obj{{"key", meta("mark")}, {"value", obj{{op, arr{meta("mark"), v}}}}}}}
}
func fibLocal(dir string) obj {
	return match("==", obj{{"fib", obj{{"result", "type"}, {"flags", arr{dir}}}}}, "local")
}

// nftHash is kube-proxy's hashAndTruncate prefix for nftables chain names.
func nftHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:8]
}

// kubeProxyNft writes table ip kube-proxy as kube-proxy's nftables mode
// (1.31+) lays it out: verdict maps keyed by address, protocol and port lead
// to one chain per Service port and one per endpoint.
func kubeProxyNft(rs *nftRuleset, svcs []*service, clusterCIDR, serviceCIDR, nodeIP string) {
	t := rs.table("ip", "kube-proxy")
	base := func(s *service, p svcPort) string {
		port := p.name
		if port == "" {
			port = strconv.Itoa(p.port)
		}
		return fmt.Sprintf("%s/%s/%s/%s", s.ns, s.name, p.proto, port)
	}
	chainName := func(kind, b string) string { return kind + "-" + nftHash(b) + "-" + b }
	daddrProtoPort := concat(payload("ip", "daddr"), meta("l4proto"), payload("th", "dport"))

	for _, c := range []struct {
		name, typ, hook string
		prio            int
	}{
		{"filter-prerouting", "filter", "prerouting", -110},
		{"filter-input", "filter", "input", -110},
		{"filter-forward", "filter", "forward", -110},
		{"filter-output", "filter", "output", -110},
		{"filter-output-post-dnat", "filter", "output", -90},
		{"nat-prerouting", "nat", "prerouting", -100},
		{"nat-output", "nat", "output", -100},
		{"nat-postrouting", "nat", "postrouting", 100},
	} {
		t.baseChain(c.name, c.typ, c.hook, c.prio)
	}
	for _, n := range []string{"cluster-ips-check", "firewall-check", "mark-for-masquerade", "masquerading",
		"nodeport-endpoints-check", "reject-chain", "service-endpoints-check", "services"} {
		t.chain(n)
	}
	t.index["filter-prerouting"].add("", ctNew(), jump("firewall-check"))
	t.index["filter-input"].add("", ctNew(), jump("nodeport-endpoints-check"))
	t.index["filter-input"].add("", ctNew(), jump("service-endpoints-check"))
	t.index["filter-forward"].add("", ctNew(), jump("service-endpoints-check"))
	t.index["filter-forward"].add("", ctNew(), jump("cluster-ips-check"))
	t.index["filter-output"].add("", ctNew(), jump("service-endpoints-check"))
	t.index["filter-output"].add("", ctNew(), jump("firewall-check"))
	t.index["filter-output-post-dnat"].add("", ctNew(), jump("cluster-ips-check"))
	t.index["nat-prerouting"].add("", jump("services"))
	t.index["nat-output"].add("", jump("services"))
	t.index["nat-postrouting"].add("", jump("masquerading"))
	t.index["cluster-ips-check"].add("Reject traffic to invalid ports of ClusterIPs",
		match("==", payload("ip", "daddr"), "@cluster-ips"), rejectICMP())
	t.index["cluster-ips-check"].add("Drop traffic to unallocated ClusterIPs",
		match("==", payload("ip", "daddr"), prefix(serviceCIDR)), verdict("drop"))
	t.index["firewall-check"].add("", vmap(daddrProtoPort, "@firewall-ips"))
	t.index["mark-for-masquerade"].add("", markExpr("|", masqMark))
	t.index["masquerading"].add("", match("==", obj{{"&", arr{meta("mark"), masqMark}}}, 0), verdict("return"))
	t.index["masquerading"].add("", markExpr("^", masqMark))
	t.index["masquerading"].add("", obj{{"masquerade", obj{{"flags", "fully-random"}}}})
	t.index["nodeport-endpoints-check"].add("", match("==", payload("ip", "daddr"), "@nodeport-ips"),
		vmap(concat(meta("l4proto"), payload("th", "dport")), "@no-endpoint-nodeports"))
	t.index["reject-chain"].add("", rejectICMP())
	t.index["service-endpoints-check"].add("", vmap(daddrProtoPort, "@no-endpoint-services"))
	t.index["services"].add("", vmap(daddrProtoPort, "@service-ips"))
	t.index["services"].add("", match("==", payload("ip", "daddr"), "@nodeport-ips"),
		vmap(concat(meta("l4proto"), payload("th", "dport")), "@service-nodeports"))

	var clusterIPs, svcElems, npElems, noEpElems, noEpNP, fwElems arr
	elem := func(key any, comment string, v obj) arr {
		return arr{obj{{"elem", obj{{"val", key}, {"comment", comment}}}}, v}
	}
	for _, s := range svcs {
		clusterIPs = append(clusterIPs, s.clusterIP)
		for _, p := range s.ports {
			b := base(s, p)
			spn := s.portName(p)
			svcChain, extChain := chainName("service", b), chainName("external", b)
			fwChain, localChain := chainName("firewall", b), chainName("local", b)
			key := func(ip string) obj { return concat(ip, p.proto, p.port) }
			local := s.localEps()
			hasEps := len(s.eps) > 0
			hasExtEps := hasEps && (!s.etpLocal || len(local) > 0)
			usesExt := hasEps && (p.nodePort != 0 || s.lbIP != "" || s.externalIP != "")
			if !hasEps {
				noEpElems = append(noEpElems, elem(key(s.clusterIP), spn, gotoV("reject-chain")))
			} else {
				svcElems = append(svcElems, elem(key(s.clusterIP), spn, gotoV(svcChain)))
			}
			extVerdict := gotoV("reject-chain")
			if hasEps {
				extVerdict = verdict("drop")
			}
			for _, ip := range []string{s.externalIP, s.lbIP} {
				if ip == "" {
					continue
				}
				if hasEps {
					target := extChain
					if ip == s.lbIP && len(s.lbSources) > 0 {
						fwElems = append(fwElems, elem(key(ip), spn, gotoV(fwChain)))
					}
					svcElems = append(svcElems, elem(key(ip), spn, gotoV(target)))
				}
				if !hasExtEps {
					noEpElems = append(noEpElems, elem(key(ip), spn, extVerdict))
				}
			}
			if p.nodePort != 0 {
				npKey := concat(p.proto, p.nodePort)
				if hasEps {
					npElems = append(npElems, elem(npKey, spn, gotoV(extChain)))
				}
				if !hasExtEps {
					noEpNP = append(noEpNP, elem(npKey, spn, extVerdict))
				}
			}
			if !hasEps {
				continue
			}
			sc := t.chain(svcChain)
			sc.add("", match("==", payload("ip", "daddr"), s.clusterIP), match("==", payload(p.proto, "dport"), p.port),
				match("!=", payload("ip", "saddr"), prefix(clusterCIDR)), jump("mark-for-masquerade"))
			epChains := func(eps []endpoint) arr {
				var set arr
				for i, e := range eps {
					set = append(set, arr{i, gotoV(chainName("endpoint", fmt.Sprintf("%s__%s/%d", b, e.ip, p.target)))})
				}
				return set
			}
			numgen := func(n int) obj {
				return obj{{"numgen", obj{{"mode", "random"}, {"mod", n}, {"offset", 0}}}}
			}
			sc.add("", vmap(numgen(len(s.eps)), obj{{"set", epChains(s.eps)}}))
			if usesExt {
				ec := t.chain(extChain)
				if !s.etpLocal {
					ec.add("", jump("mark-for-masquerade"))
					ec.add("", gotoV(svcChain))
				} else {
					ec.add("short-circuit pod traffic", match("==", payload("ip", "saddr"), prefix(clusterCIDR)), gotoV(svcChain))
					ec.add("masquerade local traffic", fibLocal("saddr"), jump("mark-for-masquerade"))
					ec.add("short-circuit local traffic", fibLocal("saddr"), gotoV(svcChain))
					if len(local) > 0 {
						ec.add("", gotoV(localChain))
					}
				}
			}
			if s.lbIP != "" && len(s.lbSources) > 0 {
				fc := t.chain(fwChain)
				fc.add("", match("!=", payload("ip", "saddr"), prefix(s.lbSources[0])), verdict("drop"))
			}
			if s.etpLocal && len(local) > 0 {
				lc := t.chain(localChain)
				lc.add("", vmap(numgen(len(local)), obj{{"set", epChains(local)}}))
			}
			for _, e := range s.eps {
				ec := t.chain(chainName("endpoint", fmt.Sprintf("%s__%s/%d", b, e.ip, p.target)))
				ec.add("", match("==", payload("ip", "saddr"), e.ip), jump("mark-for-masquerade"))
				ec.add("", match("==", meta("l4proto"), p.proto), obj{{"dnat", obj{{"addr", e.ip}, {"port", p.target}}}})
			}
		}
	}
	three := arr{"ipv4_addr", "inet_proto", "inet_service"}
	two := arr{"inet_proto", "inet_service"}
	t.set("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs", clusterIPs)
	t.set("set", "nodeport-ips", "ipv4_addr", "IPs that accept NodePort traffic", arr{nodeIP})
	t.set("map", "no-endpoint-services", three, "vmap to drop or reject packets to services with no endpoints", noEpElems)
	t.set("map", "no-endpoint-nodeports", two, "vmap to drop or reject packets to service nodeports with no endpoints", noEpNP)
	t.set("map", "firewall-ips", three, "destinations that are subject to LoadBalancerSourceRanges", fwElems)
	t.set("map", "service-ips", three, "ClusterIP, ExternalIP and LoadBalancer IP traffic", svcElems)
	t.set("map", "service-nodeports", two, "NodePort traffic", npElems)
}

// flannelNft is flannel's nftables mode (table ip flannel-ipv4), with the
// same effect as the lab's flanneld iptables rules.
func flannelNft(rs *nftRuleset, clusterCIDR, podCIDR string) {
	t := rs.table("ip", "flannel-ipv4")
	post := t.baseChain("postrtg", "nat", "postrouting", 100)
	fwd := t.baseChain("forward", "filter", "forward", 0)
	sa, da := payload("ip", "saddr"), payload("ip", "daddr")
	post.add("", match("==", obj{{"&", arr{meta("mark"), masqMark}}}, masqMark), verdict("return"))
	post.add("", match("==", sa, prefix(podCIDR)), match("==", da, prefix(clusterCIDR)), verdict("return"))
	post.add("", match("==", sa, prefix(clusterCIDR)), match("==", da, prefix(podCIDR)), verdict("return"))
	post.add("", match("!=", sa, prefix(clusterCIDR)), match("==", da, prefix(podCIDR)), verdict("return"))
	post.add("", match("==", sa, prefix(clusterCIDR)), match("!=", da, prefix("224.0.0.0/4")),
		obj{{"masquerade", obj{{"flags", "fully-random"}}}})
	post.add("", match("!=", sa, prefix(clusterCIDR)), match("==", da, prefix(clusterCIDR)),
		obj{{"masquerade", obj{{"flags", "fully-random"}}}})
	fwd.add("", match("==", sa, prefix(clusterCIDR)), verdict("accept"))
	fwd.add("", match("==", da, prefix(clusterCIDR)), verdict("accept"))
}

// nftCounts is the number of tables, chains and rules.
func (rs *nftRuleset) counts() (tables, chains, rules int) {
	for _, t := range rs.tables {
		tables++
		chains += len(t.chains)
		for _, c := range t.chains {
			rules += len(c.rules)
		}
	}
	return
}

// rejectICMP is a plain `reject`, which nft lists with its default type.
func rejectICMP() obj {
	return obj{{"reject", obj{{"type", "icmp"}, {"expr", "port-unreachable"}}}}
}
