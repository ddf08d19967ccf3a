package lab

import (
	"fmt"
	"sort"
	"strings"
)

// Fault is one failure the lab can inject: what it breaks in kernel terms, the
// verdict of the taxonomy it must produce, and how to diagnose it.
type Fault struct {
	Name  string `json:"name"`
	Class string `json:"class"`
	Cause string `json:"cause"`
	// Family is the address family whose traffic the fault is about:
	// "ipv4" or "ipv6", or empty when it breaks both alike (a link, a
	// process, the overlay). A fault of one family may still fail a check
	// of the other in passing, as a too-large pod MTU fails DF pings of
	// both; Breaks says exactly what fails.
	Family string `json:"family,omitempty"`
	// Seed names the seed incident the fault reproduces, if any.
	Seed    string `json:"seed,omitempty"`
	Summary string `json:"summary"`
	// Breaks lists the lab checks that fail while the fault is active; every
	// other check must pass. Partial checks fail for some attempts only.
	Breaks  []string `json:"breaks"`
	Partial []string `json:"partial,omitempty"`
	// Diagnose is the `netdiag diagnose --lab` arguments that reproduce an
	// engineer's question about this fault: from which pod, to what.
	Diagnose []string `json:"diagnose"`

	apply func(d *Desired)
}

// Uninjectable lists taxonomy causes that have no fault, and why.
var Uninjectable = []struct {
	Class, Cause, Reason string
}{
	{"cni-anomaly", "podcidr-exhausted", "needs a kubelet and an IPAM plugin: the lab has no pod creation to fail"},
	{"inconclusive", "target-not-found", "not a network fault: netdiag reports it when the pod or namespace does not exist"},
	{"inconclusive", "agent-unreachable", "not a network fault: reported when a node's agent does not answer (agent issue)"},
	{"inconclusive", "insufficient-evidence", "not a fault: the verdict when the evidence cannot single out a cause"},
}

const (
	seedWrongSource = "new node cannot reach a ClusterIP; NIC has a static and a DHCP address, VXLAN packets leave with the wrong source"
	seedMTU         = "external client times out on large POSTs; node NIC 1500 vs tunnel 1440"
	seedKubeProxy   = "pods on autoscaled nodes time out resolving names; kube-proxy evicted on those nodes"
	seedMaster      = "master cannot reach node pods: host firewall rejects ICMP, flannel uses the wrong interface, UDP 8472 closed"
	seedDualDefault = "steady 50% loss between two hosts with two default routes on different NICs"
	seedLoopback    = "app listens on 127.0.0.1 only"
)

// Names of the lab's checks (see checks.go).
const (
	ckWebPod     = "client-web-pod"
	ckWebPing    = "client-web-ping"
	ckWebLarge   = "client-web-large"
	ckWebPost    = "client-web-post"
	ckWebSvc     = "client-web-svc"
	ckAPISvc     = "client-api-svc"
	ckDNSCluster = "client-dns-cluster"
	ckDNSOutside = "client-dns-outside"
	ckClientExt  = "client-ext"
	ckWebClient  = "web-client-ping"
	ckWebExt     = "web-ext"
	ckNodeAExt   = "node-a-ext"
	ckNodeBWeb   = "node-b-web"
	ckNodeBPingA = "node-b-node-a-ping"
	ckDNSAAAA    = "client-dns-aaaa"

	ckWebPod6    = "client-web-pod-v6"
	ckWebPing6   = "client-web-ping-v6"
	ckWebLarge6  = "client-web-large-v6"
	ckWebPost6   = "client-web-post-v6"
	ckClientExt6 = "client-ext-v6"
	ckWebClient6 = "web-client-ping-v6"
	ckNodeBWeb6  = "node-b-web-v6"
)

// Address families of faults and checks.
const (
	familyV4 = "ipv4"
	familyV6 = "ipv6"
)

// crossNode is every check whose packets cross the overlay between the nodes,
// in either family: IPv6 pod traffic rides the same VXLAN device.
var crossNode = []string{ckWebPod, ckWebPing, ckWebLarge, ckWebPost, ckWebSvc, ckWebClient, ckNodeBWeb,
	ckWebPod6, ckWebPing6, ckWebLarge6, ckWebPost6, ckWebClient6, ckNodeBWeb6}

