package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// match is what a rule concludes.
type match struct {
	confidence float64
	summary    string
	evidence   []Observation
	next       []string
	// alternatives are verdicts the evidence cannot rule out, with what
	// would tell them apart.
	alternatives []Considered
	// verdict overrides the rule's own (a rule may conclude a neighbour).
	verdict *Verdict
}

// rule is one step of the chain: it concludes its verdict or says, in one
// line, what ruled it out.
type rule struct {
	verdict Verdict
	check   func(f *facts) (*match, string)
}

// rules are tried in order; the first that concludes wins. The order goes
// from what explains everything (a link down, no route, a broken overlay) to
// what explains one port, so a deeper cause is not reported as its symptom.
var rules = []rule{
	{NetLinkDown, ruleLinkDown},
	{NetRoute, ruleNoRoute},
	{PortExhaustion, rulePortExhaustion},
	{OverlayBroken, ruleOverlay},
	{PortNoEndpoints, ruleNoEndpoints},
	{KubeProxyDown, ruleKubeProxyDown},
	{ServiceRules, ruleServiceRules},
	{DNSConfig, ruleDNSConfig},
	{DNSPathBroken, ruleDNSPath},
	{DNSServiceDown, ruleDNSDown},
	{DNSUpstream, ruleDNSUpstream},
	{NetOverload, ruleOverload},
	{NetFirewall, ruleFirewall},
	{PortLoopback, ruleLoopback},
	{PortNotListen, ruleNotListening},
	{NetRoute, ruleRouteAsymmetric},
	{MTUMismatch, ruleMTU},
}

func obs(collector, format string, a ...any) Observation {
	return Observation{Collector: collector, Observation: fmt.Sprintf(format, a...)}
}

// failing reports whether any probe failed, and describes the failures.
func (f *facts) failing() (bool, []Observation) {
	var out []Observation
	if f.ping != nil && f.ping.Received < f.ping.Sent {
		out = append(out, obs("ping", "%d of %d ICMP echoes to %s got no reply%s", f.ping.Sent-f.ping.Received, f.ping.Sent, f.ping.Dst, icmpErrs(f.ping.Errors)))
	}
	if f.tcp != nil && f.tcp.Connected < len(f.tcp.Attempts) {
		out = append(out, obs("tcp", "%d of %d TCP connects to %s failed: %s", len(f.tcp.Attempts)-f.tcp.Connected, len(f.tcp.Attempts), f.tcp.Dst, tcpResults(f.tcp)))
	}
	if f.dns != nil {
		for _, l := range f.dns.Failed() {
			out = append(out, obs("dns", "%s did not resolve via %s (%s): %s", l.Name, l.Server, l.Role, lastQuery(l)))
		}
	}
	return len(out) > 0, out
}

