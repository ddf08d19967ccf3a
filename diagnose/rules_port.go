package diagnose

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// The port-unreachable class: the destination answers, but a TCP connect to
// the port fails (no free source port, no ready backend, a firewall rule on
// the port, an application bound to loopback, nothing listening).

func rulePortExhaustion(f *facts) outcome {
	if f.tcp == nil {
		return notApplicable
	}
	if !f.tcpAny("addr-not-avail") {
		return ruledOut("connects found a free local port")
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
	return concluded(&match{confidence: 0.95,
		summary:  fmt.Sprintf("%s has no free ephemeral port left towards %s: every port of its range holds a connection there.", f.scopeName(collectors.ScopeSource), f.to()),
		evidence: ev,
		next: []string{"Find the process holding the connections (`ss -tnp dst " + f.to() + "` in the pod) and make it reuse connections (keep-alive, a pool) or close them.",
			fmt.Sprintf("Widen the ephemeral range if it is narrow (net.ipv4.ip_local_port_range, now %s; the kernel default is 32768-60999) through the pod's securityContext sysctls.", orWord(rng, "unknown"))}})
}

func ruleNoEndpoints(f *facts) outcome {
	c := f.req.Cluster
	_, isSvc := f.dest()
	if c == nil || c.Service == nil || !isSvc {
		return notApplicable
	}
	if n := len(c.Service.ReadyEndpoints()); n > 0 {
		return ruledOut("Service %s has %d ready endpoint(s)", c.Service.Name, n)
	}
	ev := []Observation{obs("kubernetes", "Service %s has %d endpoint(s), none ready", c.Service.Name, len(c.Service.Endpoints))}
	if f.tcp != nil {
		ev = append(ev, obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)))
	}
	if b, ok := f.firstBlock(func(fl collectors.Flow) bool { return fl.Proto == "tcp" }); ok {
		ev = append(ev, obs(b.tool, "kube-proxy's rule for a Service without endpoints: %s", b.tr.VerdictBy))
	}
	return concluded(&match{confidence: 0.95,
		summary:  fmt.Sprintf("Service %s has no ready endpoints: kube-proxy rejects connections to %s.", c.Service.Name, f.to()),
		evidence: ev,
		next: []string{fmt.Sprintf("Check why the pods behind %s are not ready: `kubectl get endpointslices -l kubernetes.io/service-name=%s` and `kubectl describe pod` for failing readiness probes.", c.Service.Name, svcShort(c.Service.Name)),
			"Check that the Service's selector matches the pods' labels and that targetPort is the port the container listens on."}})
}

func svcShort(key string) string {
	_, name, _ := strings.Cut(key, "/")
	return name
}

// tcpToDest matches the TCP probe's flows: to the destination's port, or
// to a Service's backend on its target port.
func (f *facts) tcpToDest(fl collectors.Flow) bool {
	return fl.Proto == "tcp" && fl.DPort != 0 && f.isProbeDest(netip.AddrPortFrom(fl.Dst, fl.DPort))
}

// rulePortFirewall: ICMP gets through, the port does not, and a rule on the
// way stops it in the way the connects saw (a DROP for timeouts, a REJECT
// for refused or unreachable connects), or the kernel says netfilter freed
// the SYN.
func rulePortFirewall(f *facts) outcome {
	if f.tcp == nil || f.req.To == nil || f.tcpOK() || !f.pingOK() {
		return notApplicable
	}
	_, fails := f.failing()
	port := f.req.To.Port
	b, ok := f.fittingBlock(f.tcpToDest)
	if !ok {
		if nf := f.tcpDrops("NETFILTER_DROP"); len(nf) > 0 {
			return concluded(f.firewallByKernel(PortFirewall, nf[0], fails))
		}
		if why := f.misfits(f.tcpToDest); why != "" {
			return ruledOut("%s", why)
		}
		if read := f.rulesRead(); len(read) > 0 {
			return ruledOut("no rule blocks TCP %d in the rules of %s", port, strings.Join(read, ", "))
		}
		return notApplicable
	}
	ev := []Observation{f.traceLine(b), obs("ping", "echoes to %s get replies", f.req.To.Addr)}
	ev = append(ev, fails...)
	if ls := f.listeners(f.destPort()); ls != "" {
		ev = append(ev, obs("sockets", "%s listens on %s", f.scopeName(collectors.ScopePeer), ls))
	}
	conf := 0.9
	if connectResult(b.tr) == "refused" && b.tr.Verdict == "REJECT" {
		ev = append(ev, obs("tcp", "the rule rejects with %s, so from outside it looks like a closed port", b.tr.RejectWith))
	}
	nf := f.tcpDrops("NETFILTER_DROP")
	if len(nf) > 0 {
		ev = append(ev, f.dropLine(nf[0]))
		conf = 0.95
	}
	if !b.tr.Certain {
		conf = f.uncertainConfidence(b, nf)
	}
	v := PortFirewall
	return concluded(&match{verdict: &v, confidence: conf,
		summary:  fmt.Sprintf("A firewall rule on %s %ss TCP to %s while ICMP passes.", f.scopeName(b.scope), strings.ToLower(b.tr.Verdict), f.to()),
		evidence: ev, next: firewallNext(f, b)})
}