var (
	toWebPod  = []string{ckWebPod, ckWebPing, ckWebLarge, ckWebPost, ckWebSvc}
	toWebPod6 = []string{ckWebPod6, ckWebPing6, ckWebLarge6, ckWebPost6}
	// toWebPort are the checks that open a TCP connection to default/web's
	// port 8080, in IPv4 and in IPv6.
	toWebPort  = []string{ckWebPod, ckWebPost, ckWebSvc, ckNodeBWeb}
	toWebPort6 = []string{ckWebPod6, ckWebPost6, ckNodeBWeb6}
	// outsideDNS are the lookups that CoreDNS forwards upstream.
	outsideDNS = []string{ckDNSOutside, ckDNSAAAA}
)

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var (
	fromClientToWeb = []string{"pod", "default/client", "--to", "pod/default/web:8080"}
	fromClientToSvc = []string{"pod", "default/client", "--to", "svc/default/web:80"}
)

// Faults is the catalogue, in the order `netdiag lab faults` prints it.
var Faults = []*Fault{
	{
		Name: "firewall-dst", Class: "network-unreachable", Cause: "firewall", Family: familyV4,
		Summary:  "default/web's own firewall drops every new inbound connection (a deny-all ingress policy)",
		Breaks:   join(toWebPod, []string{ckNodeBWeb}),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.pod("default/web").AddRule("filter", `-A INPUT -m conntrack --ctstate NEW -m comment --comment "default/deny-all-ingress" -j DROP`)
		},
	},
	{
		Name: "firewall-dst-v6", Class: "network-unreachable", Cause: "firewall", Family: familyV6,
		Summary:  "default/web's ip6tables drops every new inbound IPv6 connection (a deny-all ingress policy written for IPv6 only); IPv4 is untouched",
		Breaks:   join(toWebPod6, []string{ckNodeBWeb6}),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			// Neighbour discovery is untracked by conntrack, so it still
			// passes: the pod stays resolvable, as behind a real policy.
			d.pod("default/web").AddRule6("filter", `-A INPUT -m conntrack --ctstate NEW -m comment --comment "default/deny-all-ingress" -j DROP`)
		},
	},
	{
		Name: "firewall-node", Class: "network-unreachable", Cause: "firewall", Family: familyV4,
		Summary:  "an nftables forward rule on node-b drops every new connection to default/web's pod IP",
		Breaks:   toWebPod,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			web := d.Lab.mustPod("default/web")
			d.node("node-b").Filter.Nft = fmt.Sprintf(`table inet netdiag_policy {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip daddr %s ct state new counter drop comment "deny new connections to default/web"
	}
}
`, web.IP)
		},
	},
	{
		Name: "route-missing", Class: "network-unreachable", Cause: "route",
		Summary: "default/client has lost its default routes, IPv4 and IPv6: nothing outside its own subnets is reachable",
		Breaks: []string{ckWebPod, ckWebPing, ckWebLarge, ckWebPost, ckWebSvc, ckAPISvc, ckDNSCluster, ckDNSOutside, ckDNSAAAA, ckClientExt, ckWebClient,
			ckWebPod6, ckWebPing6, ckWebLarge6, ckWebPost6, ckClientExt6, ckWebClient6},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			c := d.pod("default/client")
			c.Routes, c.Routes6 = nil, nil
		},
	},
	{
		Name: "dual-default-route", Class: "network-unreachable", Cause: "route", Family: familyV4, Seed: seedDualDefault,
		Summary:  "node-a has two default routes on different NICs (eth0 and the management eth1); flows hashed onto eth1 are lost",
		Partial:  []string{ckWebExt, ckNodeAExt},
		Diagnose: []string{"node", "node-a", "--to", "host/ext:80"},
		apply: func(d *Desired) {
			c := d.node("node-a")
			c.Sysctls["ipv4.fib_multipath_hash_policy"] = "1"
			r := c.Route("default")
			r.Via, r.Dev = "", ""
			r.Nexthops = []Nexthop{{Via: routerUL, Dev: "eth0"}, {Via: mgmtAIP, Dev: "eth1"}}
		},
	},
	{
		Name: "rp-filter", Class: "network-unreachable", Cause: "route", Family: familyV4,
		Summary:  "node-b routes node-a's PodCIDR out eth0 (host-gw style) while node-a answers over flannel.1; node-a's strict rp_filter drops the asymmetric packets",
		Breaks:   join(toWebPod, []string{ckWebClient}),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			a := d.Lab.mustNode("node-a")
			r := d.node("node-b").Route(a.PodCIDR)
			r.Via, r.Dev, r.Onlink = a.InternalIP, "eth0", false
			d.node("node-a").Sysctls["ipv4.conf.all.rp_filter"] = "1"
		},
	},
	{
		Name: "overload", Class: "network-unreachable", Cause: "overload",
		Summary: "node-b's NIC queue is saturated: a 64 kbit/s token bucket on eth0 and a steady UDP flood keep it full",
		Breaks: []string{ckWebPod, ckWebPing, ckWebLarge, ckWebPost, ckWebSvc, ckAPISvc, ckDNSOutside, ckDNSAAAA, ckClientExt, ckWebClient, ckNodeBWeb, ckNodeBPingA,
			ckWebPod6, ckWebPing6, ckWebLarge6, ckWebPost6, ckClientExt6, ckWebClient6, ckNodeBWeb6},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			b := d.Lab.mustNode("node-b")
			// 2.5 s of queue: a probe that gets in still misses its deadline.
			d.node("node-b").Qdiscs["eth0"] = QdiscConfig{RateBytesPerSec: 8000, BufferBytes: 2000, LimitBytes: 20000}
			d.Procs["flood"] = &ProcSpec{Name: "flood", Netns: b.Netns, Helper: "flood",
				Args: []string{"--to", hostPort(extIP, 9), "--pps", "2000", "--size", "1000"}, Ready: "log:flooding"}
		},
	},
	{
		Name: "link-down", Class: "network-unreachable", Cause: "link-down",
		Summary:  "default/web's host-side veth on node-a is down",
		Breaks:   join(toWebPod, []string{ckWebClient, ckWebExt, ckNodeBWeb}, toWebPod6, []string{ckWebClient6, ckNodeBWeb6}),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			web := d.Lab.mustPod("default/web")
			d.node(web.Node).Link(web.HostVeth).Down = true
		},
	},
	{
		Name: "port-firewall", Class: "port-unreachable", Cause: "firewall", Family: familyV4,
		Summary:  "default/web's firewall drops TCP to port 8080 (ping still works)",
		Breaks:   toWebPort,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.pod("default/web").AddRule("filter", `-A INPUT -p tcp -m tcp --dport 8080 -m comment --comment "block app port" -j DROP`)
		},
	},
	{
		Name: "port-reject", Class: "port-unreachable", Cause: "firewall", Family: familyV4,
		Summary:  "default/web's firewall rejects TCP to port 8080 with a TCP reset (looks like a closed port from outside)",
		Breaks:   toWebPort,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.pod("default/web").AddRule("filter", `-A INPUT -p tcp -m tcp --dport 8080 -m comment --comment "block app port" -j REJECT --reject-with tcp-reset`)
		},
	},
	{
		Name: "port-reject-v6", Class: "port-unreachable", Cause: "firewall", Family: familyV6,
		Summary:  "default/web's ip6tables rejects TCP to port 8080 with a TCP reset: IPv6 connections look refused, IPv4 ones succeed",
		Breaks:   toWebPort6,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.pod("default/web").AddRule6("filter", `-A INPUT -p tcp -m tcp --dport 8080 -m comment --comment "block app port" -j REJECT --reject-with tcp-reset`)
		},
	},
	{
		Name: "not-listening", Class: "port-unreachable", Cause: "not-listening",
		Summary:  "the application in default/web is not running: nothing listens on 8080",
		Breaks:   join(toWebPort, toWebPort6),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			delete(d.Procs, "web")
		},
	},
	{
		Name: "not-listening-v6", Class: "port-unreachable", Cause: "not-listening", Family: familyV6,
		Summary:  "the application in default/web listens on 0.0.0.0:8080, IPv4 only: IPv6 connections to 8080 are refused",
		Breaks:   toWebPort6,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.Procs["web"].Args = []string{"--listen", "0.0.0.0:8080", "--name", "default/web"}
		},
	},
	{
		Name: "loopback-only", Class: "port-unreachable", Cause: "loopback-only", Seed: seedLoopback,
		Summary:  "the application in default/web listens on 127.0.0.1:8080 only",
		Breaks:   join(toWebPort, toWebPort6),
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.Procs["web"].Args = []string{"--listen", "127.0.0.1:8080", "--name", "default/web"}
		},
	},
	{
		Name: "port-exhaustion", Class: "port-unreachable", Cause: "port-exhaustion", Family: familyV4,
		Summary:  "default/client's ephemeral port range is eight ports wide and every one holds a connection to default/web:8080",
		Breaks:   []string{ckWebPod, ckWebPost},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			client := d.Lab.mustPod("default/client")
			web := d.Lab.mustPod("default/web")
			// Eight, not one: other destinations and UDP (DNS) still find a port,
			// as on a real node where one busy destination exhausts its tuples.
			d.pod("default/client").Sysctls["ipv4.ip_local_port_range"] = "61000\t61007"
			d.Procs["hold"] = &ProcSpec{Name: "hold", Netns: client.Netns, Helper: "hold",
				Args: []string{"--to", hostPort(web.IP, 8080), "--count", "8"}, Ready: "log:holding"}
		},
	},
	{
		Name: "no-endpoints", Class: "port-unreachable", Cause: "no-endpoints", Family: familyV4,
		Summary:  "default/web fails its readiness probe: Service default/web has no ready endpoints and kube-proxy rejects its ClusterIP",
		Breaks:   []string{ckWebSvc},
		Diagnose: fromClientToSvc,
		apply: func(d *Desired) {
			d.NotReady["default/web"] = true
		},
	},
	{
		Name: "dns-config", Class: "dns-failure", Cause: "pod-dns-config", Family: familyV4,
		Summary:  "default/client's resolv.conf points at the outside DNS server with no cluster search domains (dnsPolicy: Default)",
		Breaks:   []string{ckDNSCluster},
		Diagnose: []string{"pod", "default/client", "--dns", "web.default.svc.cluster.local"},
		apply: func(d *Desired) {
			d.Resolv[d.Lab.mustPod("default/client").ResolvConf] = fmt.Sprintf("nameserver %s\n", extIP)
		},
	},
	{
		Name: "dns-down", Class: "dns-failure", Cause: "dns-service-down", Family: familyV4,
		Summary:  "CoreDNS in kube-system/coredns is not running: the DNS Service answers with port unreachable",
		Breaks:   join([]string{ckDNSCluster}, outsideDNS),
		Diagnose: []string{"pod", "default/client", "--dns", "web.default.svc.cluster.local"},
		apply: func(d *Desired) {
			delete(d.Procs, "coredns")
		},
	},
	{
		Name: "dns-path-broken", Class: "dns-failure", Cause: "dns-path-broken", Family: familyV4,
		Summary:  "node-b has no kube-proxy rules for kube-system/kube-dns: queries to the DNS ClusterIP go nowhere while CoreDNS answers directly",
		Breaks:   join([]string{ckDNSCluster}, outsideDNS),
		Diagnose: []string{"pod", "default/client", "--dns", "web.default.svc.cluster.local"},
		apply: func(d *Desired) {
			d.skipServiceRules("node-b", "kube-system/kube-dns")
		},
	},
	{
		Name: "upstream-dns-down", Class: "dns-failure", Cause: "upstream-failure", Family: familyV4,
		Summary:  "the upstream DNS server on the outside host is down: cluster names resolve, outside names get SERVFAIL",
		Breaks:   outsideDNS,
		Diagnose: []string{"pod", "default/client", "--dns", "example.com"},
		apply: func(d *Desired) {
			delete(d.Procs, "upstream-dns")
		},
	},
	{
		Name: "mtu-mismatch", Class: "large-packet-loss", Cause: "mtu-mismatch",
		Summary:  "node-b's CNI MTU is 1500 (cni0, pod veths) over the 1450-byte VXLAN: full-size DF packets are refused with fragmentation-needed (IPv4) or packet-too-big (IPv6)",
		Breaks:   []string{ckWebLarge, ckWebLarge6},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.setPodMTU("node-b", nicMTU)
		},
	},
	{
		Name: "mtu-blackhole", Class: "large-packet-loss", Cause: "mtu-mismatch", Family: familyV4, Seed: seedMTU,
		Summary:  "every pod and cni0 has MTU 1500 over the 1450-byte VXLAN, and the nodes' firewall drops ICMP fragmentation-needed: large IPv4 segments vanish (PMTU black hole); IPv6 still gets packet-too-big",
		Breaks:   []string{ckWebLarge, ckWebPost, ckWebLarge6},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			for _, n := range d.Lab.Nodes {
				d.setPodMTU(n.Name, nicMTU)
				d.node(n.Name).AddRule("filter", `-A OUTPUT -p icmp -m icmp --icmp-type 3/4 -m comment --comment "security group: ICMP not allowed" -j DROP`)
			}
		},
	},
	{
		Name: "mtu-blackhole-v6", Class: "large-packet-loss", Cause: "mtu-mismatch", Family: familyV6,
		Summary:  "every pod and cni0 has MTU 1500 over the 1450-byte VXLAN, and the nodes' ip6tables drop the ICMPv6 packet-too-big they send: large IPv6 segments vanish (PMTU black hole); IPv4 still gets fragmentation-needed",
		Breaks:   []string{ckWebLarge, ckWebLarge6, ckWebPost6},
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			for _, n := range d.Lab.Nodes {
				d.setPodMTU(n.Name, nicMTU)
				d.node(n.Name).AddRule6("filter", `-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type packet-too-big -m comment --comment "security group: ICMP not allowed" -j DROP`)
			}
		},
	},
	{
		Name: "kube-proxy-down", Class: "cni-anomaly", Cause: "kube-proxy-down", Family: familyV4,
		Summary:  "kube-proxy is not running on node-b: no KUBE-SERVICES chain, no Service reachable from its pods",
		Breaks:   join([]string{ckWebSvc, ckAPISvc, ckDNSCluster}, outsideDNS),
		Diagnose: fromClientToSvc,
		apply: func(d *Desired) {
			d.KubeProxy["node-b"] = false
		},
	},
	{
		Name: "kube-proxy-evicted", Class: "dns-failure", Cause: "dns-path-broken", Family: familyV4, Seed: seedKubeProxy,
		Summary:  "kube-proxy was evicted from node-b (no priorityClass): its pods time out resolving names through the DNS Service",
		Breaks:   join([]string{ckWebSvc, ckAPISvc, ckDNSCluster}, outsideDNS),
		Diagnose: []string{"pod", "default/client", "--dns", "example.com"},
		apply: func(d *Desired) {
			d.KubeProxy["node-b"] = false
		},
	},
	{
		Name: "service-rules-missing", Class: "cni-anomaly", Cause: "service-rules-missing", Family: familyV4,
		Summary:  "node-b has no kube-proxy rules for Service default/web although it has a ready endpoint",
		Breaks:   []string{ckWebSvc},
		Diagnose: fromClientToSvc,
		apply: func(d *Desired) {
			d.skipServiceRules("node-b", "default/web")
		},
	},
	{
		Name: "overlay-wrong-source", Class: "cni-anomaly", Cause: "overlay-misconfigured", Seed: seedWrongSource,
		Summary:  "node-b's NIC has its static address and a stray DHCP lease (198.18.2.12); flannel.1 took the lease as its VTEP address, which node-a cannot route back to",
		Breaks:   crossNode,
		Diagnose: fromClientToSvc,
		apply: func(d *Desired) {
			b := d.Lab.mustNode("node-b")
			nb := d.node("node-b")
			nb.Link("eth0").Addrs = append(nb.Link("eth0").Addrs, dhcpBIP+"/24")
			nb.Link(b.Overlay.Device).VXLAN.Local = dhcpBIP
			d.setPeerVTEP("node-a", b, dhcpBIP)
		},
	},
	{
		Name: "overlay-wrong-iface", Class: "cni-anomaly", Cause: "overlay-misconfigured",
		Summary:  "flannel on node-b picked the management NIC eth1 (198.18.1.12) for VXLAN; the other node cannot reach that address",
		Breaks:   crossNode,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			b := d.Lab.mustNode("node-b")
			vx := d.node("node-b").Link(b.Overlay.Device).VXLAN
			vx.Local, vx.Dev = nodeBMgmtIP, "eth1"
			d.setPeerVTEP("node-a", b, nodeBMgmtIP)
		},
	},
	{
		Name: "vxlan-port-blocked", Class: "cni-anomaly", Cause: "overlay-misconfigured",
		Summary:  "node-a's host firewall (security group) drops UDP 8472, the VXLAN port",
		Breaks:   crossNode,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.node("node-a").AddRule("filter", `-A INPUT -p udp -m udp --dport 8472 -m comment --comment "security group" -j DROP`)
		},
	},
	{
		Name: "fdb-missing", Class: "cni-anomaly", Cause: "overlay-misconfigured",
		Summary:  "node-b's flannel.1 has no forwarding entry for node-a's VTEP: frames for node-a's pods have nowhere to go",
		Breaks:   crossNode,
		Diagnose: fromClientToWeb,
		apply: func(d *Desired) {
			d.node("node-b").FDB = nil
		},
	},
	{
		Name: "master-unreachable", Class: "cni-anomaly", Cause: "overlay-misconfigured", Seed: seedMaster,
		Summary:  "node-b (the master) rejects ICMP in INPUT and FORWARD, runs flannel on its management NIC, and its security group closes UDP 8472",
		Breaks:   join(crossNode, []string{ckNodeBPingA}),
		Diagnose: []string{"node", "node-b", "--to", "pod/default/web:8080"},
		apply: func(d *Desired) {
			b := d.Lab.mustNode("node-b")
			nb := d.node("node-b")
			nb.AddRule("filter", `-A INPUT -p icmp -j REJECT --reject-with icmp-host-prohibited`)
			nb.AddRule("filter", `-A FORWARD -p icmp -j REJECT --reject-with icmp-host-prohibited`)
			nb.AddRule("filter", `-A INPUT -p udp -m udp --dport 8472 -m comment --comment "security group" -j DROP`)
			nb.AddRule("filter", `-A OUTPUT -p udp -m udp --dport 8472 -m comment --comment "security group" -j DROP`)
			vx := nb.Link(b.Overlay.Device).VXLAN
			vx.Local, vx.Dev = nodeBMgmtIP, "eth1"
			d.setPeerVTEP("node-a", b, nodeBMgmtIP)
		},
	},
}