func icmpErrs(errs []collectors.ProbeError) string {
	var parts []string
	for _, e := range errs {
		if e.Kind == "timeout" {
			continue
		}
		s := e.Kind
		if e.From != "" {
			s += " from " + e.From
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func tcpResults(t *collectors.TCP) string {
	counts := map[string]int{}
	var order []string
	for _, a := range t.Attempts {
		if counts[a.Result] == 0 {
			order = append(order, a.Result)
		}
		counts[a.Result]++
	}
	var parts []string
	for _, r := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
	}
	return strings.Join(parts, ", ")
}

func lastQuery(l collectors.DNSLookup) string {
	if len(l.Queries) == 0 {
		return "no query sent"
	}
	q := l.Queries[len(l.Queries)-1]
	if q.Error != "" {
		return q.Error + " for " + q.FQDN
	}
	return q.Rcode + " for " + q.FQDN
}

// pathLinks are the interfaces the probe's packets cross, per scope: the
// route's device towards the destination, and on nodes the overlay and the
// bridge.
func (f *facts) pathLinks() []struct {
	scope collectors.Scope
	link  *collectors.Link
} {
	var out []struct {
		scope collectors.Scope
		link  *collectors.Link
	}
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode, collectors.ScopePeerNode, collectors.ScopePeer} {
		l := f.links[s]
		if l == nil {
			continue
		}
		var names []string
		if r := f.routes[s]; r != nil && r.Chosen != nil && r.Chosen.Dev != "" {
			names = append(names, r.Chosen.Dev)
		}
		if s == collectors.ScopePeer {
			for _, lk := range l.Links {
				if lk.Name != "lo" && len(lk.Addrs) > 0 {
					names = append(names, lk.Name)
				}
			}
		}
		for _, n := range names {
			if lk := l.ByName(n); lk != nil && !slices.ContainsFunc(out, func(x struct {
				scope collectors.Scope
				link  *collectors.Link
			}) bool {
				return x.scope == s && x.link.Name == n
			}) {
				out = append(out, struct {
					scope collectors.Scope
					link  *collectors.Link
				}{s, lk})
			}
		}
	}
	return out
}

func ruleLinkDown(f *facts) (*match, string) {
	bad, fails := f.failing()
	if !bad {
		return nil, "every probe got through"
	}
	for _, pl := range f.pathLinks() {
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
		return &match{confidence: 0.9,
			summary:  fmt.Sprintf("%s in %s %s, so nothing reaches %s.", l.Name, f.scopeName(pl.scope), state, f.to()),
			evidence: ev, next: []string{next}}, ""
	}
	if nd := f.pathDrops("NEIGH_*"); len(nd) > 0 {
		d := nd[0]
		return &match{confidence: 0.75,
			summary:  fmt.Sprintf("The next hop on %s in %s does not answer ARP: the kernel dropped the probes' packets for %s.", orWord(d.Dev, "the path"), f.dropPlace(d), d.Reason),
			evidence: append([]Observation{f.dropLine(d)}, fails...),
			next:     []string{fmt.Sprintf("Look at the neighbour table in %s (`%sip neigh show dev %s`): a FAILED or INCOMPLETE entry names the next hop that does not answer; check that it is up and on the same segment.", f.dropPlace(d), f.nsCommand(d), orWord(d.Dev, "<dev>"))}}, ""
	}
	return nil, "every interface on the path is up with carrier"
}

func ruleNoRoute(f *facts) (*match, string) {
	r := f.routes[collectors.ScopeSource]
	if r == nil || f.req.To == nil {
		return nil, "no destination to route to"
	}
	if r.Chosen != nil && r.Chosen.Error != "" {
		ev := []Observation{obs("routes", "the kernel has no route from %s to %s: %s", f.scopeName(collectors.ScopeSource), r.Chosen.Dst, r.Chosen.Error)}
		if len(r.Defaults()) == 0 {
			ev = append(ev, obs("routes", "%s has no default route", f.scopeName(collectors.ScopeSource)))
		}
		if f.tcpAny("unreachable") {
			ev = append(ev, obs("tcp", "connects fail at once with network unreachable"))
		}
		gw := "the node's bridge address"
		if c := f.req.Cluster; c != nil && c.SourceNode != nil {
			gw = "the cni0 address of node " + c.SourceNode.Name
		}
		return &match{confidence: 0.95,
			summary:  fmt.Sprintf("%s has no route to %s: its packets never leave.", f.scopeName(collectors.ScopeSource), r.Chosen.Dst),
			evidence: ev,
			next: []string{fmt.Sprintf("Restore the pod's default route (`ip route add default via <gateway> dev eth0` with %s as gateway); the CNI plugin sets it when the pod starts, so recreating the pod also restores it.", gw),
				"Look for what removed it: an init container or sidecar with NET_ADMIN, or a CNI plugin error in the kubelet log."}}, ""
	}
	return nil, fmt.Sprintf("the source routes %s via %s", r.Chosen.Dst, r.Chosen.Dev)
}

func rulePortExhaustion(f *facts) (*match, string) {
	if f.tcp == nil {
		return nil, "no TCP probe"
	}
	if !f.tcpAny("addr-not-avail") {
		return nil, "connects found a free local port"
	}
	ev := []Observation{obs("tcp", "%d of %d connects to %s failed locally with EADDRNOTAVAIL (no free source port)", f.tcp.AddrNotAvail, len(f.tcp.Attempts), f.tcp.Dst)}
	rng := ""
	if s := f.sysctls[collectors.ScopeSource]; s != nil {
		rng = fmt.Sprintf("%d-%d", s.PortRangeLow, s.PortRangeHigh)
		ev = append(ev, obs("sysctls", "ip_local_port_range is %s: %d ports", rng, s.PortRange()))
	}
	if so := f.sockets[collectors.ScopeSource]; so != nil && len(so.TopRemotes) > 0 {
		ev = append(ev, obs("sockets", "%d TCP sockets are held to %s", so.TopRemotes[0].Sockets, so.TopRemotes[0].Remote))
	}
	return &match{confidence: 0.95,
		summary:  fmt.Sprintf("%s has no free ephemeral port left towards %s: every port of its range holds a connection there.", f.scopeName(collectors.ScopeSource), f.to()),
		evidence: ev,
		next: []string{"Find the process holding the connections (`ss -tnp dst " + f.to() + "` in the pod) and make it reuse connections (keep-alive, a pool) or close them.",
			fmt.Sprintf("Widen the ephemeral range if it is narrow (net.ipv4.ip_local_port_range, now %s; the kernel default is 32768-60999) through the pod's securityContext sysctls.", rng)}}, ""
}

// overlayIssues lists what is wrong with the overlay between the two nodes.
func (f *facts) overlayIssues() []Observation {
	c := f.req.Cluster
	if c == nil || c.SourceNode == nil || c.SourceNode.OverlayDevice == "" {
		return nil
	}
	var out []Observation
	check := func(scope collectors.Scope, n *Node, other *Node) {
		l := f.links[scope]
		if l == nil || n == nil {
			return
		}
		dev := l.ByName(n.OverlayDevice)
		if dev == nil || dev.VXLAN == nil {
			out = append(out, obs("links", "node %s has no VXLAN device %s", n.Name, n.OverlayDevice))
			return
		}
		if dev.VXLAN.Local != n.InternalIP {
			why := ""
			for _, lk := range l.Links {
				for _, a := range lk.Addrs {
					if strings.HasPrefix(a, dev.VXLAN.Local+"/") {
						why = fmt.Sprintf(" (an address of %s", lk.Name)
						if len(lk.Addrs) > 1 {
							why += fmt.Sprintf(", which has %d addresses: %s", len(lk.Addrs), strings.Join(lk.Addrs, ", "))
						}
						why += ")"
					}
				}
			}
			out = append(out, obs("links", "%s on node %s sends VXLAN from %s%s, not from the node's InternalIP %s; the other node answers to the InternalIP", n.OverlayDevice, n.Name, dev.VXLAN.Local, why, n.InternalIP))
		}
		if nb := f.neigh[scope]; nb != nil && other != nil {
			ok := false
			for _, e := range nb.FDB {
				if e.Dev == n.OverlayDevice && e.Dst == other.InternalIP {
					ok = true
				}
			}
			if !ok {
				var dsts []string
				for _, e := range nb.FDB {
					if e.Dev == n.OverlayDevice && e.Dst != "" {
						dsts = append(dsts, e.Dst)
					}
				}
				out = append(out, obs("neighbours", "%s on node %s has no forwarding (FDB) entry towards node %s at %s (entries point at: %s)", n.OverlayDevice, n.Name, other.Name, other.InternalIP, orNone(dsts)))
			}
		}
	}
	check(collectors.ScopeNode, c.SourceNode, c.PeerNode)
	if c.PeerNode != nil && c.PeerNode.Name != c.SourceNode.Name {
		check(collectors.ScopePeerNode, c.PeerNode, c.SourceNode)
	}
	// The overlay's UDP port in either node's firewall.
	if s, tr, tool := f.blocked(func(fl collectors.Flow) bool { return fl.Proto == "udp" && int(fl.DPort) == c.SourceNode.OverlayPort }); tr != nil {
		out = append(out, obs(tool, "UDP %d (VXLAN) from %s to %s is %s on %s by %s", tr.Flow.DPort, tr.Flow.Src, tr.Flow.Dst, pastTense(tr.Verdict), f.scopeName(s), tr.VerdictBy))
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func ruleOverlay(f *facts) (*match, string) {
	issues := f.overlayIssues()
	if len(issues) == 0 {
		return nil, "the VXLAN devices use the nodes' InternalIPs, the FDB reaches the other node and UDP 8472 passes both firewalls"
	}
	bad, fails := f.failing()
	if !bad {
		return nil, "the overlay looks misconfigured but every probe got through"
	}
	c := f.req.Cluster
	ev := append(issues, fails...)
	// The seed's master: ICMP rejected on the node too; list it with the rest.
	if s, tr, tool := f.blocked(func(fl collectors.Flow) bool { return fl.Proto == "icmp" }); tr != nil {
		ev = append(ev, obs(tool, "ICMP from %s to %s is %s on %s by %s", tr.Flow.Src, tr.Flow.Dst, pastTense(tr.Verdict), f.scopeName(s), tr.VerdictBy))
	}
	var next []string
	for _, o := range issues {
		switch {
		case strings.Contains(o.Observation, "sends VXLAN from"):
			next = append(next, fmt.Sprintf("Make flannel use the node's InternalIP for VXLAN: start flanneld with --iface=<NIC holding %s> (or --iface-regex), and remove the stray second address from the NIC (a DHCP lease on a static NIC: set BOOTPROTO=none / dhcp4: false); then restart flanneld so %s is recreated.", c.SourceNode.InternalIP, c.SourceNode.OverlayDevice))
		case strings.Contains(o.Observation, "forwarding (FDB)"):
			next = append(next, fmt.Sprintf("Restore the VXLAN forwarding entry (flanneld writes it from the peer node's annotations: restart flanneld on the node, or `bridge fdb append <peer VTEP MAC> dev %s dst <peer InternalIP>`), and check that the peer node's flannel.alpha.coreos.com/public-ip annotation is its InternalIP.", c.SourceNode.OverlayDevice))
		case strings.Contains(o.Observation, "(VXLAN)"):
			next = append(next, fmt.Sprintf("Open UDP %d between the nodes in the host firewall and the cloud security group (both directions, node to node).", c.SourceNode.OverlayPort))
		}
	}
	if slices.ContainsFunc(ev, func(o Observation) bool { return strings.HasPrefix(o.Observation, "ICMP to") }) {
		next = append(next, "Allow ICMP between nodes (the host firewall rejects it): it hides reachability and breaks path-MTU discovery.")
	}
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("The overlay between node %s and its peer does not carry traffic: %s.", c.SourceNode.Name, issues[0].Observation),
		evidence: ev, next: next}, ""
}

func ruleNoEndpoints(f *facts) (*match, string) {
	c := f.req.Cluster
	_, isSvc := f.dest()
	if c == nil || c.Service == nil || !isSvc {
		return nil, "the destination is not a Service"
	}
	if len(c.Service.ReadyEndpoints()) > 0 {
		return nil, fmt.Sprintf("Service %s has %d ready endpoint(s)", c.Service.Name, len(c.Service.ReadyEndpoints()))
	}
	ev := []Observation{obs("kubernetes", "Service %s has %d endpoint(s), none ready", c.Service.Name, len(c.Service.Endpoints))}
	if f.tcp != nil {
		ev = append(ev, obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)))
	}
	if _, tr, tool := f.blocked(func(fl collectors.Flow) bool { return fl.Proto == "tcp" }); tr != nil {
		ev = append(ev, obs(tool, "kube-proxy's rule for a Service without endpoints: %s", tr.VerdictBy))
	}
	return &match{confidence: 0.95,
		summary:  fmt.Sprintf("Service %s has no ready endpoints: kube-proxy rejects connections to %s.", c.Service.Name, f.to()),
		evidence: ev,
		next: []string{fmt.Sprintf("Check why the pods behind %s are not ready: `kubectl get endpointslices -l kubernetes.io/service-name=%s` and `kubectl describe pod` for failing readiness probes.", c.Service.Name, svcShort(c.Service.Name)),
			"Check that the Service's selector matches the pods' labels and that targetPort is the port the container listens on."}}, ""
}

