package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// The network-unreachable class: the destination IP cannot be reached at
// all (a link down, no route, an overloaded path, a firewall, a route that
// sends the packets the wrong way).

// chosen is the route a scope's kernel picks for the question's destination.
func (f *facts) chosen(s collectors.Scope) *collectors.ChosenRoute {
	r := f.routes[s]
	if r == nil || f.req.To == nil {
		return nil
	}
	return r.To(f.req.To.Addr)
}

// pathLink is an interface a probe's packets cross.
type pathLink struct {
	scope collectors.Scope
	link  *collectors.Link
}

// pathLinks are the interfaces the probe's packets cross, per scope: the
// route's device towards the destination and, in the destination, its
// addressed interfaces.
func (f *facts) pathLinks() []pathLink {
	var out []pathLink
	for _, s := range collectors.Scopes {
		l := f.links[s]
		if l == nil {
			continue
		}
		var names []string
		if c := f.chosen(s); c != nil && c.Dev != "" && c.Dev != "lo" {
			names = append(names, c.Dev)
		}
		if s == collectors.ScopePeer {
			for _, lk := range l.Links {
				if lk.Name != "lo" && len(lk.Addrs) > 0 {
					names = append(names, lk.Name)
				}
			}
		}
		for _, n := range names {
			if lk := l.ByName(n); lk != nil && !slices.ContainsFunc(out, func(x pathLink) bool { return x.scope == s && x.link.Name == n }) {
				out = append(out, pathLink{s, lk})
			}
		}
	}
	return out
}

func ruleLinkDown(f *facts) outcome {
	bad, fails := f.failing()
	if !bad {
		return notApplicable
	}
	links := f.pathLinks()
	for _, pl := range links {
		l := pl.link
		if l.AdminUp && l.Carrier {
			continue
		}
		// A bridge loses its carrier when its ports do: name the port.
		if l.Type == "bridge" && l.AdminUp {
			for i := range f.links[pl.scope].Links {
				m := &f.links[pl.scope].Links[i]
				if m.Master == l.Name && (!m.AdminUp || !m.Carrier) {
					l = m
					break
				}
			}
		}
		state := "has no carrier (its peer or cable is down)"
		next := fmt.Sprintf("Find why %s lost its carrier: for a veth, the other end (the pod's host-side veth on its node) is down; `ip link set <host veth> up` on the node, or restart the pod so the CNI plugin recreates it.", l.Name)
		if !l.AdminUp {
			state = "is administratively down"
			next = fmt.Sprintf("Bring %s up in %s (`ip link set %s up`), then find what took it down (CNI plugin, NetworkManager, a script).", l.Name, f.scopeName(pl.scope), l.Name)
		}
		ev := append([]Observation{obs("links", "%s in %s %s (oper state %s)", l.Name, f.scopeName(pl.scope), state, l.OperState)}, fails...)
		return concluded(&match{confidence: 0.9,
			summary:  fmt.Sprintf("%s in %s %s, so nothing reaches %s.", l.Name, f.scopeName(pl.scope), state, f.to()),
			evidence: ev, next: []string{next}})
	}
	if nd := f.pathDrops("NEIGH_*"); len(nd) > 0 {
		d := nd[0]
		proto := "ARP"
		if f.family() == "ipv6" {
			proto = "neighbour discovery (NDP)"
		}
		return concluded(&match{confidence: 0.75,
			summary:  fmt.Sprintf("The next hop on %s in %s does not answer %s: the kernel dropped the probes' packets for %s.", orWord(d.Dev, "the path"), f.dropPlace(d), proto, d.Reason),
			evidence: append([]Observation{f.dropLine(d)}, fails...),
			next:     []string{fmt.Sprintf("Look at the neighbour table in %s (`%sip neigh show dev %s`): a FAILED or INCOMPLETE entry names the next hop that does not answer; check that it is up and on the same segment.", f.dropPlace(d), f.nsCommand(d), orWord(d.Dev, "<dev>"))}})
	}
	if len(links) == 0 {
		return notApplicable
	}
	var names []string
	for _, pl := range links {
		names = append(names, pl.link.Name+" in "+f.scopeName(pl.scope))
	}
	return ruledOut("every interface on the path is up with carrier: %s", strings.Join(names, ", "))
}

