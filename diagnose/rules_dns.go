package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// The dns-failure class: addresses work, names do not (the pod's
// resolv.conf, the path to the DNS Service, the DNS server, its upstream).

// dnsLookups are the lookups asked of servers of one role.
func (f *facts) dnsLookups(roles ...string) []collectors.DNSLookup {
	var out []collectors.DNSLookup
	if f.dns == nil {
		return nil
	}
	for _, l := range f.dns.Lookups {
		if slices.Contains(roles, l.Role) {
			out = append(out, l)
		}
	}
	return out
}

// podLookups are the lookups a resolver in the pod makes: its resolv.conf
// nameservers, or glibc's fallback when the file names none.
func (f *facts) podLookups() []collectors.DNSLookup {
	return f.dnsLookups(collectors.RoleResolvConf, collectors.RoleFallback)
}

func (f *facts) clusterDomain() string {
	if c := f.req.Cluster; c != nil && c.ClusterDomain != "" {
		return c.ClusterDomain
	}
	return "cluster.local"
}

func (f *facts) isClusterName(name string) bool {
	c := f.req.Cluster
	n := strings.TrimSuffix(name, ".")
	if strings.HasSuffix(n, "."+f.clusterDomain()) || strings.HasSuffix(n, ".svc") {
		return true
	}
	// A short name resolves through the search list: a cluster name.
	return !strings.Contains(n, ".") || (c != nil && c.APIName == name)
}

func ruleDNSConfig(f *facts) outcome {
	if f.dns == nil || f.resolv == nil {
		return notApplicable
	}
	whose := "the pod's"
	if f.req.SourceIsNode() {
		whose = "the node's"
	}
	if len(f.dns.Failed()) == 0 {
		return ruledOut("every name resolved with %s resolv.conf (%s)", whose, f.resolv.Path)
	}
	c := f.req.Cluster
	var problems []Observation
	if len(f.resolv.Nameservers) == 0 {
		problems = append(problems, obs("resolv", "%s names no nameserver: glibc falls back to %s, where nothing answers", f.resolv.Path, collectors.GlibcFallbackNameserver))
	}
	node := f.req.SourceIsNode()
	if !node && c != nil && c.DNS != nil && len(f.resolv.Nameservers) > 0 && !slices.Contains(f.resolv.Nameservers, c.DNS.ClusterIP) {
		problems = append(problems, obs("resolv", "%s points at %s, not the cluster DNS Service %s (%s)", f.resolv.Path, strings.Join(f.resolv.Nameservers, ", "), c.DNS.Name, c.DNS.ClusterIP))
	}
	dom := f.clusterDomain()
	if !node && c != nil && !slices.Contains(f.resolv.Search, "svc."+dom) {
		problems = append(problems, obs("resolv", "the search list (%s) lacks svc.%s: short Service names cannot resolve", orNone(f.resolv.Search), dom))
	}
	if len(problems) == 0 {
		return ruledOut("resolv.conf points at %s with the cluster search domains", strings.Join(f.resolv.Nameservers, ", "))
	}
	_, fails := f.failing()
	if node {
		return concluded(&match{confidence: 0.9,
			summary:  fmt.Sprintf("The node's resolv.conf is wrong: %s.", problems[0].Observation),
			evidence: append(problems, fails...),
			next:     []string{fmt.Sprintf("Give %s a nameserver line (or fix what writes it: systemd-resolved, NetworkManager, DHCP, cloud-init).", f.resolv.Path)}})
	}
	next := []string{"Check the pod's dnsPolicy and dnsConfig: the default ClusterFirst writes the cluster DNS Service and the search domains; dnsPolicy: Default gives the node's resolv.conf instead."}
	if c != nil {
		next = append(next, "Check kubelet's --cluster-dns / clusterDNS setting on the node matches the DNS Service IP.")
	} else {
		next = append(next, fmt.Sprintf("Give %s a nameserver line (or fix what writes it: the CNI plugin, the container runtime, an init script).", f.resolv.Path))
	}
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("The pod's resolv.conf is wrong: %s.", problems[0].Observation),
		evidence: append(problems, fails...),
		next:     next})
}