func svcShort(key string) string {
	_, name, _ := strings.Cut(key, "/")
	return name
}

// kubeServices reports whether the source node has kube-proxy's Service
// rules (iptables) or virtual servers (IPVS).
func (f *facts) kubeServices() (bool, bool) {
	ipt := f.ipt[collectors.ScopeNode]
	if ipt == nil {
		return false, false
	}
	if nat := ipt.Tables["nat"]; nat != nil && nat.Chains["KUBE-SERVICES"] != nil {
		return true, true
	}
	if f.ipvs != nil && len(f.ipvs.Services) > 0 {
		return true, true
	}
	if nft := f.nft[collectors.ScopeNode]; nft != nil && slices.ContainsFunc(nft.Tables, func(t string) bool { return strings.HasSuffix(t, " kube-proxy") }) {
		return true, true
	}
	return false, true
}

func (f *facts) kubeProxyStatus() string {
	if c := f.req.Cluster; c != nil && c.SourceNode != nil && c.SourceNode.KubeProxy != "" {
		return c.SourceNode.KubeProxy
	}
	return ""
}

func ruleKubeProxyDown(f *facts) (*match, string) {
	_, isSvc := f.dest()
	if !isSvc {
		return nil, "the question is not about a Service"
	}
	has, known := f.kubeServices()
	if !known {
		return nil, "the node's rules were not read"
	}
	if has {
		return nil, "the node has kube-proxy's KUBE-SERVICES chain"
	}
	node := f.scopeName(collectors.ScopeNode)
	ev := []Observation{obs("iptables", "%s has no KUBE-SERVICES chain in the nat table, and no IPVS virtual servers or kube-proxy nftables table", node)}
	if st := f.kubeProxyStatus(); st != "" && st != "Running" {
		ev = append(ev, obs("kubernetes", "kube-proxy on %s: %s", node, st))
	}
	if f.tcp != nil {
		ev = append(ev, obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)))
	}
	if f.tcpEP != nil && f.tcpEP.Connected > 0 {
		ev = append(ev, obs("tcp", "the Service's pod answers directly (%s)", f.tcpEP.Dst))
	}
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("kube-proxy is not running on %s: no Service address works from its pods.", node),
		evidence: ev,
		next: []string{fmt.Sprintf("Get kube-proxy running on %s: `kubectl -n kube-system get pods -o wide | grep kube-proxy`, then its events and logs.", node),
			"If it was evicted or never scheduled, give the kube-proxy DaemonSet priorityClassName: system-node-critical and tolerations for the node's taints."}}, ""
}

