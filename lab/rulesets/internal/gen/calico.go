package gen

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Calico's address plan: its own IP pool, so that its workloads never share
// addresses with the lab's pods (which flannel numbers from the ClusterCIDR).
const (
	calicoPool      = "198.18.128.0/18"
	calicoLocalBase = "198.18.131.0" // this node's IPAM blocks
	calicoVXLANPort = "4789"
	// Calico's mark bits (felix defaults: 0xffff0000, allocated from the top).
	calAccept = 0x10000
	calPass   = 0x20000
	calScr    = 0x40000
	calAll    = 0xf0000
	calEph    = 0xe0000
	peerNodes = "198.18.20.0" // underlay addresses of the other (synthetic) nodes
)

type calicoSpec struct {
	workloads int
	policies  int
	seed      uint64
}

type calWorkload struct {
	ns, pod, iface, ip, sa string
	in, out                []*calPolicy
}

type calPolicy struct {
	name, ns      string
	inbound       bool
	chain         string
	rules         []string // matches and target of each rule, after the cali: id
	ruleProto     []string // the -p/-s/-d part of each rule, before the id
	selectorIPSet string
}

// caliRuleIDs gives each rule of a chain the 16-character id felix puts in
// its "cali:" comment: a running SHA-224 over the chain name and every rule so
// far, so that an id changes when anything before it changes.
func caliRuleIDs(chain string, rules []string) []string {
	h := sha256.New224()
	h.Write([]byte(chain))
	ids := make([]string, len(rules))
	for i, r := range rules {
		h.Write([]byte(r))
		ids[i] = base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:16]
	}
	return ids
}

// calRule is one felix rule: pre is what iptables-save prints before the
// comment match (-s/-d/-i/-o/-p), post the rest.
type calRule struct{ pre, post string }

func r(pre, post string) calRule { return calRule{pre, post} }

// caliChain writes a felix chain with its rule ids.
func caliChain(ipt *iptables, table, chain string, heat int, rules ...calRule) {
	ipt.chain(table, chain)
	texts := make([]string, len(rules))
	for i, x := range rules {
		texts[i] = x.pre + "|" + x.post
	}
	ids := caliRuleIDs(table+"/"+chain, texts)
	for i, x := range rules {
		args := []string{}
		if x.pre != "" {
			args = append(args, x.pre)
		}
		args = append(args, comment("cali:"+ids[i]))
		if x.post != "" {
			args = append(args, x.post)
		}
		ipt.add(table, chain, heat, args...)
	}
}

// calicoHashName is felix's length-limited name: the name itself when it
// fits, else "_" and a hash.
func calicoHashName(prefix, name string, max int) string {
	if len(prefix)+len(name) <= max {
		return prefix + name
	}
	h := sha256.Sum224([]byte(name))
	return prefix + "_" + base64.RawURLEncoding.EncodeToString(h[:])[:max-len(prefix)-1]
}