// peerAddr is the address the destination namespace is asked on: the
// Service's backend, else the destination.
func (f *facts) peerAddr() netip.Addr {
	if c := f.req.Cluster; c != nil && c.Service != nil {
		if _, isSvc := f.dest(); isSvc {
			for _, e := range c.Service.ReadyEndpoints() {
				if a, err := netip.ParseAddr(e.IP); err == nil {
					return a
				}
			}
		}
	}
	if f.req.To == nil {
		return netip.Addr{}
	}
	return f.req.To.Addr
}

// accepts reports whether a listener takes connections to dst: bound to dst
// itself, to its family's wildcard, or to :: (dual-stack, as Linux binds it
// by default).
func accepts(l collectors.Listener, dst netip.Addr) bool {
	a, err := netip.ParseAddr(l.Addr)
	if err != nil {
		return false
	}
	switch {
	case a == dst.Unmap():
		return true
	case a == netip.IPv6Unspecified():
		return true
	case a == netip.IPv4Unspecified():
		return dst.Unmap().Is4()
	}
	return false
}

// listeners describes who listens on a port in the destination namespace.
func (f *facts) listeners(port uint16) string {
	so := f.sockets[collectors.ScopePeer]
	if so == nil {
		return ""
	}
	var addrs []string
	for _, l := range so.On("tcp", int(port)) {
		if a, err := netip.ParseAddr(l.Addr); err == nil {
			addrs = append(addrs, netip.AddrPortFrom(a, uint16(l.Port)).String())
		}
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

func ruleLoopback(f *facts) outcome {
	so := f.sockets[collectors.ScopePeer]
	if f.tcp == nil || so == nil || !f.tcpAll("refused") {
		return notApplicable
	}
	port, dst := f.destPort(), f.peerAddr()
	ls := so.On("tcp", int(port))
	if len(ls) == 0 {
		return ruledOut("nothing listens on port %d in %s", port, f.scopeName(collectors.ScopePeer))
	}
	loop := false
	for _, l := range ls {
		if accepts(l, dst) {
			return ruledOut("port %d is open on %s", port, l.Addr)
		}
		loop = loop || l.Loopback()
	}
	if !loop {
		return ruledOut("port %d is bound to %s, not to loopback", port, f.listeners(port))
	}
	return concluded(&match{confidence: 0.95,
		summary: fmt.Sprintf("The application in %s listens on %s only: connections from other pods are refused.", f.scopeName(collectors.ScopePeer), f.listeners(port)),
		evidence: append([]Observation{
			obs("sockets", "port %d in %s is bound to %s only", port, f.scopeName(collectors.ScopePeer), f.listeners(port)),
			obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)),
		}, f.dropLines(f.tcpDrops("NO_SOCKET"), 1)...),
		next: []string{fmt.Sprintf("Make the application listen on the pod's addresses: [::]:%d (both families) or 0.0.0.0:%d, not 127.0.0.1: its bind/listen address setting, e.g. --host 0.0.0.0, server.address, or listen 0.0.0.0:%d.", port, port, port)}})
}