func ruleServiceRules(f *facts) (*match, string) {
	c := f.req.Cluster
	_, isSvc := f.dest()
	if !isSvc || c == nil || c.Service == nil {
		return nil, "the question is not about a Service"
	}
	if !f.tcpFailed() {
		return nil, "connects to the Service succeed"
	}
	ipt := f.ipt[collectors.ScopeNode]
	if ipt == nil {
		return nil, "the node's rules were not read"
	}
	for _, t := range ipt.Traces {
		if t.Flow.Proto == "tcp" && t.NATTo != "" {
			return nil, fmt.Sprintf("%s translates %s to %s", f.scopeName(collectors.ScopeNode), f.to(), t.NATTo)
		}
	}
	node := f.scopeName(collectors.ScopeNode)
	ev := []Observation{
		obs("iptables", "%s has KUBE-SERVICES but no rule that translates %s (no KUBE-SVC chain for it)", node, f.to()),
		obs("kubernetes", "Service %s has %d ready endpoint(s)", c.Service.Name, len(c.Service.ReadyEndpoints())),
		obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)),
	}
	if f.tcpEP != nil && f.tcpEP.Connected > 0 {
		ev = append(ev, obs("tcp", "the Service's pod %s answers directly", f.tcpEP.Dst))
	}
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("%s has no rules for Service %s although it has ready endpoints: kube-proxy there is out of sync.", node, c.Service.Name),
		evidence: ev,
		next: []string{fmt.Sprintf("Look at kube-proxy's log on %s for sync errors (iptables-restore failures, API watch errors) and restart it to force a full resync.", node),
			"Compare `iptables-save -t nat | grep " + c.Service.ClusterIP + "` on a healthy node."}}, ""
}

// dnsLookups splits the lookups by server role and by name kind.
func (f *facts) dnsLookups(role string) []collectors.DNSLookup {
	var out []collectors.DNSLookup
	if f.dns == nil {
		return nil
	}
	for _, l := range f.dns.Lookups {
		if l.Role == role {
			out = append(out, l)
		}
	}
	return out
}

func (f *facts) isClusterName(name string) bool {
	c := f.req.Cluster
	dom := "cluster.local"
	if c != nil && c.ClusterDomain != "" {
		dom = c.ClusterDomain
	}
	n := strings.TrimSuffix(name, ".")
	if strings.HasSuffix(n, "."+dom) || strings.HasSuffix(n, ".svc") {
		return true
	}
	// A short name resolves through the search list: a cluster name.
	return !strings.Contains(n, ".") || (c != nil && c.APIName == name)
}

func ruleDNSConfig(f *facts) (*match, string) {
	if f.dns == nil || f.resolv == nil {
		return nil, "no DNS question"
	}
	if len(f.dns.Failed()) == 0 {
		return nil, "every name resolved"
	}
	c := f.req.Cluster
	var problems []Observation
	if len(f.resolv.Nameservers) == 0 {
		problems = append(problems, obs("resolv", "%s has no nameserver", f.resolv.Path))
	}
	if c != nil && c.DNS != nil && len(f.resolv.Nameservers) > 0 && !slices.Contains(f.resolv.Nameservers, c.DNS.ClusterIP) {
		problems = append(problems, obs("resolv", "%s points at %s, not the cluster DNS Service %s (%s)", f.resolv.Path, strings.Join(f.resolv.Nameservers, ", "), c.DNS.Name, c.DNS.ClusterIP))
	}
	dom := "cluster.local"
	if c != nil && c.ClusterDomain != "" {
		dom = c.ClusterDomain
	}
	if !slices.Contains(f.resolv.Search, "svc."+dom) {
		problems = append(problems, obs("resolv", "the search list (%s) lacks svc.%s: short Service names cannot resolve", orNone(f.resolv.Search), dom))
	}
	if len(problems) == 0 {
		return nil, fmt.Sprintf("resolv.conf points at %s with the cluster search domains", strings.Join(f.resolv.Nameservers, ", "))
	}
	_, fails := f.failing()
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("The pod's resolv.conf is wrong: %s.", problems[0].Observation),
		evidence: append(problems, fails...),
		next: []string{"Check the pod's dnsPolicy and dnsConfig: the default ClusterFirst writes the cluster DNS Service and the search domains; dnsPolicy: Default gives the node's resolv.conf instead.",
			"Check kubelet's --cluster-dns / clusterDNS setting on the node matches the DNS Service IP."}}, ""
}