func ruleNoRoute(f *facts) outcome {
	c := f.chosen(collectors.ScopeSource)
	if c == nil {
		return notApplicable
	}
	if c.Error == "" {
		return ruledOut("the source routes %s via %s", c.Dst, orWord(c.Dev, "its default route"))
	}
	ev := []Observation{obs("routes", "the kernel has no route from %s to %s: %s", f.scopeName(collectors.ScopeSource), c.Dst, c.Error)}
	if r := f.routes[collectors.ScopeSource]; r != nil && len(r.Defaults(f.family())) == 0 {
		ev = append(ev, obs("routes", "%s has no %s default route", f.scopeName(collectors.ScopeSource), f.family()))
	}
	if f.tcpAny("unreachable") {
		ev = append(ev, obs("tcp", "connects fail at once with network unreachable"))
	}
	gw := "the node's bridge address"
	if cl := f.req.Cluster; cl != nil && cl.SourceNode != nil {
		gw = "the cni0 address of node " + cl.SourceNode.Name
	}
	cmd := "ip route add default via <gateway> dev eth0"
	if f.family() == "ipv6" {
		cmd = "ip -6 route add default via <gateway> dev eth0"
	}
	return concluded(&match{confidence: 0.95,
		summary:  fmt.Sprintf("%s has no route to %s: its packets never leave.", f.scopeName(collectors.ScopeSource), c.Dst),
		evidence: ev,
		next: []string{fmt.Sprintf("Restore the pod's default route (`%s` with %s as gateway); the CNI plugin sets it when the pod starts, so recreating the pod also restores it.", cmd, gw),
			"Look for what removed it: an init container or sidecar with NET_ADMIN, or a CNI plugin error in the kubelet log."}})
}

func ruleOverload(f *facts) outcome {
	bad, fails := f.failing()
	if !bad {
		return notApplicable
	}
	var ev []Observation
	read := false
	for _, s := range collectors.Scopes {
		if l := f.links[s]; l != nil {
			read = true
			for _, lk := range l.Links {
				if q := lk.Qdisc; q != nil && q.Drops > 0 && q.Backlog > 0 {
					ev = append(ev, obs("links", "the %s queue of %s on %s is full: %d bytes waiting, %d packets dropped", q.Kind, lk.Name, f.scopeName(s), q.Backlog, q.Drops))
				}
			}
		}
		if sc := f.sysctls[s]; sc != nil && sc.ConntrackMax > 0 {
			read = true
			if sc.ConntrackCount*10 >= sc.ConntrackMax*9 {
				ev = append(ev, obs("sysctls", "conntrack on %s is %d of %d entries full", f.scopeName(s), sc.ConntrackCount, sc.ConntrackMax))
			}
		}
	}
	if !read {
		return notApplicable
	}
	if len(ev) == 0 {
		return ruledOut("no full queue or conntrack table in the namespaces read")
	}
	return concluded(&match{confidence: 0.8,
		summary:  fmt.Sprintf("The path to %s is overloaded: %s.", f.to(), ev[0].Observation),
		evidence: append(ev, fails...),
		next: []string{"Find what fills the queue (`tc -s qdisc`, `ss -s`, the node's top talkers with `conntrack -L | sort`), and rate-limit or move it.",
			"Raise nf_conntrack_max or the NIC's queue only after finding the source of the load."}})
}

// ruleNetFirewall: neither ICMP nor TCP gets through, and a rule on the way
// stops them (or the kernel says netfilter dropped them).
func ruleNetFirewall(f *facts) outcome {
	bad, fails := f.failing()
	if !bad || f.req.To == nil || !(f.pingDead() || f.tcpFailed()) {
		return notApplicable
	}
	dst, port := f.req.To.Addr, f.req.To.Port
	tcpB, tcpOK := f.fittingBlock(func(fl collectors.Flow) bool { return fl.Proto == "tcp" && fl.DPort == port && fl.Dst == dst })
	icmpB, icmpOK := f.firstBlock(func(fl collectors.Flow) bool { return fl.IsICMP() && fl.Dst == dst })
	b, ok := tcpB, tcpOK
	if !ok {
		b, ok = icmpB, icmpOK
	}
	if !ok {
		if nf := f.pathDrops("NETFILTER_DROP"); len(nf) > 0 {
			return concluded(f.firewallByKernel(NetFirewall, nf[0], fails))
		}
		if read := f.rulesRead(); len(read) > 0 {
			return ruledOut("no DROP or REJECT rule matches the probes in the rules of %s", strings.Join(read, ", "))
		}
		return notApplicable
	}
	ev := []Observation{f.traceLine(b)}
	if icmpOK && icmpB.tr != b.tr {
		ev = append(ev, f.traceLine(icmpB))
	}
	conf := 0.9
	nf := f.pathDrops("NETFILTER_DROP")
	if len(nf) > 0 {
		ev = append(ev, f.dropLine(nf[0]))
	}
	if !b.tr.Certain {
		conf = f.uncertainConfidence(b, nf)
	}
	ev = append(ev, fails...)
	return concluded(&match{confidence: conf,
		summary:  fmt.Sprintf("A firewall rule on %s %ss traffic to %s: both ICMP and TCP fail.", f.scopeName(b.scope), strings.ToLower(b.tr.Verdict), f.to()),
		evidence: ev,
		next:     firewallNext(f, b)})
}

