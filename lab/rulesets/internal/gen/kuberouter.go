package gen

import (
	"fmt"
	"net/netip"
	"sort"
)

// kube-router's marks: 0x10000 "allowed by a policy", 0x20000 "went through
// the pod firewall, accept".
const (
	krAllowed = 0x10000
	krAccept  = 0x20000
)

type netpolSpec struct {
	pods     int
	policies int
	seed     uint64
}

type krPod struct {
	ns, name, ip, chain string
	in, out             []*krPolicy
}

type krPolicy struct {
	ns, name, chain string
	egress          bool
	rules           []string
}

// kubeRouter writes a kube-router-style NetworkPolicy controller's chains for
// pods of this node that sit on kube-router's bridge (kube-bridge), and its
// routing controller's forwarding ACCEPTs for that bridge. Its pods are
// numbered from the upper half of the node's PodCIDR, never the lab's pods,
// and its policies live in namespaces the lab has no pods in.
func kubeRouter(ipt *iptables, sets *ipsets, spec netpolSpec, podCIDR, serviceCIDR string) {
	rg := newRNG(spec.seed)
	base := ip4(netip.MustParsePrefix(podCIDR).Addr())
	var pods []*krPod
	for i := 0; i < spec.pods; i++ {
		ns := pick(rg, namespaces)
		name := fmt.Sprintf("%s-%s-%05x", pick(rg, words), pick(rg, words), rg.intn(1<<20))
		pods = append(pods, &krPod{ns: ns, name: name, ip: addr4(base + uint32(localPodFirst+2+i)),
			chain: "KUBE-POD-FW-" + kubeHash(ns+name)})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].chain < pods[j].chain })

	remote := func() string {
		return addr4(ip4(netip.MustParseAddr("198.19.0.0")) + uint32(firstRemotePodNet+rg.intn(lastRemotePodNet-firstRemotePodNet))<<8 + uint32(2+rg.intn(253)))
	}
	var pols []*krPolicy
	for i := 0; i < spec.policies; i++ {
		p := &krPolicy{ns: pick(rg, namespaces), name: fmt.Sprintf("allow-%s-%s", pick(rg, words), pick(rg, words)), egress: rg.chance(0.25)}
		p.chain = "KUBE-NWPLCY-" + kubeHash(p.ns+p.name)
		dst := sets.set("KUBE-DST-"+kubeHash(p.ns+p.name+"dst"), "hash:ip", 65536)
		src := sets.set("KUBE-SRC-"+kubeHash(p.ns+p.name+"src"), "hash:ip", 65536)
		for k := 0; k < 1+rg.intn(6); k++ {
			src.add(remote())
		}
		selected := 0
		for _, pod := range pods {
			if pod.ns == p.ns && rg.chance(0.7) || rg.chance(0.02) {
				dst.add(pod.ip)
				if p.egress {
					pod.out = append(pod.out, p)
				} else {
					pod.in = append(pod.in, p)
				}
				selected++
			}
		}
		for k := 0; k < rg.intn(4); k++ {
			dst.add(remote()) // selected pods on other nodes
		}
		what := fmt.Sprintf("policy name: %s namespace %s", p.name, p.ns)
		from, to := "src", "dst"
		peers, targets := src.name, dst.name
		if p.egress {
			from, to = "dst", "src"
		}
		m := fmt.Sprintf("-m set --match-set %s %s -m set --match-set %s %s", peers, from, targets, to)
		c := comment("rule to ACCEPT traffic from source pods to dest pods selected by " + what)
		if rg.chance(0.5) {
			port := pick(rg, targetPorts)
			p.rules = append(p.rules,
				fmt.Sprintf("-p tcp %s %s -m tcp --dport %d %s", c, m, port, setMark(krAllowed, krAllowed)),
				fmt.Sprintf("-p tcp %s %s -m tcp --dport %d %s -j RETURN", c, m, port, markMatch(krAllowed, krAllowed)))
		} else {
			p.rules = append(p.rules,
				fmt.Sprintf("%s %s %s", c, m, setMark(krAllowed, krAllowed)),
				fmt.Sprintf("%s %s %s -j RETURN", c, m, markMatch(krAllowed, krAllowed)))
		}
		if rg.chance(0.3) {
			// An ipBlock peer: a hash:net set.
			blk := sets.set("KUBE-SRC-"+kubeHash(p.ns+p.name+"ipblock"), "hash:net", 65536)
			blk.add("198.18.114.0/24", fmt.Sprintf("198.18.%d.0/25", 150+rg.intn(20)))
			bc := comment("rule to ACCEPT traffic from specified ipBlocks to dest pods selected by " + what)
			bm := fmt.Sprintf("-m set --match-set %s %s -m set --match-set %s %s", blk.name, from, targets, to)
			p.rules = append(p.rules,
				fmt.Sprintf("%s %s %s", bc, bm, setMark(krAllowed, krAllowed)),
				fmt.Sprintf("%s %s %s -j RETURN", bc, bm, markMatch(krAllowed, krAllowed)))
		}
		if selected > 0 || rg.chance(0.5) {
			pols = append(pols, p)
		}
	}

	hdr := func(s string) string { return comment("kube-router netpol - " + kubeHash(s)) }
	ipt.chain("filter", "KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT", "KUBE-NWPLCY-DEFAULT")
	ipt.add("filter", "INPUT", 6, hdr("INPUT"), "-j KUBE-ROUTER-INPUT")
	ipt.add("filter", "FORWARD", 6, hdr("FORWARD"), "-j KUBE-ROUTER-FORWARD")
	ipt.add("filter", "OUTPUT", 6, hdr("OUTPUT"), "-j KUBE-ROUTER-OUTPUT")
	// The routing controller's ACCEPTs for kube-router's own bridge: a
	// tracer that does not check interfaces would accept everything here.
	ipt.add("filter", "FORWARD", 4, "-i kube-bridge", comment("allow outbound traffic from pods"), "-j ACCEPT")
	ipt.add("filter", "FORWARD", 4, "-o kube-bridge", comment("allow inbound traffic to pods"), "-j ACCEPT")
	ipt.add("filter", "FORWARD", 2, "-i kube-bridge -o kube-bridge", comment("allow traffic between pods on the same bridge"), "-j ACCEPT")

	ipt.add("filter", "KUBE-ROUTER-INPUT", 4, "-d "+serviceCIDR, comment("allow traffic to primary/secondary cluster IP range - "+kubeHash("svc")), "-j RETURN")
	for _, proto := range []string{"tcp", "udp"} {
		ipt.add("filter", "KUBE-ROUTER-INPUT", 1, "-p "+proto,
			comment(fmt.Sprintf("allow LOCAL %s traffic to node ports - %s", map[string]string{"tcp": "TCP", "udp": "UDP"}[proto], kubeHash("np"+proto))),
			"-m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN")
	}
	ipt.add("filter", "KUBE-NWPLCY-DEFAULT", 1, comment("rule to mark traffic matching a network policy"), setMark(krAllowed, krAllowed))

	for _, pod := range pods {
		id := fmt.Sprintf("POD name:%s namespace: %s", pod.name, pod.ns)
		to := comment("rule to jump traffic destined to " + id + " to chain " + pod.chain)
		from := comment("rule to jump traffic from " + id + " to chain " + pod.chain)
		ipt.add("filter", "KUBE-ROUTER-INPUT", 1, "-s "+pod.ip+"/32", from, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-FORWARD", 1, "-d "+pod.ip+"/32", to, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-FORWARD", 1, "-d "+pod.ip+"/32 -m physdev --physdev-is-bridged", to, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-FORWARD", 1, "-s "+pod.ip+"/32", from, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-FORWARD", 1, "-s "+pod.ip+"/32 -m physdev --physdev-is-bridged", from, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-OUTPUT", 1, "-d "+pod.ip+"/32", to, "-j", pod.chain)
		ipt.add("filter", "KUBE-ROUTER-OUTPUT", 1, "-s "+pod.ip+"/32", from, "-j", pod.chain)

		ch := pod.chain
		ipt.add("filter", ch, 2, comment("rule for stateful firewall for pod"), "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
		ipt.add("filter", ch, 0, comment("rule to drop invalid state for pod"), "-m conntrack --ctstate INVALID -j DROP")
		ipt.add("filter", ch, 1, "-d "+pod.ip+"/32", comment("rule to permit the traffic traffic to pods when source is the pod's local node"),
			"-m addrtype --src-type LOCAL -j ACCEPT")
		for _, p := range pod.in {
			ipt.add("filter", ch, 1, "-d "+pod.ip+"/32", comment("run through nw policy "+p.name), "-j", p.chain)
		}
		for _, p := range pod.out {
			ipt.add("filter", ch, 1, "-s "+pod.ip+"/32", comment("run through nw policy "+p.name), "-j", p.chain)
		}
		if len(pod.out) == 0 {
			ipt.add("filter", ch, 1, "-s "+pod.ip+"/32", comment("run through default egress network policy  chain"), "-j KUBE-NWPLCY-DEFAULT")
		}
		ipt.add("filter", ch, 0, comment("rule to log dropped traffic "+id), "-m mark ! --mark 0x10000/0x10000",
			"-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100")
		// The default deny for a selected pod: what no policy allowed stops
		// here.
		ipt.add("filter", ch, 0, comment("rule to DROP traffic destined for "+id), "-m mark ! --mark 0x10000/0x10000 -j DROP")
		ipt.add("filter", ch, 1, setMark(0, krAllowed))
		ipt.add("filter", ch, 1, comment("set mark to ACCEPT path after firewall processing"), setMark(krAccept, krAccept))
	}
	accept := comment("rule to explicitly ACCEPT traffic that comply to network policies")
	for _, ch := range []string{"KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"} {
		ipt.add("filter", ch, 2, accept, markMatch(krAccept, krAccept), "-j ACCEPT")
	}
	for _, p := range pols {
		ipt.chain("filter", p.chain)
		for _, rule := range p.rules {
			ipt.add("filter", p.chain, 1, rule)
		}
	}
}
