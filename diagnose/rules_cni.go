package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// The cni-anomaly class: the node is reachable but cluster addresses are
// not (the overlay between the nodes, kube-proxy and its Service rules).

// overlayIssue is one thing wrong with the overlay, by kind, so the next
// steps follow the kind rather than the wording.
type overlayIssue struct {
	kind string // "no-device", "wrong-source", "no-fdb", "port-blocked"
	obs  Observation
}

// overlayChecks lists what is wrong with the overlay between the two nodes,
// and whether there was anything to check at all.
func (f *facts) overlayChecks() (issues []overlayIssue, checked []string) {
	c := f.req.Cluster
	if c == nil || c.SourceNode == nil || c.SourceNode.OverlayDevice == "" {
		return nil, nil
	}
	check := func(scope collectors.Scope, n *Node, other *Node) {
		l := f.links[scope]
		if l == nil || n == nil {
			return
		}
		dev := l.ByName(n.OverlayDevice)
		if dev == nil || dev.VXLAN == nil {
			issues = append(issues, overlayIssue{"no-device", obs("links", "node %s has no VXLAN device %s", n.Name, n.OverlayDevice)})
			return
		}
		checked = append(checked, fmt.Sprintf("%s on node %s sends from the InternalIP", n.OverlayDevice, n.Name))
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
			issues = append(issues, overlayIssue{"wrong-source", obs("links", "%s on node %s sends VXLAN from %s%s, not from the node's InternalIP %s; the other node answers to the InternalIP", n.OverlayDevice, n.Name, dev.VXLAN.Local, why, n.InternalIP)})
		}
		if nb := f.neigh[scope]; nb != nil && other != nil {
			checked = append(checked, fmt.Sprintf("its forwarding entries reach node %s", other.Name))
			ok := false
			var dsts []string
			for _, e := range nb.FDB {
				if e.Dev == n.OverlayDevice && e.Dst == other.InternalIP {
					ok = true
				}
				if e.Dev == n.OverlayDevice && e.Dst != "" {
					dsts = append(dsts, e.Dst)
				}
			}
			if !ok {
				issues = append(issues, overlayIssue{"no-fdb", obs("neighbours", "%s on node %s has no forwarding (FDB) entry towards node %s at %s (entries point at: %s)", n.OverlayDevice, n.Name, other.Name, other.InternalIP, orNone(dsts))})
			}
		}
	}
	check(collectors.ScopeNode, c.SourceNode, c.PeerNode)
	if c.PeerNode != nil && c.PeerNode.Name != c.SourceNode.Name {
		check(collectors.ScopePeerNode, c.PeerNode, c.SourceNode)
	}
	// The overlay's UDP port in either node's firewall.
	overlay := func(fl collectors.Flow) bool { return fl.Proto == "udp" && int(fl.DPort) == c.SourceNode.OverlayPort }
	if b, ok := f.firstBlock(overlay); ok {
		issues = append(issues, overlayIssue{"port-blocked", obs(b.tool, "UDP %d (VXLAN) from %s to %s is %s on %s by %s", b.tr.Flow.DPort, b.tr.Flow.Src, b.tr.Flow.Dst, pastTense(b.tr.Verdict), f.scopeName(b.scope), b.tr.VerdictBy)})
	} else if f.traced(overlay) {
		checked = append(checked, fmt.Sprintf("UDP %d passes the nodes' firewalls", c.SourceNode.OverlayPort))
	}
	return issues, checked
}

// traced reports whether any firewall trace was made of a matching flow.
func (f *facts) traced(match func(collectors.Flow) bool) bool {
	for _, s := range collectors.Scopes {
		for _, ts := range [][]collectors.FlowTrace{tracesOf(f.ipt[s]), nftTraces(f.nft[s])} {
			if slices.ContainsFunc(ts, func(t collectors.FlowTrace) bool { return match(t.Flow) }) {
				return true
			}
		}
	}
	return false
}