func ruleRouteAsymmetric(f *facts) outcome {
	bad, fails := f.failing()
	if !bad {
		return notApplicable
	}
	var checked []string
	// Two ways out: two default routes, or one multipath default over
	// different devices (the seed's ~50 % loss).
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode, collectors.ScopePeerNode} {
		r := f.routes[s]
		if r == nil {
			continue
		}
		checked = append(checked, f.scopeName(s))
		var devs []string
		for _, d := range r.Defaults(f.family()) {
			if len(d.Nexthops) > 0 {
				for _, nh := range d.Nexthops {
					devs = append(devs, nh.Dev+" via "+nh.Gateway)
				}
			} else {
				devs = append(devs, d.Dev+" via "+d.Gateway)
			}
		}
		if len(devs) > 1 {
			ev := []Observation{obs("routes", "%s has %d default routes: %s", f.scopeName(s), len(devs), strings.Join(devs, " and "))}
			if f.tcpPartial() {
				ev = append(ev, obs("tcp", "%d of %d connects to %s failed, %d succeeded: flows hashed onto one path are lost", len(f.tcp.Attempts)-f.tcp.Connected, len(f.tcp.Attempts), f.tcp.Dst, f.tcp.Connected))
			}
			ev = append(ev, fails...)
			return concluded(&match{confidence: 0.85,
				summary:  fmt.Sprintf("%s has two default routes on different interfaces; the flows that take the wrong one are lost (partial loss).", f.scopeName(s)),
				evidence: ev,
				next:     []string{fmt.Sprintf("Remove the extra default route on %s (`ip route del default via <gateway> dev <the NIC that cannot reach it>`), and stop what adds it (a second DHCP client, a NetworkManager profile with DEFROUTE=yes on the management NIC).", f.scopeName(s))}})
		}
	}
	// Asymmetric: the source node sends another node's pods around the
	// overlay, while the answers come back through it; strict rp_filter
	// drops them.
	c := f.req.Cluster
	ch := f.chosen(collectors.ScopeNode)
	overlayKnown := c != nil && c.SourceNode != nil && c.PeerNode != nil && c.PeerNode.Name != c.SourceNode.Name && c.SourceNode.OverlayDevice != "" && ch != nil
	if overlayKnown && ch.Dev != c.SourceNode.OverlayDevice && inPrefix(ch.Dst, c.PeerNode.PodCIDR) {
		ev := []Observation{obs("routes", "%s routes %s (a pod on node %s) via %s, not via the overlay %s", f.scopeName(collectors.ScopeNode), ch.Dst, c.PeerNode.Name, ch.Dev, c.SourceNode.OverlayDevice)}
		if sc := f.sysctls[collectors.ScopePeerNode]; sc != nil {
			var strict []string
			for dev := range sc.RPFilter {
				if sc.EffectiveRPFilter(dev) == 1 && dev != "lo" && dev != "all" && dev != "default" {
					strict = append(strict, dev)
				}
			}
			if len(strict) > 0 {
				slices.Sort(strict)
				ev = append(ev, obs("sysctls", "node %s filters strictly by reverse path (rp_filter=1) on %s: packets arriving on an interface it would not answer through are dropped", c.PeerNode.Name, strings.Join(strict, ", ")))
			}
		}
		ev = append(ev, f.dropLines(f.pathDrops("IP_RPFILTER"), 1)...)
		ev = append(ev, fails...)
		return concluded(&match{confidence: 0.8,
			summary:  fmt.Sprintf("The path is asymmetric: %s sends traffic for %s outside the overlay and the answers return through it, so the reverse-path filter drops them.", f.scopeName(collectors.ScopeNode), ch.Dst),
			evidence: ev,
			next: []string{fmt.Sprintf("Remove the route on %s that sends %s's PodCIDR via %s (`ip route del %s`); flannel's route goes via %s.", f.scopeName(collectors.ScopeNode), c.PeerNode.Name, ch.Dev, c.PeerNode.PodCIDR, c.SourceNode.OverlayDevice),
				"If asymmetric paths are intended, set net.ipv4.conf.<nic>.rp_filter=2 (loose) on the receiving node."}})
	}
	// The kernel's word without the routes that explain it.
	if rp := f.pathDrops("IP_RPFILTER"); len(rp) > 0 {
		d := rp[0]
		return concluded(&match{confidence: 0.8,
			summary:  fmt.Sprintf("The reverse-path filter in %s drops the probes' packets arriving on %s: the route back to %s leaves by another interface (an asymmetric path).", f.dropPlace(d), orWord(d.Dev, "its interface"), d.Src),
			evidence: append([]Observation{f.dropLine(d)}, fails...),
			next: []string{fmt.Sprintf("Compare `%sip route get %s` with the interface the packets arrive on (%s): make the route back use it, or remove the route that sends them around.", f.nsCommand(d), d.Src, orWord(d.Dev, "see the drop")),
				fmt.Sprintf("If asymmetric paths are intended, set net.ipv4.conf.%s.rp_filter=2 (loose) in %s.", orWord(d.Dev, "<interface>"), f.dropPlace(d))}})
	}
	if len(checked) == 0 {
		return notApplicable
	}
	why := fmt.Sprintf("one %s default route on %s", f.family(), strings.Join(checked, ", "))
	if overlayKnown && ch.Dev == c.SourceNode.OverlayDevice {
		why += fmt.Sprintf(", and %s reaches %s through the overlay %s", f.scopeName(collectors.ScopeNode), ch.Dst, ch.Dev)
	}
	return ruledOut("%s", why)
}