func ruleDNSPath(f *facts) (*match, string) {
	if f.dns == nil {
		return nil, "no DNS question"
	}
	svc, eps := f.dnsLookups("resolv.conf"), f.dnsLookups("endpoint")
	if len(svc) == 0 || len(eps) == 0 {
		return nil, "the DNS endpoints were not asked directly"
	}
	// The same name: timing out through the Service, answered by a DNS pod
	// asked directly. A name that fails both ways is not the path.
	var broken []collectors.DNSLookup
	var direct string
	for _, l := range svc {
		if l.Resolved || !strings.HasPrefix(lastQuery(l), "timeout") {
			continue
		}
		for _, e := range eps {
			if e.Name == l.Name && e.Resolved {
				broken, direct = append(broken, l), e.Server
				break
			}
		}
	}
	if len(broken) == 0 {
		for _, l := range svc {
			if l.Resolved {
				return nil, fmt.Sprintf("%s resolves through the DNS Service %s", l.Name, l.Server)
			}
		}
		return nil, "no name that times out through the DNS Service resolves when a DNS pod is asked directly"
	}
	c := f.req.Cluster
	ev := []Observation{
		obs("dns", "%s through %s: %s", broken[0].Name, broken[0].Server, lastQuery(broken[0])),
		obs("dns", "%s resolves when the DNS pod %s is asked directly", broken[0].Name, direct),
	}
	node := f.scopeName(collectors.ScopeNode)
	next := []string{}
	if has, known := f.kubeServices(); known && !has {
		ev = append(ev, obs("iptables", "%s has no kube-proxy rules at all (no KUBE-SERVICES chain)", node))
		if st := f.kubeProxyStatus(); st != "" && st != "Running" {
			ev = append(ev, obs("kubernetes", "kube-proxy on %s: %s", node, st))
		}
		next = append(next, fmt.Sprintf("Get kube-proxy running on %s and keep it there: give the kube-proxy DaemonSet priorityClassName: system-node-critical so it is never evicted or left Pending on new nodes.", node))
	} else if ipt := f.ipt[collectors.ScopeNode]; ipt != nil {
		for _, t := range ipt.Traces {
			if t.Flow.Proto == "udp" && t.Flow.DPort == 53 && t.NATTo == "" && t.Verdict == "ACCEPT" {
				ev = append(ev, obs("iptables", "%s has no DNAT for %s:53 (kube-proxy has no rules for the DNS Service)", node, t.Flow.Dst))
				next = append(next, fmt.Sprintf("kube-proxy on %s is out of sync for the DNS Service: check its logs and restart it.", node))
				break
			}
			if t.Flow.Proto == "udp" && t.Flow.DPort == 53 && t.Verdict != "ACCEPT" {
				ev = append(ev, obs("iptables", "%s %ss DNS to %s: %s", node, strings.ToLower(t.Verdict), t.Flow.Dst, t.VerdictBy))
				next = append(next, "Remove the rule that blocks DNS to the Service, or allow UDP and TCP 53 to it in the NetworkPolicy.")
				break
			}
		}
	}
	svcName := "the DNS Service"
	if c != nil && c.DNS != nil {
		svcName = "Service " + c.DNS.Name
	}
	next = append(next, "Until then, pods on this node cannot resolve any name; cordon the node if it cannot be fixed quickly.")
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("DNS queries to %s time out from %s while the DNS pods answer directly: the path from the pod to the Service is broken on %s.", svcName, f.scopeName(collectors.ScopeSource), node),
		evidence: ev, next: next}, ""
}

func ruleDNSDown(f *facts) (*match, string) {
	if f.dns == nil {
		return nil, "no DNS question"
	}
	svc := f.dnsLookups("resolv.conf")
	var bad []collectors.DNSLookup
	for _, l := range svc {
		if l.Resolved {
			continue
		}
		q := lastQuery(l)
		if strings.HasPrefix(q, "refused") || strings.HasPrefix(q, "REFUSED") || (strings.HasPrefix(q, "SERVFAIL") && f.isClusterName(l.Name)) {
			bad = append(bad, l)
		}
	}
	if len(bad) == 0 {
		return nil, "the DNS Service answered"
	}
	ev := []Observation{obs("dns", "%s: %s", bad[0].Server, lastQuery(bad[0]))}
	for _, l := range f.dnsLookups("endpoint") {
		ev = append(ev, obs("dns", "the DNS pod %s asked directly: %s", l.Server, func() string {
			if l.Resolved {
				return "answers"
			}
			return lastQuery(l)
		}()))
	}
	if c := f.req.Cluster; c != nil && c.DNS != nil {
		ev = append(ev, obs("kubernetes", "Service %s has %d ready endpoint(s)", c.DNS.Name, len(c.DNS.ReadyEndpoints())))
	}
	return &match{confidence: 0.9,
		summary:  fmt.Sprintf("The cluster DNS at %s is reachable but does not answer: %s resolving %s.", bad[0].Server, strings.SplitN(lastQuery(bad[0]), " for ", 2)[0], bad[0].Name),
		evidence: ev,
		next: []string{"Check the CoreDNS pods: `kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide`, their logs, restarts and readiness.",
			"Connection refused means nothing listens on port 53 in the DNS pods (CoreDNS crashed or its Corefile failed to load); SERVFAIL for cluster names points at the kubernetes plugin (API access, RBAC)."}}, ""
}

func ruleDNSUpstream(f *facts) (*match, string) {
	if f.dns == nil {
		return nil, "no DNS question"
	}
	var clusterOK bool
	var outsideBad []collectors.DNSLookup
	for _, l := range f.dnsLookups("resolv.conf") {
		if f.isClusterName(l.Name) {
			clusterOK = clusterOK || l.Resolved
		} else if !l.Resolved {
			outsideBad = append(outsideBad, l)
		}
	}
	if len(outsideBad) == 0 {
		return nil, "outside names resolved"
	}
	if !clusterOK {
		return nil, "cluster names do not resolve either"
	}
	return &match{confidence: 0.85,
		summary: fmt.Sprintf("Cluster names resolve but %s does not (%s): the cluster DNS cannot use its upstream.", outsideBad[0].Name, lastQuery(outsideBad[0])),
		evidence: []Observation{
			obs("dns", "cluster names resolve through %s", outsideBad[0].Server),
			obs("dns", "%s via %s: %s", outsideBad[0].Name, outsideBad[0].Server, lastQuery(outsideBad[0])),
		},
		next: []string{"Check the `forward` line of the CoreDNS Corefile (kubectl -n kube-system get cm coredns -o yaml) and that the upstream it names answers from the DNS pods' node.",
			"Look at CoreDNS logs for upstream timeouts or SERVFAIL; check the nodes' /etc/resolv.conf if CoreDNS forwards to it."}}, ""
}

func ruleOverload(f *facts) (*match, string) {
	bad, fails := f.failing()
	if !bad {
		return nil, "every probe got through"
	}
	var ev []Observation
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode, collectors.ScopePeerNode, collectors.ScopePeer} {
		if l := f.links[s]; l != nil {
			for _, lk := range l.Links {
				if q := lk.Qdisc; q != nil && q.Drops > 0 && q.Backlog > 0 {
					ev = append(ev, obs("links", "the %s queue of %s on %s is full: %d bytes waiting, %d packets dropped", q.Kind, lk.Name, f.scopeName(s), q.Backlog, q.Drops))
				}
			}
		}
		if sc := f.sysctls[s]; sc != nil && sc.ConntrackMax > 0 && sc.ConntrackCount*10 >= sc.ConntrackMax*9 {
			ev = append(ev, obs("sysctls", "conntrack on %s is %d of %d entries full", f.scopeName(s), sc.ConntrackCount, sc.ConntrackMax))
		}
	}
	if len(ev) == 0 {
		return nil, "no full queue, conntrack table or listen queue on the path"
	}
	return &match{confidence: 0.8,
		summary:  fmt.Sprintf("The path to %s is overloaded: %s.", f.to(), ev[0].Observation),
		evidence: append(ev, fails...),
		next: []string{"Find what fills the queue (`tc -s qdisc`, `ss -s`, the node's top talkers with `conntrack -L | sort`), and rate-limit or move it.",
			"Raise nf_conntrack_max or the NIC's queue only after finding the source of the load."}}, ""
}