func ruleDNSPath(f *facts) outcome {
	if f.dns == nil {
		return notApplicable
	}
	svc, eps := f.podLookups(), f.dnsLookups(collectors.RoleEndpoint)
	if len(svc) == 0 || len(eps) == 0 {
		return notApplicable
	}
	// The same name: timing out through the Service, answered by a DNS pod
	// asked directly. A name that fails both ways is not the path.
	var broken []collectors.DNSLookup
	var direct string
	for _, l := range svc {
		if q, ok := l.Last(); l.Resolved || !ok || !q.TimedOut() {
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
				return ruledOut("%s resolves through the DNS Service %s", l.Name, l.Server)
			}
		}
		return ruledOut("no name that times out through the DNS Service resolves when a DNS pod is asked directly")
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
			if t.Flow.Proto != "udp" || t.Flow.DPort != 53 {
				continue
			}
			if t.NATTo == "" && t.Verdict == "ACCEPT" {
				ev = append(ev, obs("iptables", "%s has no DNAT for %s:53 (kube-proxy has no rules for the DNS Service)", node, t.Flow.Dst))
				next = append(next, fmt.Sprintf("kube-proxy on %s is out of sync for the DNS Service: check its logs and restart it.", node))
				break
			}
			if t.Blocks() {
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
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("DNS queries to %s time out from %s while the DNS pods answer directly: the path from the pod to the Service is broken on %s.", svcName, f.scopeName(collectors.ScopeSource), node),
		evidence: ev, next: next})
}

// dnsDownAnswer reports a lookup the DNS server answered badly: nothing on
// port 53 (refused), REFUSED, or SERVFAIL for a name of its own zone.
func (f *facts) dnsDownAnswer(l collectors.DNSLookup) bool {
	q, ok := l.Last()
	if !ok || l.Resolved {
		return false
	}
	if q.Rcode == "SERVFAIL" && f.isClusterName(l.Name) {
		return true
	}
	// Nothing listens: a refusal (ICMP port unreachable) for any query and
	// no answer of any kind for the others. The kernel rate-limits those
	// ICMP errors (a burst of six, then one a second per peer), so the
	// later queries of a lookup time out instead: the refusal counts
	// wherever it came.
	refused := false
	for _, q := range l.Queries {
		if q.Rcode != "" && q.Rcode != "REFUSED" {
			return false // it answered
		}
		refused = refused || q.Refused()
	}
	return refused
}

func ruleDNSDown(f *facts) outcome {
	if f.dns == nil {
		return notApplicable
	}
	var bad []collectors.DNSLookup
	for _, l := range f.podLookups() {
		if f.dnsDownAnswer(l) {
			bad = append(bad, l)
		}
	}
	if len(bad) == 0 {
		return ruledOut("the DNS server answered (no refusal, no SERVFAIL for cluster names)")
	}
	ev := []Observation{obs("dns", "%s: %s", bad[0].Server, lastQuery(bad[0]))}
	for _, l := range f.dnsLookups(collectors.RoleEndpoint) {
		state := lastQuery(l)
		if l.Resolved {
			state = "answers"
		}
		ev = append(ev, obs("dns", "the DNS pod %s asked directly: %s", l.Server, state))
	}
	if c := f.req.Cluster; c != nil && c.DNS != nil {
		ev = append(ev, obs("kubernetes", "Service %s has %d ready endpoint(s)", c.DNS.Name, len(c.DNS.ReadyEndpoints())))
	}
	q, _ := bad[0].Last()
	how := q.Rcode
	if q.Error != "" {
		how = "connection " + q.Error
	}
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("The cluster DNS at %s is reachable but does not answer: %s resolving %s.", bad[0].Server, how, bad[0].Name),
		evidence: ev,
		next: []string{"Check the CoreDNS pods: `kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide`, their logs, restarts and readiness.",
			"Connection refused means nothing listens on port 53 in the DNS pods (CoreDNS crashed or its Corefile failed to load); SERVFAIL for cluster names points at the kubernetes plugin (API access, RBAC)."}})
}

func ruleDNSUpstream(f *facts) outcome {
	if f.dns == nil {
		return notApplicable
	}
	var clusterOK bool
	var outsideBad []collectors.DNSLookup
	for _, l := range f.podLookups() {
		if f.isClusterName(l.Name) {
			clusterOK = clusterOK || l.Resolved
		} else if !l.Resolved {
			outsideBad = append(outsideBad, l)
		}
	}
	if len(outsideBad) == 0 {
		return ruledOut("outside names resolved")
	}
	if !clusterOK {
		return ruledOut("cluster names do not resolve either")
	}
	return concluded(&match{confidence: 0.85,
		summary: fmt.Sprintf("Cluster names resolve but %s does not (%s): the cluster DNS cannot use its upstream.", outsideBad[0].Name, lastQuery(outsideBad[0])),
		evidence: []Observation{
			obs("dns", "cluster names resolve through %s", outsideBad[0].Server),
			obs("dns", "%s via %s: %s", outsideBad[0].Name, outsideBad[0].Server, lastQuery(outsideBad[0])),
		},
		next: []string{"Check the `forward` line of the CoreDNS Corefile (kubectl -n kube-system get cm coredns -o yaml) and that the upstream it names answers from the DNS pods' node.",
			"Look at CoreDNS logs for upstream timeouts or SERVFAIL; check the nodes' /etc/resolv.conf if CoreDNS forwards to it."}})
}