func ruleOverlay(f *facts) outcome {
	issues, checked := f.overlayChecks()
	if len(issues) == 0 {
		if len(checked) == 0 {
			return notApplicable
		}
		return ruledOut("%s", strings.Join(checked, "; "))
	}
	bad, fails := f.failing()
	if !bad {
		return ruledOut("the overlay looks misconfigured (%s) but every probe got through", issues[0].obs.Observation)
	}
	c := f.req.Cluster
	var ev []Observation
	for _, i := range issues {
		ev = append(ev, i.obs)
	}
	ev = append(ev, fails...)
	// The seed's master: ICMP rejected on the node too; list it with the rest.
	icmpBlocked := false
	if b, ok := f.firstBlock(func(fl collectors.Flow) bool { return fl.IsICMP() }); ok {
		ev = append(ev, f.traceLine(b))
		icmpBlocked = true
	}
	var next []string
	for _, i := range issues {
		switch i.kind {
		case "wrong-source":
			next = append(next, fmt.Sprintf("Make flannel use the node's InternalIP for VXLAN: start flanneld with --iface=<NIC holding %s> (or --iface-regex), and remove the stray second address from the NIC (a DHCP lease on a static NIC: set BOOTPROTO=none / dhcp4: false); then restart flanneld so %s is recreated.", c.SourceNode.InternalIP, c.SourceNode.OverlayDevice))
		case "no-fdb":
			next = append(next, fmt.Sprintf("Restore the VXLAN forwarding entry (flanneld writes it from the peer node's annotations: restart flanneld on the node, or `bridge fdb append <peer VTEP MAC> dev %s dst <peer InternalIP>`), and check that the peer node's flannel.alpha.coreos.com/public-ip annotation is its InternalIP.", c.SourceNode.OverlayDevice))
		case "port-blocked":
			next = append(next, fmt.Sprintf("Open UDP %d between the nodes in the host firewall and the cloud security group (both directions, node to node).", c.SourceNode.OverlayPort))
		case "no-device":
			next = append(next, fmt.Sprintf("Start flanneld on the node (it creates %s) and look at its log for why it has not.", c.SourceNode.OverlayDevice))
		}
	}
	if icmpBlocked {
		next = append(next, "Allow ICMP between nodes (the host firewall rejects it): it hides reachability and breaks path-MTU discovery.")
	}
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("The overlay between node %s and its peer does not carry traffic: %s.", c.SourceNode.Name, issues[0].obs.Observation),
		evidence: ev, next: next})
}

// kubeServices reports whether the source node has kube-proxy's Service
// rules (iptables, nftables) or virtual servers (IPVS), and whether its
// rules were read at all.
func (f *facts) kubeServices() (has, known bool) {
	ipt := f.ipt[collectors.ScopeNode]
	if ipt == nil {
		return false, false
	}
	for _, tables := range []map[string]*collectors.IptTable{ipt.Tables, ipt.Tables6} {
		if nat := tables["nat"]; nat != nil && nat.Chains["KUBE-SERVICES"] != nil {
			return true, true
		}
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

func ruleKubeProxyDown(f *facts) outcome {
	_, isSvc := f.dest()
	if !isSvc {
		return notApplicable
	}
	has, known := f.kubeServices()
	if !known {
		return notApplicable
	}
	if has {
		return ruledOut("the node has kube-proxy's Service rules")
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
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("kube-proxy is not running on %s: no Service address works from its pods.", node),
		evidence: ev,
		next: []string{fmt.Sprintf("Get kube-proxy running on %s: `kubectl -n kube-system get pods -o wide | grep kube-proxy`, then its events and logs.", node),
			"If it was evicted or never scheduled, give the kube-proxy DaemonSet priorityClassName: system-node-critical and tolerations for the node's taints."}})
}

func ruleServiceRules(f *facts) outcome {
	c := f.req.Cluster
	_, isSvc := f.dest()
	ipt := f.ipt[collectors.ScopeNode]
	if !isSvc || c == nil || c.Service == nil || ipt == nil || f.tcp == nil {
		return notApplicable
	}
	if !f.tcpFailed() {
		return ruledOut("connects to the Service succeed")
	}
	for _, t := range ipt.Traces {
		if t.Flow.Proto == "tcp" && t.NATTo != "" && t.Flow.Dst == f.req.To.Addr {
			return ruledOut("%s translates %s to %s", f.scopeName(collectors.ScopeNode), f.to(), t.NATTo)
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
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("%s has no rules for Service %s although it has ready endpoints: kube-proxy there is out of sync.", node, c.Service.Name),
		evidence: ev,
		next: []string{fmt.Sprintf("Look at kube-proxy's log on %s for sync errors (iptables-restore failures, API watch errors) and restart it to force a full resync.", node),
			"Compare `iptables-save -t nat | grep " + c.Service.ClusterIP + "` on a healthy node."}})
}