// FaultByName finds a fault; the error lists the valid names.
func FaultByName(name string) (*Fault, error) {
	for _, f := range Faults {
		if f.Name == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("unknown fault %q; `netdiag lab faults` lists them: %s", name, strings.Join(FaultNames(), ", "))
}

// FaultNames lists the names of all faults.
func FaultNames() []string {
	names := make([]string, len(Faults))
	for i, f := range Faults {
		names[i] = f.Name
	}
	return names
}

// desiredFor is the baseline with the given faults applied.
func desiredFor(l *Lab, faults []string) (*Desired, error) {
	d := baseline(l)
	for _, name := range faults {
		f, err := FaultByName(name)
		if err != nil {
			return nil, err
		}
		f.apply(d)
	}
	d.finish()
	return d, nil
}

func (d *Desired) node(name string) *NSConfig { return d.NS[d.Lab.mustNode(name).Netns] }
func (d *Desired) pod(key string) *NSConfig   { return d.NS[d.Lab.mustPod(key).Netns] }

func (l *Lab) mustNode(name string) *Node {
	n, err := l.Node(name)
	if err != nil {
		panic(err) // the catalogue names only nodes the topology has
	}
	return n
}

func (l *Lab) mustPod(key string) *Pod {
	p, err := l.Pod(key)
	if err != nil {
		panic(err)
	}
	return p
}

func (d *Desired) skipServiceRules(node, svc string) {
	if d.NoServiceRules[node] == nil {
		d.NoServiceRules[node] = map[string]bool{}
	}
	d.NoServiceRules[node][svc] = true
}

// setPodMTU is a CNI configured with the wrong MTU on a node: cni0, the pods'
// eth0 and their host-side veths.
func (d *Desired) setPodMTU(node string, mtu int) {
	n := d.Lab.mustNode(node)
	d.node(node).Link(n.Bridge).MTU = mtu
	for _, p := range d.Lab.Pods {
		if p.Node == node {
			d.node(node).Link(p.HostVeth).MTU = mtu
			d.pod(p.Key()).Link(p.Interface).MTU = mtu
		}
	}
}

// setPeerVTEP is what flannel on another node does when a node publishes a new
// public IP: its FDB entry for that node's VTEP now points there.
func (d *Desired) setPeerVTEP(on string, peer *Node, dst string) {
	c := d.node(on)
	for i := range c.FDB {
		if c.FDB[i].MAC == peer.Overlay.MAC {
			c.FDB[i].Dst = dst
		}
	}
}

// FaultsByVerdict groups fault names by "class/cause".
func FaultsByVerdict() map[string][]string {
	out := map[string][]string{}
	for _, f := range Faults {
		k := f.Class + "/" + f.Cause
		out[k] = append(out[k], f.Name)
	}
	for k := range out {
		sort.Strings(out[k])
	}
	return out
}
