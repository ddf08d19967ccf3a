package lab

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Desired is the complete state the lab should be in: the healthy baseline,
// changed by the active faults. Apply makes the kernel match it, so building,
// injecting a fault and healing are one operation.
type Desired struct {
	Lab   *Lab
	NS    map[string]*NSConfig
	Procs map[string]*ProcSpec
	// Resolv maps a resolv.conf path to its content.
	Resolv map[string]string
	// Cluster-level knobs, rendered into the nodes' iptables.
	KubeProxy      map[string]bool            // node -> kube-proxy rules present
	NoServiceRules map[string]map[string]bool // node -> Service keys kube-proxy left out
	NotReady       map[string]bool            // pod key -> failing readiness
	nsOrder        []string
}

// NSConfig is the state of one namespace. Addresses and neighbours of both
// families share one list (the address says its family); routes do not,
// because "default" means one route per family.
type NSConfig struct {
	Name    string
	Links   []*LinkConfig
	Sysctls map[string]string
	Routes  []RouteConfig // IPv4
	Routes6 []RouteConfig // IPv6
	Neighs  []NeighConfig
	FDB     []FDBConfig
	Qdiscs  map[string]QdiscConfig // link -> root qdisc
	Filter  Netfilter
}

// LinkConfig is one interface the lab manages.
type LinkConfig struct {
	Name     string
	Kind     string // "veth", "bridge", "vxlan"
	PeerNS   string // veth: namespace of the peer
	PeerName string // veth: name of the peer
	Master   string
	MTU      int
	Down     bool
	Addrs    []string
	MAC      string
	VXLAN    *VXLANConfig
}

// VXLANConfig is how flannel configures its VXLAN device.
type VXLANConfig struct {
	VNI   int
	Local string
	Dev   string
	Port  int
}

// RouteConfig is a route in the main table. With Nexthops it is multipath.
// Its family is that of the list holding it (NSConfig.Routes or Routes6).
type RouteConfig struct {
	Dst       string // CIDR or "default"
	Via       string
	Dev       string
	Onlink    bool
	Blackhole bool
	Nexthops  []Nexthop
}

// Nexthop is one path of a multipath route.
type Nexthop struct {
	Via string
	Dev string
}

// NeighConfig is a permanent neighbour entry (ARP for IPv4, NDP for IPv6).
type NeighConfig struct {
	Dev, IP, MAC string
}

// FDBConfig is a permanent bridge forwarding entry on a VXLAN device: where to
// send frames for a remote VTEP's MAC.
type FDBConfig struct {
	Dev, MAC, Dst string
}

// QdiscConfig is a token-bucket root qdisc (the lab's saturated NIC queue).
type QdiscConfig struct {
	RateBytesPerSec uint64
	BufferBytes     uint32
	LimitBytes      uint32
}

// Netfilter is a namespace's firewall: kube-proxy/flannel rules for a node,
// plus extra iptables and ip6tables lines per table and an extra nftables
// ruleset.
type Netfilter struct {
	Node   string              // render kube-proxy and flannel rules of this node
	Extra  map[string][]string // table -> iptables-restore lines ("-A INPUT ...")
	Extra6 map[string][]string // table -> ip6tables-restore lines
	Nft    string              // nft -f input applied after iptables
}

// AddRule appends an iptables rule (in iptables-restore syntax, without the
// table) to a table of a namespace.
func (c *NSConfig) AddRule(table, rule string) {
	if c.Filter.Extra == nil {
		c.Filter.Extra = map[string][]string{}
	}
	c.Filter.Extra[table] = append(c.Filter.Extra[table], rule)
}

// AddRule6 is AddRule for ip6tables.
func (c *NSConfig) AddRule6(table, rule string) {
	if c.Filter.Extra6 == nil {
		c.Filter.Extra6 = map[string][]string{}
	}
	c.Filter.Extra6[table] = append(c.Filter.Extra6[table], rule)
}

