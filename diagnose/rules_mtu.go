package diagnose

import (
	"fmt"

	"github.com/netdiag/netdiag/collectors"
)

// The large-packet-loss class: small packets pass, large ones are lost.

// ruleMTU concludes only on its own symptom: a probe that failed for its
// size (the full-size DF probe, a packet the kernel dropped as too big), or
// full-size retransmissions of a flow to the destination asked about. Other
// traffic in a capture (a lossy bulk flow beside the probes) is not
// evidence about this path.
func ruleMTU(f *facts) outcome {
	m := f.pmtu
	tooBig := "fragmentation-needed"
	if m != nil && m.Family == "ipv6" {
		tooBig = "packet-too-big"
	}
	var failing []Observation
	if m != nil && m.Reachable && m.PathMTU > 0 && m.PathMTU < m.IfaceMTU {
		how := fmt.Sprintf("no %s came back (a PMTU black hole): full-size packets vanish silently", tooBig)
		if len(m.FragNeeded) > 0 {
			how = fmt.Sprintf("%s answered %s with MTU %d", m.FragNeeded[0].From, tooBig, m.FragNeeded[0].MTU)
		}
		failing = append(failing, obs("pmtu", "packets up to %d bytes reach %s, but %s allows %d: %s", m.PathMTU, m.Dst, m.Dev, m.IfaceMTU, how))
	}
	failing = append(failing, f.dropLines(f.pathDrops("PKT_TOO_BIG", "FRAG*", "IP_FRAG*", "IPV6_FRAG*"), 1)...)
	var retx []Observation
	if f.capture != nil && f.capture.Summary != nil {
		for _, fl := range f.capture.Summary.Flows {
			if fl.FullSizeRetx > 0 && f.isProbeDest(fl.Server) {
				retx = append(retx, obs("capture", "%s: %d full-size segments retransmitted", fl.Flow, fl.FullSizeRetx))
			}
		}
	}
	conf := 0.9
	switch {
	case len(failing) > 0:
	case len(retx) > 0 && m == nil:
		// Only the capture: full-size segments of this very flow sent
		// again, with no path-MTU probe to confirm it.
		conf = 0.6
	case m != nil && m.Reachable && m.PathMTU == m.IfaceMTU:
		why := fmt.Sprintf("DF probes of the full %d bytes reach %s", m.IfaceMTU, m.Dst)
		if len(retx) > 0 {
			why += " (the full-size retransmissions in the capture are loss, not size)"
		}
		return ruledOut("%s", why)
	default:
		return notApplicable
	}
	ev := append(failing, retx...)
	// The chain: pod MTU above the node's overlay MTU.
	if c := f.req.Cluster; c != nil && c.SourceNode != nil && m != nil {
		if nl := f.links[collectors.ScopeNode]; nl != nil {
			if ov := nl.ByName(c.SourceNode.OverlayDevice); ov != nil && m.IfaceMTU > ov.MTU {
				ev = append(ev, obs("links", "the pod's %s has MTU %d over %s with MTU %d on %s", m.Dev, m.IfaceMTU, ov.Name, ov.MTU, f.scopeName(collectors.ScopeNode)))
			}
		}
	}
	pm, ifm := 0, 0
	if m != nil {
		pm, ifm = m.PathMTU, m.IfaceMTU
	}
	next := []string{fmt.Sprintf("Align the MTUs: the pod interface MTU must not exceed the tunnel's (%d here): set the CNI MTU (flannel's net-conf / Calico's veth_mtu) to the overlay MTU and recreate the pods.", pm)}
	if m != nil && len(m.FragNeeded) == 0 {
		if m.Family == "ipv6" {
			next = append(next, "Allow ICMPv6 packet-too-big (type 2) through the host firewalls and security groups: IPv6 routers never fragment, so without it path-MTU discovery cannot work.")
		} else {
			next = append(next, "Allow ICMP fragmentation-needed (type 3 code 4) through the host firewalls and security groups, so path-MTU discovery works.")
		}
	}
	summary := fmt.Sprintf("Large packets to %s are lost: the path carries at most %d bytes while the pod sends up to %d.", f.to(), pm, ifm)
	if m == nil {
		summary = fmt.Sprintf("Full-size segments to %s are sent again and again while smaller ones pass: a path-MTU problem is likely (no path-MTU probe ran to confirm it).", f.to())
	}
	return concluded(&match{confidence: conf, summary: summary, evidence: ev, next: next})
}