func ruleFirewall(f *facts) (*match, string) {
	bad, fails := f.failing()
	if !bad {
		return nil, "every probe got through"
	}
	if f.req.To == nil {
		return nil, "no destination"
	}
	dst := f.req.To.Addr
	port := f.req.To.Port
	tcpScope, tcpTr, tcpTool := f.blocked(func(fl collectors.Flow) bool { return fl.Proto == "tcp" && fl.DPort == port && fl.Dst == dst })
	icmpScope, icmpTr, icmpTool := f.blocked(func(fl collectors.Flow) bool { return fl.Proto == "icmp" && fl.Dst == dst })
	rejectReset := tcpTr != nil && strings.Contains(tcpTr.RejectWith, "reset")
	if f.pingOK() && f.tcp != nil && !f.tcpOK() {
		// Port level: ICMP passes, the port does not.
		if tcpTr != nil {
			v := PortFirewall
			ev := []Observation{obs(tcpTool, "TCP %d to %s is %s on %s by %s", port, dst, pastTense(tcpTr.Verdict), f.scopeName(tcpScope), tcpTr.VerdictBy)}
			ev = append(ev, obs("ping", "ICMP to %s gets replies", dst))
			ev = append(ev, fails...)
			if ls := f.listeners(port); ls != "" {
				ev = append(ev, obs("sockets", "%s listens on %s", f.scopeName(collectors.ScopePeer), ls))
			}
			conf := 0.9
			if rejectReset {
				ev = append(ev, obs("tcp", "the reject answers with a TCP reset, so from the outside it looks like a closed port"))
			}
			if nf := f.tcpDrops("NETFILTER_DROP"); len(nf) > 0 {
				ev = append(ev, f.dropLine(nf[0]))
				conf = 0.95
			}
			return &match{verdict: &v, confidence: conf,
				summary:  fmt.Sprintf("A firewall rule on %s %ss TCP to %s while ICMP passes.", f.scopeName(tcpScope), strings.ToLower(tcpTr.Verdict), f.to()),
				evidence: ev, next: firewallNext(f, tcpScope, tcpTool, tcpTr)}, ""
		}
		if nf := f.tcpDrops("NETFILTER_DROP"); len(nf) > 0 {
			return f.firewallByKernel(PortFirewall, nf[0], fails), ""
		}
		return nil, "no rule on the path blocks the port"
	}
	if f.pingDead() || f.tcpFailed() {
		tr, s, tool := tcpTr, tcpScope, tcpTool
		if tr == nil {
			tr, s, tool = icmpTr, icmpScope, icmpTool
		}
		if tr == nil {
			if nf := f.pathDrops("NETFILTER_DROP"); len(nf) > 0 {
				return f.firewallByKernel(NetFirewall, nf[0], fails), ""
			}
			return nil, "no DROP or REJECT rule on the path matches the probes"
		}
		ev := []Observation{obs(tool, "%s to %s is %s on %s by %s", strings.ToUpper(tr.Flow.Proto), dst, pastTense(tr.Verdict), f.scopeName(s), tr.VerdictBy)}
		if icmpTr != nil && icmpTr != tr {
			ev = append(ev, obs(icmpTool, "ICMP to %s is %s on %s by %s", dst, pastTense(icmpTr.Verdict), f.scopeName(icmpScope), icmpTr.VerdictBy))
		}
		if nf := f.pathDrops("NETFILTER_DROP"); len(nf) > 0 {
			ev = append(ev, f.dropLine(nf[0]))
		}
		ev = append(ev, fails...)
		return &match{confidence: 0.9,
			summary:  fmt.Sprintf("A firewall rule on %s %ss traffic to %s: both ICMP and TCP fail.", f.scopeName(s), strings.ToLower(tr.Verdict), f.to()),
			evidence: ev, next: firewallNext(f, s, tool, tr)}, ""
	}
	return nil, "the probes that failed are not blocked by a rule"
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
		ev = append(ev, obs("ping", "ICMP to %s gets replies", f.req.To.Addr))
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
	next := []string{
		fmt.Sprintf("Find the rule in %s: `%siptables-save -c%s` and `%snft list ruleset`; the rule whose counter rises with each attempt is the one (the kernel dropped the packet in %s).", f.dropPlace(d), in, grep, in, d.Func()),
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

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func firewallNext(f *facts, s collectors.Scope, tool string, tr *collectors.FlowTrace) []string {
	where := f.scopeName(s)
	rule := tr.VerdictBy
	if _, r, ok := strings.Cut(rule, ": "); ok {
		rule = r
	}
	step := fmt.Sprintf("Remove or narrow the rule on %s: `%s` (%s).", where, rule, tool)
	if tool == "iptables" {
		if strings.HasPrefix(rule, "-A ") {
			step = fmt.Sprintf("Remove or narrow the rule on %s: `iptables -D %s` (or fix what installs it).", where, strings.TrimPrefix(rule, "-A "))
		}
	}
	return []string{step, "If it comes from a NetworkPolicy, `kubectl get networkpolicy -A` and allow this traffic explicitly; if from a host firewall or security group, open it there."}
}

// listeners describes who listens on a port in the destination namespace.
func (f *facts) listeners(port uint16) string {
	so := f.sockets[collectors.ScopePeer]
	if so == nil {
		return ""
	}
	var addrs []string
	for _, l := range so.On("tcp", int(port)) {
		addrs = append(addrs, netip.AddrPortFrom(netip.MustParseAddr(l.Addr), uint16(l.Port)).String())
	}
	return strings.Join(addrs, ", ")
}

// destPort is the port the destination namespace is asked on: the Service's
// targetPort for a Service, else the probe's port.
func (f *facts) destPort() uint16 {
	if c := f.req.Cluster; c != nil && c.Service != nil {
		if _, isSvc := f.dest(); isSvc {
			return uint16(c.Service.TargetPort)
		}
	}
	if f.req.To == nil {
		return 0
	}
	return f.req.To.Port
}

func ruleLoopback(f *facts) (*match, string) {
	if f.tcp == nil || !f.tcpAll("refused") {
		return nil, "connects were not refused"
	}
	so := f.sockets[collectors.ScopePeer]
	if so == nil {
		return nil, "the destination's sockets were not read"
	}
	ls := so.On("tcp", int(f.destPort()))
	if len(ls) == 0 {
		return nil, fmt.Sprintf("nothing listens on port %d", f.destPort())
	}
	for _, l := range ls {
		if !l.Loopback() {
			return nil, fmt.Sprintf("port %d is open on %s", f.destPort(), l.Addr)
		}
	}
	return &match{confidence: 0.95,
		summary: fmt.Sprintf("The application in %s listens on %s only: connections from other pods are refused.", f.scopeName(collectors.ScopePeer), f.listeners(f.destPort())),
		evidence: append([]Observation{
			obs("sockets", "port %d in %s is bound to %s only", f.destPort(), f.scopeName(collectors.ScopePeer), f.listeners(f.destPort())),
			obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)),
		}, f.dropLines(f.tcpDrops("NO_SOCKET"), 1)...),
		next: []string{fmt.Sprintf("Make the application listen on 0.0.0.0:%d (or the pod IP): its bind/listen address setting, e.g. --host 0.0.0.0, server.address, or listen 0.0.0.0:%d.", f.destPort(), f.destPort())}}, ""
}