// Link returns the named link config, or nil.
func (c *NSConfig) Link(name string) *LinkConfig {
	for _, l := range c.Links {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Route returns the IPv4 route for a destination, or nil.
func (c *NSConfig) Route(dst string) *RouteConfig { return findRoute(c.Routes, dst) }

// Route6 returns the IPv6 route for a destination, or nil.
func (c *NSConfig) Route6(dst string) *RouteConfig { return findRoute(c.Routes6, dst) }

func findRoute(routes []RouteConfig, dst string) *RouteConfig {
	for i := range routes {
		if routes[i].Dst == dst {
			return &routes[i]
		}
	}
	return nil
}

// ProcSpec is a server or load generator the lab runs in a namespace.
type ProcSpec struct {
	Name  string
	Netns string
	// Helper is the helper role ("http", "hold", "flood"); empty for an
	// external program such as CoreDNS.
	Helper string
	Args   []string
	// Ready says how to know the process is serving: "tcp:ADDR", "dns:ADDR",
	// "log:TEXT" (TEXT appears in its output), or "" for none.
	Ready string
}

// baseline returns the healthy lab.
func baseline(l *Lab) *Desired {
	d := &Desired{
		Lab:            l,
		NS:             map[string]*NSConfig{},
		Procs:          map[string]*ProcSpec{},
		Resolv:         map[string]string{},
		KubeProxy:      map[string]bool{},
		NoServiceRules: map[string]map[string]bool{},
		NotReady:       map[string]bool{},
	}
	add := func(name string) *NSConfig {
		c := &NSConfig{Name: name, Sysctls: map[string]string{
			"ipv4.conf.all.rp_filter":     "0",
			"ipv4.conf.default.rp_filter": "0",
			"ipv4.ip_forward":             "0",
			// IPv6 is on, but quiet: addresses are usable at once (no
			// DAD), nothing solicits or accepts router advertisements
			// (addresses and routes are static, as a CNI sets them), and
			// the MLD reports the kernel always sends when it joins a
			// group go out within milliseconds of a link coming up, so
			// captures taken later do not show them.
			"ipv6.conf.all.disable_ipv6":                          "0",
			"ipv6.conf.default.disable_ipv6":                      "0",
			"ipv6.conf.all.accept_dad":                            "0",
			"ipv6.conf.default.accept_dad":                        "0",
			"ipv6.conf.all.accept_ra":                             "0",
			"ipv6.conf.default.accept_ra":                         "0",
			"ipv6.conf.all.router_solicitations":                  "0",
			"ipv6.conf.default.router_solicitations":              "0",
			"ipv6.conf.default.mldv1_unsolicited_report_interval": "1",
			"ipv6.conf.default.mldv2_unsolicited_report_interval": "1",
			"ipv6.conf.all.forwarding":                            "0",
		}, Qdiscs: map[string]QdiscConfig{}}
		d.NS[name] = c
		d.nsOrder = append(d.nsOrder, name)
		return c
	}
	router, _ := l.Host("router")
	ext, _ := l.Host("ext")
	mgmt, _ := l.Host("mgmt")
	nodeA, _ := l.Node("node-a")
	nodeB, _ := l.Node("node-b")

	// The router: a bridge for the node network (the "VPC" underlay) and a
	// routed link to the outside network. It knows nothing of pod addresses,
	// so pod traffic leaving the cluster must be masqueraded by the nodes.
	r := add(router.Netns)
	r.Sysctls["ipv4.ip_forward"] = "1"
	r.Sysctls["ipv6.conf.all.forwarding"] = "1"
	r.Links = append(r.Links, &LinkConfig{Name: "ul0", Kind: "bridge", MTU: nicMTU, Addrs: []string{routerUL + "/24", routerUL6 + "/64"}})
	for _, n := range l.Nodes {
		r.Links = append(r.Links, &LinkConfig{Name: "ul-" + n.Name, Kind: "veth", PeerNS: n.Netns, PeerName: n.NIC, Master: "ul0", MTU: nicMTU})
	}
	r.Links = append(r.Links, &LinkConfig{Name: "ext0", Kind: "veth", PeerNS: ext.Netns, PeerName: "eth0", MTU: nicMTU, Addrs: []string{routerOut + "/24", routerOut6 + "/64"}})
	// Like a cloud VPC router, it silently discards what it cannot route
	// (no ICMP unreachable): lost packets time out, as they do in the seeds.
	r.Routes = []RouteConfig{{Dst: "default", Blackhole: true}}
	r.Routes6 = []RouteConfig{{Dst: "default", Blackhole: true}}

	// The management host: one link per node, no forwarding. Traffic that a
	// node sends its way for anything but the host itself is dropped, as a
	// deployment network that does not route to the outside would.
	m := add(mgmt.Netns)
	m.Links = append(m.Links,
		&LinkConfig{Name: "to-node-a", Kind: "veth", PeerNS: nodeA.Netns, PeerName: "eth1", MTU: nicMTU, Addrs: []string{mgmtAIP + "/24"}},
		&LinkConfig{Name: "to-node-b", Kind: "veth", PeerNS: nodeB.Netns, PeerName: "eth1", MTU: nicMTU, Addrs: []string{mgmtBIP + "/24"}},
	)

	e := add(ext.Netns)
	e.Links = append(e.Links, &LinkConfig{Name: "eth0", Kind: "veth", PeerNS: router.Netns, PeerName: "ext0", MTU: nicMTU, Addrs: []string{extIP + "/24", extIP6 + "/64"}})
	e.Routes = []RouteConfig{{Dst: "default", Via: routerOut, Dev: "eth0"}}
	e.Routes6 = []RouteConfig{{Dst: "default", Via: routerOut6, Dev: "eth0"}}

	for _, n := range l.Nodes {
		c := add(n.Netns)
		// A node resolves through the site's resolver (here the outside
		// host's DNS server), as a real node does, not through this
		// machine's /etc/resolv.conf, which the lab cannot reach.
		d.Resolv[filepath.Join("/etc/netns", n.Netns, "resolv.conf")] = fmt.Sprintf("nameserver %s\n", extIP)
		c.Sysctls["ipv4.ip_forward"] = "1"
		c.Sysctls["ipv6.conf.all.forwarding"] = "1"
		c.Sysctls["ipv4.fib_multipath_hash_policy"] = "0"
		c.Sysctls["bridge.bridge-nf-call-iptables"] = "1"
		c.Sysctls["bridge.bridge-nf-call-ip6tables"] = "1"
		c.Links = append(c.Links, &LinkConfig{Name: n.NIC, Kind: "veth", PeerNS: router.Netns, PeerName: "ul-" + n.Name, MTU: nicMTU,
			Addrs: []string{n.InternalIP + "/24", n.InternalIP6 + "/64"}})
		for _, x := range n.ExtraNICs {
			c.Links = append(c.Links, &LinkConfig{Name: x.Name, Kind: "veth", PeerNS: mgmt.Netns, PeerName: "to-" + n.Name, MTU: nicMTU, Addrs: []string{x.Address}})
		}
		c.Routes = append(c.Routes, RouteConfig{Dst: "default", Via: routerUL, Dev: n.NIC})
		c.Routes6 = append(c.Routes6, RouteConfig{Dst: "default", Via: routerUL6, Dev: n.NIC})
		if l.Shape == ShapeCluster {
			// The rest of a node is the cluster's to make.
			continue
		}
		c.Filter.Node = n.Name
		d.KubeProxy[n.Name] = true
		c.Links = append(c.Links,
			// A fixed MAC, as the CNI bridge plugin gives cni0: a bridge
			// without one takes its lowest port's, which changes as pods
			// come and go, and pods that learnt the gateway's MAC lose it.
			&LinkConfig{Name: n.Bridge, Kind: "bridge", MTU: vxlanMTU, MAC: bridgeMAC(n.Overlay.MAC), Addrs: []string{n.BridgeIP + "/24", n.BridgeIP6 + "/64"}},
			// One VXLAN device for both families: IPv6 pod frames ride the
			// IPv4 underlay, so a v6 packet meets the same 1450-byte MTU.
			&LinkConfig{Name: n.Overlay.Device, Kind: "vxlan", MTU: n.Overlay.MTU, MAC: n.Overlay.MAC,
				Addrs: []string{n.Overlay.Address + "/32", n.Overlay.Address6 + "/128"},
				VXLAN: &VXLANConfig{VNI: n.Overlay.VNI, Local: n.Overlay.Local, Dev: n.NIC, Port: n.Overlay.Port}},
		)
		for _, peer := range l.Nodes {
			if peer.Name == n.Name {
				continue
			}
			// flannel's programming, once per family: a route onlink via
			// the peer's VTEP address, a permanent neighbour entry giving
			// that address the peer's VTEP MAC (so no ARP or NDP crosses
			// the overlay), and one FDB entry sending that MAC to the
			// peer's InternalIP.
			c.Routes = append(c.Routes, RouteConfig{Dst: peer.PodCIDR, Via: peer.Overlay.Address, Dev: n.Overlay.Device, Onlink: true})
			c.Routes6 = append(c.Routes6, RouteConfig{Dst: peer.PodCIDR6, Via: peer.Overlay.Address6, Dev: n.Overlay.Device, Onlink: true})
			c.Neighs = append(c.Neighs,
				NeighConfig{Dev: n.Overlay.Device, IP: peer.Overlay.Address, MAC: peer.Overlay.MAC},
				NeighConfig{Dev: n.Overlay.Device, IP: peer.Overlay.Address6, MAC: peer.Overlay.MAC})
			c.FDB = append(c.FDB, FDBConfig{Dev: n.Overlay.Device, MAC: peer.Overlay.MAC, Dst: peer.InternalIP})
		}
		for _, p := range l.Pods {
			if p.Node == n.Name {
				c.Links = append(c.Links, &LinkConfig{Name: p.HostVeth, Kind: "veth", PeerNS: p.Netns, PeerName: p.Interface, Master: n.Bridge, MTU: p.MTU})
			}
		}
	}

	for _, p := range l.Pods {
		n, _ := l.Node(p.Node)
		c := add(p.Netns)
		c.Links = append(c.Links, &LinkConfig{Name: p.Interface, Kind: "veth", PeerNS: n.Netns, PeerName: p.HostVeth, MTU: p.MTU,
			Addrs: []string{p.IP + "/24", p.IP6 + "/64"}})
		c.Routes = []RouteConfig{{Dst: "default", Via: n.BridgeIP, Dev: p.Interface}}
		c.Routes6 = []RouteConfig{{Dst: "default", Via: n.BridgeIP6, Dev: p.Interface}}
		c.Sysctls["ipv4.ip_local_port_range"] = "32768\t60999"
		d.Resolv[p.ResolvConf] = podResolvConf(l, p.Namespace)
	}

	// Servers. "[::]" is one dual-stack socket (IPV6_V6ONLY off): it takes
	// IPv4 connections as v4-mapped addresses. "0.0.0.0" would be IPv4
	// only.
	d.Procs["ext-http"] = &ProcSpec{Name: "ext-http", Netns: ext.Netns, Helper: "http",
		Args: []string{"--listen", "[::]:80", "--name", "ext"}, Ready: "tcp:127.0.0.1:80"}
	d.Procs["upstream-dns"] = &ProcSpec{Name: "upstream-dns", Netns: ext.Netns,
		Args: []string{"-conf", filepath.Join(l.StateDir, "Corefile.upstream")}, Ready: "dns:127.0.0.1:53"}
	if l.Shape == ShapeCluster {
		return d
	}
	web, _ := l.Pod("default/web")
	dns, _ := l.Pod("kube-system/coredns")
	d.Procs["web"] = &ProcSpec{Name: "web", Netns: web.Netns, Helper: "http",
		Args: []string{"--listen", "[::]:8080", "--name", "default/web"}, Ready: "tcp:127.0.0.1:8080"}
	d.Procs["apiserver"] = &ProcSpec{Name: "apiserver", Netns: nodeA.Netns, Helper: "http",
		Args:  []string{"--listen", hostPort(nodeA.InternalIP, apiPort), "--name", "kube-apiserver"},
		Ready: "tcp:" + hostPort(nodeA.InternalIP, apiPort)}
	d.Procs["coredns"] = &ProcSpec{Name: "coredns", Netns: dns.Netns,
		Args: []string{"-conf", filepath.Join(l.StateDir, "Corefile.cluster")}, Ready: "dns:127.0.0.1:53"}
	return d
}

func hostPort(ip string, port int) string { return ip + ":" + strconv.Itoa(port) }

// podResolvConf is what the kubelet writes for a pod with dnsPolicy
// ClusterFirst.
func podResolvConf(l *Lab, namespace string) string {
	dom := l.ClusterDomain
	return fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
		namespace, dom, dom, dom, dnsClusterIP)
}

// order returns namespace names in creation order: hosts, nodes, pods.
func (d *Desired) order() []string { return d.nsOrder }

// finish fills the dynamic parts of the Kubernetes view from the knobs.
func (d *Desired) finish() {
	for i := range d.Lab.Pods {
		d.Lab.Pods[i].Ready = !d.NotReady[d.Lab.Pods[i].Key()]
	}
	for i := range d.Lab.Services {
		for j := range d.Lab.Services[i].Endpoints {
			ep := &d.Lab.Services[i].Endpoints[j]
			ep.Ready = ep.Pod == "" || !d.NotReady[ep.Pod]
		}
	}
	if d.Lab.Shape == ShapeCluster {
		return // the cluster's API server is the Kubernetes view
	}
	for i := range d.Lab.Nodes {
		n := &d.Lab.Nodes[i]
		if d.KubeProxy[n.Name] {
			n.KubeProxy = "Running"
		} else {
			n.KubeProxy = "Pending: evicted (preempted by a higher-priority pod)"
		}
	}
}

// bridgeMAC is a node's cni0 MAC, derived from its VTEP's (02:4e:44:00:..
// becomes 02:4e:44:10:..): locally administered, unique per node.
func bridgeMAC(vtep string) string { return strings.Replace(vtep, "02:4e:44:00:", "02:4e:44:10:", 1) }
