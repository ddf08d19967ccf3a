package diagnose

// rules is the chain, read top to bottom: the first rule that concludes
// wins. It goes from what explains everything (a link down, no route, a
// broken overlay) to what explains one port, so that a deeper cause is not
// reported as its symptom. Each rule lives in the file of its class
// (rules_network.go, rules_port.go, rules_dns.go, rules_mtu.go,
// rules_cni.go); adding a cause means a verdict in taxonomy.go, a rule
// there, its line here, and its test.
var rules = []rule{
	{TargetNotFound, ruleSourceMissing},  // the source's pod is not on its node
	{AgentDown, ruleSourceUnreached},     // the source's node did not answer
	{NetLinkDown, ruleLinkDown},          // an interface on the path is down
	{NetRoute, ruleNoRoute},              // the source has no route
	{PortExhaustion, rulePortExhaustion}, // no free source port
	{OverlayBroken, ruleOverlay},         // the VXLAN between the nodes is broken
	{PortNoEndpoints, ruleNoEndpoints},   // the Service has no ready backend
	{KubeProxyDown, ruleKubeProxyDown},   // no kube-proxy rules on the node
	{ServiceRules, ruleServiceRules},     // kube-proxy rules miss this Service
	{DNSConfig, ruleDNSConfig},           // the pod's resolv.conf is wrong
	{DNSPathBroken, ruleDNSPath},         // the DNS Service path is broken, the pods answer
	{DNSServiceDown, ruleDNSDown},        // the DNS server does not answer
	{DNSUpstream, ruleDNSUpstream},       // cluster names resolve, outside names do not
	{NetOverload, ruleOverload},          // a full queue or conntrack table
	{PortFirewall, rulePortFirewall},     // ICMP passes, a rule stops the port
	{NetFirewall, ruleNetFirewall},       // a rule stops everything to the destination
	{PortLoopback, ruleLoopback},         // the app listens on 127.0.0.1 only
	{PortNotListen, ruleNotListening},    // nothing listens on the port
	{NetRoute, ruleRouteAsymmetric},      // two ways out, or an asymmetric path
	{MTUMismatch, ruleMTU},               // large packets are lost
	{AgentDown, rulePeerUnreached},       // nothing found, and a node did not answer
}