func ruleNotListening(f *facts) (*match, string) {
	if f.tcp == nil || !f.tcpAll("refused") {
		return nil, "connects were not refused"
	}
	so := f.sockets[collectors.ScopePeer]
	port := f.destPort()
	if so == nil {
		// The kernel tells a closed port from a REJECT: no socket found
		// (NO_SOCKET) against freed by netfilter (ruleFirewall).
		if ns := f.tcpDrops("NO_SOCKET"); len(ns) > 0 {
			d := ns[0]
			return &match{confidence: 0.85,
				summary:  fmt.Sprintf("Nothing listens on port %d in %s: the kernel found no socket for the probe's SYN (NO_SOCKET) and answered with a reset.", d.DPort, f.dropPlace(d)),
				evidence: []Observation{obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)), f.dropLine(d)},
				next: []string{fmt.Sprintf("Check that the application runs and listens on %d in %s (`%sss -ltnp`), and that it binds the pod's address, not 127.0.0.1.", d.DPort, f.dropPlace(d), f.nsCommand(d)),
					fmt.Sprintf("If it listens on another port, fix the containerPort/targetPort or the client's port (%d).", port)},
				alternatives: []Considered{
					{PortFirewall.Class, PortFirewall.Cause, "ruled out by the kernel: the SYN was dropped for want of a socket (NO_SOCKET), not by netfilter (NETFILTER_DROP)"},
					{PortLoopback.Class, PortLoopback.Cause, "not ruled out: an application bound to 127.0.0.1 only gets the same NO_SOCKET for the pod's address; the destination's listeners (--peer-netns) tell them apart"},
				}}, ""
		}
		// Without the destination's view or the kernel's word a reset is
		// a closed port or a REJECT --reject-with tcp-reset: say so.
		return &match{confidence: 0.6,
			summary:  fmt.Sprintf("Connections to %s are refused (TCP reset): most likely nothing listens on port %d, but a firewall rule that rejects with a reset looks the same from here.", f.to(), port),
			evidence: []Observation{obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp))},
			next: []string{fmt.Sprintf("Check that the application runs and listens on %d in the destination pod (`ss -ltn` there).", port),
				"Run again with --peer-netns (the destination pod's namespace) to see its listeners and firewall, which tells the two apart."},
			alternatives: []Considered{{PortFirewall.Class, PortFirewall.Cause, "not ruled out: a REJECT --reject-with tcp-reset rule in the destination gives the same reset; its sockets and rules (--peer-netns) tell them apart"}}}, ""
	}
	if len(so.On("tcp", int(port))) > 0 {
		return nil, fmt.Sprintf("port %d has a listener in the destination", port)
	}
	var open []string
	for _, l := range so.Listeners {
		if l.Proto == "tcp" {
			open = append(open, fmt.Sprintf("%s:%d", l.Addr, l.Port))
		}
	}
	return &match{confidence: 0.95,
		summary: fmt.Sprintf("Nothing listens on port %d in %s: connections are refused.", port, f.scopeName(collectors.ScopePeer)),
		evidence: append([]Observation{
			obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)),
			obs("sockets", "no socket listens on TCP %d in %s (listening: %s)", port, f.scopeName(collectors.ScopePeer), orNone(open)),
		}, f.dropLines(f.tcpDrops("NO_SOCKET"), 1)...),
		next: []string{"Check that the application process is running in the pod (`kubectl logs`, restarts, crash loops) and which port it listens on.",
			fmt.Sprintf("If it listens on another port, fix the containerPort/targetPort or the client's port (%d).", port)}}, ""
}