func ruleNotListening(f *facts) outcome {
	if f.tcp == nil || !f.tcpAll("refused") {
		return notApplicable
	}
	so := f.sockets[collectors.ScopePeer]
	port, dst := f.destPort(), f.peerAddr()
	if so == nil {
		// The kernel tells a closed port from a REJECT: no socket found
		// (NO_SOCKET) against freed by netfilter (rulePortFirewall).
		if ns := f.tcpDrops("NO_SOCKET"); len(ns) > 0 {
			d := ns[0]
			return concluded(&match{confidence: 0.85,
				summary:  fmt.Sprintf("Nothing listens on port %d in %s: the kernel found no socket for the probe's SYN (NO_SOCKET) and answered with a reset.", d.DPort, f.dropPlace(d)),
				evidence: []Observation{obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)), f.dropLine(d)},
				next: []string{fmt.Sprintf("Check that the application runs and listens on %d in %s (`%sss -ltnp`), and that it binds the pod's address (of this family), not 127.0.0.1.", d.DPort, f.dropPlace(d), f.nsCommand(d)),
					fmt.Sprintf("If it listens on another port, fix the containerPort/targetPort or the client's port (%d).", port)},
				alternatives: []Considered{
					{PortFirewall.Class, PortFirewall.Cause, "ruled out by the kernel: the SYN was dropped for want of a socket (NO_SOCKET), not by netfilter (NETFILTER_DROP)"},
					{PortLoopback.Class, PortLoopback.Cause, "not ruled out: an application bound to 127.0.0.1 only gets the same NO_SOCKET for the pod's address; the destination's listeners (--peer-netns) tell them apart"},
				}})
		}
		// Without the destination's view or the kernel's word a reset is
		// a closed port or a REJECT --reject-with tcp-reset: say so.
		return concluded(&match{confidence: 0.6,
			summary:  fmt.Sprintf("Connections to %s are refused (TCP reset): most likely nothing listens on port %d, but a firewall rule that rejects with a reset looks the same from here.", f.to(), port),
			evidence: []Observation{obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp))},
			next: []string{fmt.Sprintf("Check that the application runs and listens on %d in the destination pod (`ss -ltn` there).", port),
				"Run again with --peer-netns (the destination pod's namespace) to see its listeners and firewall, which tells the two apart."},
			alternatives: []Considered{{PortFirewall.Class, PortFirewall.Cause, "not ruled out: a REJECT --reject-with tcp-reset rule in the destination gives the same reset; its sockets and rules (--peer-netns) tell them apart"}}})
	}
	ls := so.On("tcp", int(port))
	for _, l := range ls {
		if accepts(l, dst) {
			return ruledOut("port %d has a listener on %s in the destination", port, l.Addr)
		}
	}
	var open []string
	for _, l := range so.Listeners {
		if l.Proto == "tcp" {
			open = append(open, fmt.Sprintf("%s:%d", l.Addr, l.Port))
		}
	}
	summary := fmt.Sprintf("Nothing listens on port %d in %s: connections are refused.", port, f.scopeName(collectors.ScopePeer))
	next := []string{"Check that the application process is running in the pod (`kubectl logs`, restarts, crash loops) and which port it listens on.",
		fmt.Sprintf("If it listens on another port, fix the containerPort/targetPort or the client's port (%d).", port)}
	// Bound to the other family's wildcard only: the port is open, but not
	// for this family.
	for _, l := range ls {
		if !l.Loopback() {
			summary = fmt.Sprintf("Port %d in %s is open on %s only: nothing listens for %s connections, so they are refused.", port, f.scopeName(collectors.ScopePeer), f.listeners(port), map[string]string{"ipv4": "IPv4", "ipv6": "IPv6"}[f.family()])
			next = []string{fmt.Sprintf("Make the application listen on [::]:%d (both families; or its address of this family): Go's net.Listen(\"tcp\", \":%d\"), nginx `listen [::]:%d;`, a server's --host '::'.", port, port, port)}
			break
		}
	}
	return concluded(&match{confidence: 0.95,
		summary: summary,
		evidence: append([]Observation{
			obs("tcp", "connects to %s: %s", f.tcp.Dst, tcpResults(f.tcp)),
			obs("sockets", "no socket takes TCP %d for %s in %s (listening: %s)", port, dst, f.scopeName(collectors.ScopePeer), orNone(open)),
		}, f.dropLines(f.tcpDrops("NO_SOCKET"), 1)...),
		next: next})
}
