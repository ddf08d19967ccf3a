package gen

import (
	"fmt"
	"strconv"
)

// kube-proxy's mark bits: masquerade (0x4000) as the lab and kube-proxy
// default to.
const masqMark = 0x4000

// kubeProxyIptables writes what kube-proxy (iptables mode, 1.28+ layout with
// KUBE-EXT/KUBE-SVL chains) and the kubelet leave in the tables of a node.
func kubeProxyIptables(ipt *iptables, svcs []*service, clusterCIDR string) {
	for _, t := range []string{"mangle", "nat", "filter"} {
		// Canaries: empty chains kubelet and kube-proxy watch to learn that
		// someone flushed the tables.
		ipt.chain(t, "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY")
	}
	ipt.chain("nat", "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
	ipt.chain("filter", "KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES",
		"KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS")

	cs := func(c string) string { return "-m conntrack --ctstate " + c }
	ipt.add("nat", "PREROUTING", 6, comment("kubernetes service portals"), "-j KUBE-SERVICES")
	ipt.add("nat", "OUTPUT", 5, comment("kubernetes service portals"), "-j KUBE-SERVICES")
	ipt.add("nat", "POSTROUTING", 6, comment("kubernetes postrouting rules"), "-j KUBE-POSTROUTING")
	ipt.add("filter", "INPUT", 6, cs("NEW"), comment("kubernetes load balancer firewall"), "-j KUBE-PROXY-FIREWALL")
	ipt.add("filter", "INPUT", 6, comment("kubernetes health check service ports"), "-j KUBE-NODEPORTS")
	ipt.add("filter", "INPUT", 6, cs("NEW"), comment("kubernetes externally-visible service portals"), "-j KUBE-EXTERNAL-SERVICES")
	ipt.add("filter", "INPUT", 6, "-j KUBE-FIREWALL")
	ipt.add("filter", "FORWARD", 5, cs("NEW"), comment("kubernetes load balancer firewall"), "-j KUBE-PROXY-FIREWALL")
	ipt.add("filter", "FORWARD", 6, comment("kubernetes forwarding rules"), "-j KUBE-FORWARD")
	ipt.add("filter", "FORWARD", 5, cs("NEW"), comment("kubernetes service portals"), "-j KUBE-SERVICES")
	ipt.add("filter", "FORWARD", 5, cs("NEW"), comment("kubernetes externally-visible service portals"), "-j KUBE-EXTERNAL-SERVICES")
	ipt.add("filter", "OUTPUT", 5, cs("NEW"), comment("kubernetes load balancer firewall"), "-j KUBE-PROXY-FIREWALL")
	ipt.add("filter", "OUTPUT", 5, cs("NEW"), comment("kubernetes service portals"), "-j KUBE-SERVICES")
	ipt.add("filter", "OUTPUT", 6, "-j KUBE-FIREWALL")

	ipt.add("filter", "KUBE-FIREWALL", 0, "! -s 127.0.0.0/8 -d 127.0.0.0/8", comment("block incoming localnet connections"),
		"-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
	ipt.add("filter", "KUBE-FORWARD", 1, cs("INVALID"), "-j DROP")
	ipt.add("filter", "KUBE-FORWARD", 3, comment("kubernetes forwarding rules"), markMatch(masqMark, masqMark), "-j ACCEPT")
	ipt.add("filter", "KUBE-FORWARD", 5, comment("kubernetes forwarding conntrack rule"), cs("RELATED,ESTABLISHED"), "-j ACCEPT")
	ipt.add("nat", "KUBE-MARK-MASQ", 3, setMark(masqMark, masqMark))
	ipt.add("nat", "KUBE-POSTROUTING", 5, "-m mark ! --mark 0x4000/0x4000 -j RETURN")
	ipt.add("nat", "KUBE-POSTROUTING", 3, setMark(masqMark, 0))
	ipt.add("nat", "KUBE-POSTROUTING", 3, comment("kubernetes service traffic requiring SNAT"), "-j MASQUERADE --random-fully")

	for _, s := range svcs {
		for _, p := range s.ports {
			kubeProxyServicePort(ipt, s, p, clusterCIDR)
		}
	}
	ipt.add("nat", "KUBE-SERVICES", 5, comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
		"-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
}

// kubeProxyServicePort writes one Service port, rule for rule as kube-proxy's
// syncProxyRules does (cluster IP, external and LoadBalancer IPs, NodePorts,
// then the SVC/EXT/FW/SVL/SEP chains).
func kubeProxyServicePort(ipt *iptables, s *service, p svcPort, clusterCIDR string) {
	spn := s.portName(p)
	proto := p.proto
	h := svcChainHash(spn, proto)
	svcChain, extChain, fwChain, svlChain := "KUBE-SVC-"+h, "KUBE-EXT-"+h, "KUBE-FW-"+h, "KUBE-SVL-"+h
	dport := func(port int) string { return fmt.Sprintf("-m %s --dport %d", proto, port) }
	dst := func(ip string) string { return fmt.Sprintf("-d %s/32 -p %s", ip, proto) }
	hasEps := len(s.eps) > 0
	local := s.localEps()
	hasExtEps := hasEps && (!s.etpLocal || len(local) > 0)
	usesExt := hasEps && (p.nodePort != 0 || s.lbIP != "" || s.externalIP != "")
	lbTarget := extChain
	usesFW := hasEps && s.lbIP != "" && len(s.lbSources) > 0
	if usesFW {
		lbTarget = fwChain
	}
	extFilter, extFilterComment := "", ""
	switch {
	case !hasEps:
		extFilter, extFilterComment = "REJECT --reject-with icmp-port-unreachable", spn+" has no endpoints"
	case !hasExtEps:
		extFilter, extFilterComment = "DROP", spn+" has no local endpoints"
	}

	if hasEps {
		ipt.add("nat", "KUBE-SERVICES", 3, dst(s.clusterIP), comment(spn+" cluster IP"), dport(p.port), "-j", svcChain)
	} else {
		ipt.add("filter", "KUBE-SERVICES", 1, dst(s.clusterIP), comment(spn+" has no endpoints"), dport(p.port),
			"-j REJECT --reject-with icmp-port-unreachable")
	}
	if s.externalIP != "" {
		if hasEps {
			ipt.add("nat", "KUBE-SERVICES", 1, dst(s.externalIP), comment(spn+" external IP"), dport(p.port), "-j", extChain)
		}
		if !hasExtEps {
			ipt.add("filter", "KUBE-EXTERNAL-SERVICES", 0, dst(s.externalIP), comment(extFilterComment), dport(p.port), "-j", extFilter)
		}
	}
	if s.lbIP != "" {
		if hasEps {
			ipt.add("nat", "KUBE-SERVICES", 2, dst(s.lbIP), comment(spn+" loadbalancer IP"), dport(p.port), "-j", lbTarget)
		}
		if usesFW {
			ipt.add("filter", "KUBE-PROXY-FIREWALL", 1, dst(s.lbIP), comment(spn+" traffic not accepted by "+fwChain), dport(p.port), "-j DROP")
		}
		if !hasExtEps {
			ipt.add("filter", "KUBE-EXTERNAL-SERVICES", 0, dst(s.lbIP), comment(extFilterComment), dport(p.port), "-j", extFilter)
		}
	}
	if p.nodePort != 0 {
		if hasEps {
			ipt.add("nat", "KUBE-NODEPORTS", 1, "-p", proto, comment(spn), dport(p.nodePort), "-j", extChain)
		}
		if !hasExtEps {
			ipt.add("filter", "KUBE-EXTERNAL-SERVICES", 0, "-p", proto, comment(extFilterComment),
				"-m addrtype --dst-type LOCAL", dport(p.nodePort), "-j", extFilter)
		}
	}
	if s.hcNodePort != 0 {
		ipt.add("filter", "KUBE-NODEPORTS", 2, "-p tcp", comment(spn+" health check node port"),
			"-m tcp --dport "+strconv.Itoa(s.hcNodePort), "-j ACCEPT")
	}
	if !hasEps {
		return
	}

	// Internal (ClusterIP) traffic: masquerade what comes from outside the
	// cluster network, then pick an endpoint.
	ipt.add("nat", svcChain, 1, "! -s "+clusterCIDR, dst(s.clusterIP), comment(spn+" cluster IP"), dport(p.port), "-j KUBE-MARK-MASQ")
	if usesExt {
		ipt.chain("nat", extChain)
		if !s.etpLocal {
			ipt.add("nat", extChain, 1, comment("masquerade traffic for "+spn+" external destinations"), "-j KUBE-MARK-MASQ")
			ipt.add("nat", extChain, 1, "-j", svcChain)
		} else {
			ipt.add("nat", extChain, 1, "-s "+clusterCIDR, comment("pod traffic for "+spn+" external destinations"), "-j", svcChain)
			ipt.add("nat", extChain, 1, comment("masquerade LOCAL traffic for "+spn+" external destinations"),
				"-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
			ipt.add("nat", extChain, 1, comment("route LOCAL traffic for "+spn+" external destinations"),
				"-m addrtype --src-type LOCAL -j", svcChain)
			if len(local) > 0 {
				ipt.add("nat", extChain, 1, "-j", svlChain)
			}
		}
	}
	if usesFW {
		for _, src := range s.lbSources {
			ipt.add("nat", fwChain, 1, "-s "+src, comment(spn+" loadbalancer IP"), "-j", extChain)
		}
		// A rule with no target: it only counts what falls through to the
		// filter table's DROP.
		ipt.add("nat", fwChain, 1, comment("other traffic to "+spn+" will be dropped by KUBE-PROXY-FIREWALL"))
	}
	writeEndpoints := func(chain string, eps []endpoint) {
		for i, e := range eps {
			epAddr := e.ip + ":" + strconv.Itoa(p.target)
			args := []string{comment(spn + " -> " + epAddr)}
			if left := len(eps) - i; left > 1 {
				args = append(args, "-m statistic --mode random --probability "+probability(1/float64(left)))
			}
			ipt.add("nat", chain, 1, append(args, "-j", sepChain(spn, proto, epAddr))...)
		}
	}
	writeEndpoints(svcChain, s.eps)
	if s.etpLocal && len(local) > 0 {
		writeEndpoints(svlChain, local)
	}
	for _, e := range s.eps {
		epAddr := e.ip + ":" + strconv.Itoa(p.target)
		sep := sepChain(spn, proto, epAddr)
		ipt.add("nat", sep, 1, "-s "+e.ip+"/32", comment(spn), "-j KUBE-MARK-MASQ")
		ipt.add("nat", sep, 1, "-p", proto, comment(spn), "-m", proto, "-j DNAT --to-destination", epAddr)
	}
}

// flannelIptables replicates the effect of the lab's flanneld rules (see
// lab/kubeproxy.go): masquerade pod traffic leaving the cluster network, and
// accept forwarding to and from it, which is what keeps pods reachable on a
// node whose FORWARD policy is DROP.
func flannelIptables(ipt *iptables, clusterCIDR, podCIDR string) {
	masq, fwd := comment("flanneld masq"), comment("flanneld forward")
	ipt.add("nat", "POSTROUTING", 6, masq, "-j FLANNEL-POSTRTG")
	ipt.add("nat", "FLANNEL-POSTRTG", 3, markMatch(masqMark, masqMark), masq, "-j RETURN")
	ipt.add("nat", "FLANNEL-POSTRTG", 4, "-s", podCIDR, "-d", clusterCIDR, masq, "-j RETURN")
	ipt.add("nat", "FLANNEL-POSTRTG", 4, "-s", clusterCIDR, "-d", podCIDR, masq, "-j RETURN")
	ipt.add("nat", "FLANNEL-POSTRTG", 1, "! -s", clusterCIDR, "-d", podCIDR, masq, "-j RETURN")
	ipt.add("nat", "FLANNEL-POSTRTG", 3, "-s", clusterCIDR, "! -d 224.0.0.0/4", masq, "-j MASQUERADE --random-fully")
	ipt.add("nat", "FLANNEL-POSTRTG", 1, "! -s", clusterCIDR, "-d", clusterCIDR, masq, "-j MASQUERADE --random-fully")
	ipt.add("filter", "FORWARD", 6, fwd, "-j FLANNEL-FWD")
	ipt.add("filter", "FLANNEL-FWD", 6, "-s", clusterCIDR, fwd, "-j ACCEPT")
	ipt.add("filter", "FLANNEL-FWD", 6, "-d", clusterCIDR, fwd, "-j ACCEPT")
}
