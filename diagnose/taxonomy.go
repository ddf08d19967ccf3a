// Package diagnose is netdiag's brain: the taxonomy as data, the Plan of
// which collectors to run for a question, the Engine that runs a plan through
// a Runner (in process, or a node's agent) and the rules that turn the
// evidence into one Finding: class, cause, confidence, evidence, what was
// ruled out and what to do next.
package diagnose

import "fmt"

// Verdict is one class/cause of the taxonomy (shared/TAXONOMY.md). The
// identifiers are a public contract.
type Verdict struct {
	Class string `json:"class"`
	Cause string `json:"cause"`
}

func (v Verdict) String() string { return v.Class + "/" + v.Cause }

// The taxonomy, exactly as TAXONOMY.md spells it.
var (
	NetFirewall     = Verdict{"network-unreachable", "firewall"}
	NetRoute        = Verdict{"network-unreachable", "route"}
	NetOverload     = Verdict{"network-unreachable", "overload"}
	NetLinkDown     = Verdict{"network-unreachable", "link-down"}
	PortFirewall    = Verdict{"port-unreachable", "firewall"}
	PortNotListen   = Verdict{"port-unreachable", "not-listening"}
	PortLoopback    = Verdict{"port-unreachable", "loopback-only"}
	PortExhaustion  = Verdict{"port-unreachable", "port-exhaustion"}
	PortNoEndpoints = Verdict{"port-unreachable", "no-endpoints"}
	DNSConfig       = Verdict{"dns-failure", "pod-dns-config"}
	DNSServiceDown  = Verdict{"dns-failure", "dns-service-down"}
	DNSPathBroken   = Verdict{"dns-failure", "dns-path-broken"}
	DNSUpstream     = Verdict{"dns-failure", "upstream-failure"}
	MTUMismatch     = Verdict{"large-packet-loss", "mtu-mismatch"}
	KubeProxyDown   = Verdict{"cni-anomaly", "kube-proxy-down"}
	ServiceRules    = Verdict{"cni-anomaly", "service-rules-missing"}
	PodCIDRFull     = Verdict{"cni-anomaly", "podcidr-exhausted"}
	OverlayBroken   = Verdict{"cni-anomaly", "overlay-misconfigured"}
	Healthy         = Verdict{"healthy", "none"}
	TargetNotFound  = Verdict{"inconclusive", "target-not-found"}
	AgentDown       = Verdict{"inconclusive", "agent-unreachable"}
	Insufficient    = Verdict{"inconclusive", "insufficient-evidence"}
)

// Taxonomy lists every verdict in the order of TAXONOMY.md.
var Taxonomy = []Verdict{
	NetFirewall, NetRoute, NetOverload, NetLinkDown,
	PortFirewall, PortNotListen, PortLoopback, PortExhaustion, PortNoEndpoints,
	DNSConfig, DNSServiceDown, DNSPathBroken, DNSUpstream,
	MTUMismatch,
	KubeProxyDown, ServiceRules, PodCIDRFull, OverlayBroken,
	Healthy,
	TargetNotFound, AgentDown, Insufficient,
}

// ParseVerdict checks "class/cause" against the taxonomy.
func ParseVerdict(s string) (Verdict, error) {
	for _, v := range Taxonomy {
		if v.String() == s {
			return v, nil
		}
	}
	return Verdict{}, fmt.Errorf("unknown verdict %q: not in the taxonomy", s)
}