func ruleRouteAsymmetric(f *facts) (*match, string) {
	bad, fails := f.failing()
	if !bad {
		return nil, "every probe got through"
	}
	// Two ways out: two default routes, or one multipath default over
	// different devices (the seed's ~50 % loss).
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode, collectors.ScopePeerNode} {
		r := f.routes[s]
		if r == nil {
			continue
		}
		var devs []string
		for _, d := range r.Defaults() {
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
			return &match{confidence: 0.85,
				summary:  fmt.Sprintf("%s has two default routes on different interfaces; the flows that take the wrong one are lost (partial loss).", f.scopeName(s)),
				evidence: ev,
				next:     []string{fmt.Sprintf("Remove the extra default route on %s (`ip route del default via <gateway> dev <the NIC that cannot reach it>`), and stop what adds it (a second DHCP client, a NetworkManager profile with DEFROUTE=yes on the management NIC).", f.scopeName(s))}}, ""
		}
	}
	// Asymmetric: the source node sends another node's pods around the
	// overlay, while the answers come back through it; strict rp_filter
	// drops them.
	c := f.req.Cluster
	r := f.routes[collectors.ScopeNode]
	if c != nil && c.SourceNode != nil && c.PeerNode != nil && c.PeerNode.Name != c.SourceNode.Name && r != nil && r.Chosen != nil &&
		c.SourceNode.OverlayDevice != "" && r.Chosen.Dev != c.SourceNode.OverlayDevice && inPrefix(r.Chosen.Dst, c.PeerNode.PodCIDR) {
		ev := []Observation{obs("routes", "%s routes %s (a pod on node %s) via %s, not via the overlay %s", f.scopeName(collectors.ScopeNode), r.Chosen.Dst, c.PeerNode.Name, r.Chosen.Dev, c.SourceNode.OverlayDevice)}
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
		return &match{confidence: 0.8,
			summary:  fmt.Sprintf("The path is asymmetric: %s sends traffic for %s outside the overlay and the answers return through it, so the reverse-path filter drops them.", f.scopeName(collectors.ScopeNode), r.Chosen.Dst),
			evidence: ev,
			next: []string{fmt.Sprintf("Remove the route on %s that sends %s's PodCIDR via %s (`ip route del %s`); flannel's route goes via %s.", f.scopeName(collectors.ScopeNode), c.PeerNode.Name, r.Chosen.Dev, c.PeerNode.PodCIDR, c.SourceNode.OverlayDevice),
				"If asymmetric paths are intended, set net.ipv4.conf.<nic>.rp_filter=2 (loose) on the receiving node."}}, ""
	}
	// The kernel's word without the routes that explain it.
	if rp := f.pathDrops("IP_RPFILTER"); len(rp) > 0 {
		d := rp[0]
		return &match{confidence: 0.8,
			summary:  fmt.Sprintf("The reverse-path filter in %s drops the probes' packets arriving on %s: the route back to %s leaves by another interface (an asymmetric path).", f.dropPlace(d), orWord(d.Dev, "its interface"), d.Src),
			evidence: append([]Observation{f.dropLine(d)}, fails...),
			next: []string{fmt.Sprintf("Compare `%sip route get %s` with the interface the packets arrive on (%s): make the route back use it, or remove the route that sends them around.", f.nsCommand(d), d.Src, orWord(d.Dev, "see the drop")),
				fmt.Sprintf("If asymmetric paths are intended, set net.ipv4.conf.%s.rp_filter=2 (loose) in %s.", orWord(d.Dev, "<interface>"), f.dropPlace(d))}}, ""
	}
	return nil, "one default route, and the path to the destination uses the overlay"
}

func ruleMTU(f *facts) (*match, string) {
	m := f.pmtu
	var ev []Observation
	if m != nil && m.Reachable && m.PathMTU > 0 && m.PathMTU < m.IfaceMTU {
		how := "no fragmentation-needed came back (a PMTU black hole): full-size packets vanish silently"
		if len(m.FragNeeded) > 0 {
			how = fmt.Sprintf("%s answered fragmentation-needed with MTU %d", m.FragNeeded[0].From, m.FragNeeded[0].MTU)
		}
		ev = append(ev, obs("pmtu", "packets up to %d bytes reach %s, but %s allows %d: %s", m.PathMTU, m.Dst, m.Dev, m.IfaceMTU, how))
	}
	if f.capture != nil && f.capture.Summary != nil {
		for _, fl := range f.capture.Summary.Flows {
			if fl.FullSizeRetx > 0 {
				ev = append(ev, obs("capture", "%s: %d full-size segments retransmitted", fl.Flow, fl.FullSizeRetx))
			}
		}
	}
	ev = append(ev, f.dropLines(f.pathDrops("PKT_TOO_BIG", "FRAG*", "IP_FRAG*"), 1)...)
	if len(ev) == 0 {
		if m != nil && m.PathMTU == m.IfaceMTU {
			return nil, fmt.Sprintf("DF probes of the full %d bytes reach the destination", m.IfaceMTU)
		}
		return nil, "no path-MTU evidence"
	}
	// The chain: pod MTU above the node's overlay MTU.
	if c := f.req.Cluster; c != nil && c.SourceNode != nil {
		if nl := f.links[collectors.ScopeNode]; nl != nil {
			if ov := nl.ByName(c.SourceNode.OverlayDevice); ov != nil && m != nil && m.IfaceMTU > ov.MTU {
				ev = append(ev, obs("links", "the pod's %s has MTU %d over %s with MTU %d on %s", m.Dev, m.IfaceMTU, ov.Name, ov.MTU, f.scopeName(collectors.ScopeNode)))
			}
		}
	}
	pm := 0
	if m != nil {
		pm = m.PathMTU
	}
	next := []string{fmt.Sprintf("Align the MTUs: the pod interface MTU must not exceed the tunnel's (%d here): set the CNI MTU (flannel's net-conf / Calico's veth_mtu) to the overlay MTU and recreate the pods.", pm)}
	if m != nil && len(m.FragNeeded) == 0 {
		next = append(next, "Allow ICMP fragmentation-needed (type 3 code 4) through the host firewalls and security groups, so path-MTU discovery works.")
	}
	return &match{confidence: 0.9,
		summary: fmt.Sprintf("Large packets to %s are lost: the path carries at most %d bytes while the pod sends up to %d.", f.to(), pm, func() int {
			if m != nil {
				return m.IfaceMTU
			}
			return 0
		}()),
		evidence: ev, next: next}, ""
}

func pastTense(verdict string) string {
	switch verdict {
	case "DROP":
		return "dropped"
	case "REJECT":
		return "rejected"
	}
	return strings.ToLower(verdict) + "ed"
}

func inPrefix(addr, prefix string) bool {
	a, err1 := netip.ParseAddr(addr)
	p, err2 := netip.ParsePrefix(prefix)
	return err1 == nil && err2 == nil && p.Contains(a)
}