// calico writes felix's chains for a node with workloads on cali* interfaces.
// Its head rules (the jumps felix inserts at the top of the built-in chains)
// go first, so call it before the other owners, then calicoTail after them.
func calico(ipt *iptables, sets *ipsets, spec calicoSpec, nodeIP string) {
	rg := newRNG(spec.seed)
	local := netip.MustParseAddr(calicoLocalBase)

	// Sets felix keeps for the pools and the hosts.
	sets.set("cali40all-ipam-pools", "hash:net", 1048576).add(calicoPool)
	sets.set("cali40masq-ipam-pools", "hash:net", 1048576).add(calicoPool)
	hosts := []string{nodeIP}
	for i := 0; i < 24; i++ {
		hosts = append(hosts, addr4(ip4(netip.MustParseAddr(peerNodes))+uint32(11+i)))
	}
	sort.Strings(hosts)
	sets.set("cali40all-vxlan-net", "hash:net", 1048576).add(hosts...)
	sets.set("cali40all-hosts-net", "hash:net", 1048576).add(hosts...)

	// Workloads on this node.
	var wls []*calWorkload
	for i := 0; i < spec.workloads; i++ {
		ns := pick(rg, namespaces)
		pod := fmt.Sprintf("%s-%s-%05x", pick(rg, words), pick(rg, words), rg.intn(1<<20))
		sum := sha1.Sum([]byte(ns + "." + pod))
		wls = append(wls, &calWorkload{ns: ns, pod: pod, iface: "cali" + hex.EncodeToString(sum[:])[:11],
			ip: addr4(ip4(local) + uint32(2+i)), sa: pick(rg, []string{"default", "default", "app", "builder"})})
	}
	sort.Slice(wls, func(i, j int) bool { return wls[i].iface < wls[j].iface })

	// Policies, each selecting some local workloads and allowing traffic from
	// a selector's pods (an ipset of workload addresses, some of them on
	// other nodes) to some ports.
	var pols []*calPolicy
	for i := 0; i < spec.policies; i++ {
		ns := pick(rg, namespaces)
		name := fmt.Sprintf("%s.knp.default.allow-%s-%s", ns, pick(rg, words), pick(rg, words))
		if rg.chance(0.3) {
			name = fmt.Sprintf("default.%s-%s-%d", pick(rg, words), pick(rg, words), i)
		}
		p := &calPolicy{name: name, ns: ns, inbound: rg.chance(0.7)}
		prefix := "cali-po-"
		if p.inbound {
			prefix = "cali-pi-"
		}
		p.chain = calicoHashName(prefix, "default/"+name, 28)
		selHash := sha256.Sum224([]byte("selector " + name))
		p.selectorIPSet = "cali40s:" + base64.RawURLEncoding.EncodeToString(selHash[:])[:22]
		members := []string{}
		for k := 0; k < 2+rg.intn(12); k++ {
			members = append(members, addr4(ip4(netip.MustParseAddr("198.18.128.0"))+uint32(rg.intn(1<<14))))
		}
		sets.set(p.selectorIPSet, "hash:ip", 1048576).add(members...)
		dir := "src"
		what := "ingress"
		if !p.inbound {
			dir, what = "dst", "egress"
		}
		for k := 0; k < 1+rg.intn(3); k++ {
			port := pick(rg, targetPorts)
			pre, post := "-p tcp", fmt.Sprintf("-m comment --comment %s -m set --match-set %s %s -m multiport --dports %d %s",
				quote("Policy "+name+" "+what), p.selectorIPSet, dir, port, setMark(calAccept, calAccept))
			switch rg.intn(5) {
			case 0: // a named port: an ipset of address,protocol:port
				npHash := sha256.Sum224([]byte(fmt.Sprintf("named port %s %d", name, k)))
				np := "cali40n:" + base64.RawURLEncoding.EncodeToString(npHash[:])[:22]
				x := sets.set(np, "hash:ip,port", 1048576)
				for _, m := range members[:1+rg.intn(len(members))] {
					x.add(fmt.Sprintf("%s,tcp:%d", m, port))
				}
				post = fmt.Sprintf("-m comment --comment %s -m set --match-set %s %s -m set --match-set %s dst,dst %s",
					quote("Policy "+name+" "+what), p.selectorIPSet, dir, np, setMark(calAccept, calAccept))
			case 1: // a CIDR peer
				pre = fmt.Sprintf("-s 198.18.%d.0/24 -p tcp", 140+rg.intn(40))
				if !p.inbound {
					pre = fmt.Sprintf("-d 198.18.%d.0/24 -p tcp", 140+rg.intn(40))
				}
				post = fmt.Sprintf("-m comment --comment %s -m multiport --dports %d %s",
					quote("Policy "+name+" "+what), port, setMark(calAccept, calAccept))
			}
			p.ruleProto = append(p.ruleProto, pre)
			p.rules = append(p.rules, post)
		}
		pols = append(pols, p)
	}
	for _, w := range wls {
		for _, p := range pols {
			if p.ns == w.ns && rg.chance(0.5) || rg.chance(0.03) {
				if p.inbound {
					w.in = append(w.in, p)
				} else {
					w.out = append(w.out, p)
				}
			}
		}
	}

	// Head rules: felix inserts its jumps at the top of the built-in chains.
	caliChain(ipt, "raw", "PREROUTING", 6, r("", "-j cali-PREROUTING"))
	caliChain(ipt, "raw", "OUTPUT", 6, r("", "-j cali-OUTPUT"))
	caliChain(ipt, "mangle", "PREROUTING", 6, r("", "-j cali-PREROUTING"))
	caliChain(ipt, "mangle", "POSTROUTING", 6, r("", "-j cali-POSTROUTING"))
	caliChain(ipt, "nat", "PREROUTING", 6, r("", "-j cali-PREROUTING"))
	caliChain(ipt, "nat", "OUTPUT", 5, r("", "-j cali-OUTPUT"))
	caliChain(ipt, "nat", "POSTROUTING", 6, r("", "-j cali-POSTROUTING"))
	caliChain(ipt, "filter", "INPUT", 6, r("", "-j cali-INPUT"))
	caliChain(ipt, "filter", "FORWARD", 6, r("", "-j cali-FORWARD"))
	caliChain(ipt, "filter", "OUTPUT", 6, r("", "-j cali-OUTPUT"))

	// raw: strict reverse-path checks for packets from workloads, marked on
	// the way in by interface. The rpfilter match exists in this kernel
	// (CONFIG_IP_NF_MATCH_RPFILTER), so felix would use it.
	ipt.chain("raw", "cali-from-host-endpoint", "cali-to-host-endpoint", "cali-rpf-skip")
	caliChain(ipt, "raw", "cali-PREROUTING", 5,
		r("", setMark(0, calAll)),
		r("-i cali+", setMark(calScr, calScr)),
		r("", markMatch(calScr, calScr)+" -j cali-rpf-skip"),
		r("", markMatch(calScr, calScr)+" -m rpfilter --validmark --invert -j DROP"),
		r("", markMatch(0, calScr)+" -j cali-from-host-endpoint"),
		r("", markMatch(calAccept, calAccept)+" -j ACCEPT"),
	)
	caliChain(ipt, "raw", "cali-OUTPUT", 5,
		r("", setMark(0, calAll)),
		r("", "-j cali-to-host-endpoint"),
		r("", markMatch(calAccept, calAccept)+" -j ACCEPT"),
	)

	// mangle
	ipt.chain("mangle", "cali-from-host-endpoint", "cali-to-host-endpoint")
	caliChain(ipt, "mangle", "cali-PREROUTING", 5,
		r("", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
		r("", markMatch(calAccept, calAccept)+" -j ACCEPT"),
		r("", "-j cali-from-host-endpoint"),
		r("", comment("Host endpoint policy accepted packet.")+" "+markMatch(calAccept, calAccept)+" -j ACCEPT"),
	)
	caliChain(ipt, "mangle", "cali-POSTROUTING", 5,
		r("", markMatch(calAccept, calAccept)+" -j RETURN"),
		r("", setMark(0, calAll)),
		r("", "-m conntrack --ctstate DNAT -j cali-to-host-endpoint"),
		r("", comment("Host endpoint policy accepted packet.")+" "+markMatch(calAccept, calAccept)+" -j RETURN"),
	)

	// nat: floating IPs (none here) and outgoing NAT for Calico's pool.
	ipt.chain("nat", "cali-fip-dnat", "cali-fip-snat")
	caliChain(ipt, "nat", "cali-PREROUTING", 5, r("", "-j cali-fip-dnat"))
	caliChain(ipt, "nat", "cali-OUTPUT", 5, r("", "-j cali-fip-dnat"))
	caliChain(ipt, "nat", "cali-POSTROUTING", 5,
		r("", "-j cali-fip-snat"),
		r("", "-j cali-nat-outgoing"),
		r("-o vxlan.calico", "-m addrtype ! --src-type LOCAL --limit-iface-out -m addrtype --src-type LOCAL -j MASQUERADE --random-fully"),
	)
	caliChain(ipt, "nat", "cali-nat-outgoing", 2,
		r("", "-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully"))

	// filter
	ipt.chain("filter", "cali-from-host-endpoint", "cali-to-host-endpoint", "cali-from-hep-forward",
		"cali-to-hep-forward", "cali-cidr-block")
	vx := "-m multiport --dports " + calicoVXLANPort
	caliChain(ipt, "filter", "cali-INPUT", 5,
		r("-p udp", comment("Allow IPv4 VXLAN packets from allowed hosts")+" "+vx+" -m set --match-set cali40all-vxlan-net src -m addrtype --dst-type LOCAL -j ACCEPT"),
		r("-p udp", comment("Drop IPv4 VXLAN packets from non-allowed hosts")+" "+vx+" -m addrtype --dst-type LOCAL -j DROP"),
		r("-i cali+", "-g cali-wl-to-host"),
		r("", markMatch(calAccept, calAccept)+" -j ACCEPT"),
		r("", setMark(0, calAll)),
		r("", "-j cali-from-host-endpoint"),
		r("", comment("Host endpoint policy accepted packet.")+" "+markMatch(calAccept, calAccept)+" -j ACCEPT"),
	)
	caliChain(ipt, "filter", "cali-OUTPUT", 5,
		r("", markMatch(calAccept, calAccept)+" -j ACCEPT"),
		r("-o cali+", "-j RETURN"),
		r("-p udp", comment("Allow IPv4 VXLAN packets to other allowed hosts")+" "+vx+" -m addrtype --src-type LOCAL -m set --match-set cali40all-vxlan-net dst -j ACCEPT"),
		r("", setMark(0, calAll)),
		r("", "-m conntrack ! --ctstate DNAT -j cali-to-host-endpoint"),
		r("", comment("Host endpoint policy accepted packet.")+" "+markMatch(calAccept, calAccept)+" -j ACCEPT"),
	)
	caliChain(ipt, "filter", "cali-FORWARD", 5,
		r("", setMark(0, calEph)),
		r("", markMatch(0, calAccept)+" -j cali-from-hep-forward"),
		r("-i cali+", "-j cali-from-wl-dispatch"),
		r("-o cali+", "-j cali-to-wl-dispatch"),
		r("", "-j cali-to-hep-forward"),
		r("", "-j cali-cidr-block"),
	)
	caliChain(ipt, "filter", "cali-wl-to-host", 1,
		r("", "-j cali-from-wl-dispatch"),
		r("", comment("Configured DefaultEndpointToHostAction")+" -j ACCEPT"),
	)
	dispatch(ipt, "cali-from-wl-dispatch", "-i", "cali-fw-", wls)
	dispatch(ipt, "cali-to-wl-dispatch", "-o", "cali-tw-", wls)

	// Profiles: one per namespace and one per service account, as the
	// Kubernetes datastore driver makes them.
	profiles := map[string]bool{}
	for _, w := range wls {
		profiles["kns."+w.ns] = true
		profiles["ksa."+w.ns+"."+w.sa] = true
	}
	for _, p := range slices.Sorted(maps.Keys(profiles)) {
		for _, dir := range []string{"i", "o"} {
			chain := calicoHashName("cali-pr"+dir+"-", p, 28)
			if strings.HasPrefix(p, "kns.") {
				what := map[string]string{"i": "ingress", "o": "egress"}[dir]
				caliChain(ipt, "filter", chain, 1,
					r("", comment("Profile "+p+" "+what)+" "+setMark(calAccept, calAccept)),
					r("", markMatch(calAccept, calAccept)+" -j RETURN"))
			} else {
				ipt.chain("filter", chain) // service-account profiles carry only labels
			}
		}
	}
	for _, p := range pols {
		var rules []calRule
		for k := range p.rules {
			rules = append(rules, r(p.ruleProto[k], p.rules[k]))
			rules = append(rules, r("", markMatch(calAccept, calAccept)+" -j RETURN"))
		}
		caliChain(ipt, "filter", p.chain, 1, rules...)
	}
	for _, w := range wls {
		workloadChain(ipt, "cali-tw-"+w.iface, w, w.in, "i", false)
		workloadChain(ipt, "cali-fw-"+w.iface, w, w.out, "o", true)
	}
}

// dispatch writes felix's interface dispatch: a goto per workload interface,
// split into sub-chains by the first character after "cali" when several
// interfaces share it, and a DROP for any other cali* interface.
func dispatch(ipt *iptables, chain, flag, prefix string, wls []*calWorkload) {
	groups := map[string][]*calWorkload{}
	for _, w := range wls {
		k := w.iface[4:5]
		groups[k] = append(groups[k], w)
	}
	var top []calRule
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		if len(g) == 1 {
			top = append(top, r(flag+" "+g[0].iface, "-g "+prefix+g[0].iface))
			continue
		}
		sub := chain + "-" + k
		var rules []calRule
		for _, w := range g {
			rules = append(rules, r(flag+" "+w.iface, "-g "+prefix+w.iface))
		}
		rules = append(rules, r("", comment("Unknown interface")+" -j DROP"))
		caliChain(ipt, "filter", sub, 1, rules...)
		top = append(top, r(flag+" cali"+k+"+", "-g "+sub))
	}
	top = append(top, r("", comment("Unknown interface")+" -j DROP"))
	caliChain(ipt, "filter", chain, 1, top...)
}

// workloadChain is a cali-tw-/cali-fw- chain: conntrack shortcuts, the
// policy tier, then the namespace and service-account profiles.
func workloadChain(ipt *iptables, chain string, w *calWorkload, pols []*calPolicy, dir string, egress bool) {
	rules := []calRule{
		r("", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
		r("", "-m conntrack --ctstate INVALID -j DROP"),
		r("", setMark(0, calAccept)),
	}
	if egress {
		rules = append(rules,
			r("-p udp", comment("Drop VXLAN encapped packets originating in workloads")+" -m multiport --dports "+calicoVXLANPort+" -j DROP"),
			r("-p ipencap", comment("Drop IPinIP encapped packets originating in workloads")+" -j DROP"))
	}
	if len(pols) > 0 {
		rules = append(rules, r("", comment("Start of tier default")+" "+setMark(0, calPass)))
		for _, p := range pols {
			rules = append(rules,
				r("", markMatch(0, calPass)+" -j "+p.chain),
				r("", markMatch(calAccept, calAccept)+" "+comment("Return if policy accepted")+" -j RETURN"))
		}
		rules = append(rules, r("", markMatch(0, calPass)+" "+comment("End of tier default. Drop if no policies passed packet")+" -j DROP"))
	}
	for _, p := range []string{"kns." + w.ns, "ksa." + w.ns + "." + w.sa} {
		rules = append(rules,
			r("", "-j "+calicoHashName("cali-pr"+dir+"-", p, 28)),
			r("", markMatch(calAccept, calAccept)+" "+comment("Return if profile accepted")+" -j RETURN"))
	}
	rules = append(rules, r("", comment("Drop if no profiles matched")+" -j DROP"))
	caliChain(ipt, "filter", chain, 1, rules...)
}

// calicoTail is what felix appends at the end of FORWARD: accept what a
// policy accepted, after every other owner's rules had their say.
func calicoTail(ipt *iptables) {
	ids := caliRuleIDs("filter/FORWARD tail", []string{"accept", "mark"})
	ipt.add("filter", "FORWARD", 1, comment("cali:"+ids[0]), comment("Policy explicitly accepted packet."),
		markMatch(calAccept, calAccept), "-j ACCEPT")
	ipt.add("filter", "FORWARD", 1, comment("cali:"+ids[1]), setMark(calAccept, calAccept))
}
