// Package lab builds a small Kubernetes cluster network out of Linux network
// namespaces on one machine, and breaks it on demand.
//
// The lab is two nodes joined by an underlay segment, each with a cni0 bridge
// holding its PodCIDR and a flannel-style VXLAN device (flannel.1, UDP 8472);
// pods are namespaces with a veth into their node's bridge; Services are
// kube-proxy iptables-mode DNAT chains in each node; CoreDNS serves the cluster
// zone and forwards other names to an outside host behind a router. Faults are
// the failures of the netdiag taxonomy and of the seed incidents, injected as
// real kernel state (routes, MTUs, iptables rules, stopped servers), so that
// collectors, rules and benchmarks are proven against a real network.
//
// The lab is dual-stack the way a dual-stack cluster is: nodes, pods, the
// bridges, the overlay and the outside host have an IPv6 address beside their
// IPv4 one, and pod IPv6 traffic crosses the same flannel.1 VXLAN device (IPv6
// frames over the IPv4 underlay). Services stay IPv4 single-stack: there are
// no IPv6 ClusterIPs.
//
// Safety: every address is in 198.18.0.0/15 or 2001:2::/48 (both reserved for
// benchmarking); everything lives in namespaces named ndl-INSTANCE-*; nothing
// is changed in the machine's own namespace; Down removes namespaces,
// /etc/netns entries, state and processes by prefix and PID.
package lab

import (
	"fmt"
	"hash/fnv"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// NamePrefix starts the name of every namespace, /etc/netns directory and
// state directory the lab creates.
const NamePrefix = "ndl-"

// DefaultInstance is the lab people get when they do not name one.
const DefaultInstance = "demo"

// StateRoot holds one directory per lab instance (state, Corefiles, logs).
const StateRoot = "/run/netdiag-lab"

var instanceRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// ValidateInstance checks an instance name. Dashes are refused because the
// instance is a name prefix: "a" must never match the namespaces of "a-b".
func ValidateInstance(name string) error {
	if !instanceRE.MatchString(name) {
		return fmt.Errorf("invalid lab instance %q: use 1 to 16 lower-case letters or digits (e.g. %q)", name, DefaultInstance)
	}
	return nil
}

// Lab describes one lab instance: its namespaces, addresses, pods and
// Services. It is what `netdiag lab status -o json` prints, and what tests and
// the lab's Kubernetes view read.
type Lab struct {
	Instance string `json:"instance"`
	// Shape is ShapeEmulated or ShapeCluster.
	Shape         string `json:"shape"`
	Prefix        string `json:"prefix"`
	StateDir      string `json:"state_dir"`
	ClusterDomain string `json:"cluster_domain"`
	ClusterCIDR   string `json:"cluster_cidr"`
	ClusterCIDR6  string `json:"cluster_cidr6"`
	// ServiceCIDR is IPv4 only: Services are single-stack, as they are in a
	// dual-stack cluster unless a Service asks for ipFamilyPolicy.
	ServiceCIDR string    `json:"service_cidr"`
	DNSService  string    `json:"dns_service"`
	OutsideName string    `json:"outside_name"`
	Nodes       []Node    `json:"nodes"`
	Pods        []Pod     `json:"pods"`
	Services    []Service `json:"services"`
	Hosts       []Host    `json:"hosts"`
}

// The shapes a lab instance comes in.
const (
	// ShapeEmulated is the lab that plays Kubernetes: its overlay, pods,
	// Services and CoreDNS are built by the lab itself, and its faults are
	// kernel state it writes.
	ShapeEmulated = "emulated"
	// ShapeCluster is the machines and the wires alone: the router, the
	// outside and management hosts, and the nodes with their NICs,
	// addresses, default routes and forwarding. A real cluster
	// (lab/cluster) brings everything else, as on a real network: flannel
	// the overlay and cni0, containerd and the kubelet the pods, kube-proxy
	// the Service rules. The lab then owns no firewall rule, link or route
	// that those programs write, so it never rewrites them. Its
	// description keeps the nodes' PodCIDRs (the cluster gives the nodes
	// these) and the Services' ClusterIPs, without pods or endpoints.
	ShapeCluster = "cluster"
)

// Node is a cluster node: a namespace with the node's NIC, its cni0 bridge and
// its VXLAN device.
type Node struct {
	Name       string `json:"name"`
	Netns      string `json:"netns"`
	NetnsPath  string `json:"netns_path"`
	InternalIP string `json:"internal_ip"`
	// InternalIP6 is the node's second InternalIP, on the same NIC.
	InternalIP6 string  `json:"internal_ip6"`
	NIC         string  `json:"nic"`
	PodCIDR     string  `json:"pod_cidr"`
	PodCIDR6    string  `json:"pod_cidr6"`
	Bridge      string  `json:"bridge"`
	BridgeIP    string  `json:"bridge_ip"`
	BridgeIP6   string  `json:"bridge_ip6"`
	Overlay     Overlay `json:"overlay"`
	// KubeProxy is "Running" or the reason it is not (the lab's Kubernetes view).
	KubeProxy string `json:"kube_proxy"`
	// ExtraNICs are further interfaces (node-b has a management NIC).
	ExtraNICs []NIC `json:"extra_nics,omitempty"`
}

// NIC is a node interface beyond the main one.
type NIC struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
}

// Overlay is a node's flannel VXLAN device as flannel would configure it.
type Overlay struct {
	Device  string `json:"device"`
	Type    string `json:"type"`
	VNI     int    `json:"vni"`
	Port    int    `json:"port"`
	Local   string `json:"local"`
	MAC     string `json:"mac"`
	Address string `json:"address"`
	// Address6 is the device's IPv6 address: the same device carries both
	// families, so its MTU must fit both.
	Address6 string `json:"address6"`
	MTU      int    `json:"mtu"`
}

// Pod is a pod: its own namespace with eth0 and a resolv.conf.
type Pod struct {
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Node       string `json:"node"`
	Netns      string `json:"netns"`
	NetnsPath  string `json:"netns_path"`
	IP         string `json:"ip"`
	IP6        string `json:"ip6"`
	Interface  string `json:"interface"`
	HostVeth   string `json:"host_veth"`
	MTU        int    `json:"mtu"`
	ResolvConf string `json:"resolv_conf"`
	Ports      []int  `json:"ports,omitempty"`
	Ready      bool   `json:"ready"`
}

// Key is "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Service is a ClusterIP Service and its endpoints.
type Service struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	ClusterIP string        `json:"cluster_ip"`
	Ports     []ServicePort `json:"ports"`
	Endpoints []Endpoint    `json:"endpoints"`
}

// Key is "namespace/name".
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// ServicePort maps a Service port to the endpoints' target port.
type ServicePort struct {
	Name       string `json:"name"`
	Protocol   string `json:"protocol"`
	Port       int    `json:"port"`
	TargetPort int    `json:"target_port"`
}

// Endpoint is one backend of a Service. Pod is empty for host-network
// endpoints (the API server). IP is IPv4: Services are single-stack.
type Endpoint struct {
	Pod   string `json:"pod,omitempty"`
	Node  string `json:"node"`
	IP    string `json:"ip"`
	Ready bool   `json:"ready"`
}

// Host is a machine outside the cluster: the router, the outside host, the
// management host.
type Host struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Netns     string `json:"netns"`
	NetnsPath string `json:"netns_path"`
	IP        string `json:"ip"`
	// IP6 is empty for a host that has no IPv6 address (the management host).
	IP6 string `json:"ip6,omitempty"`
}

// Addresses of the lab. All are inside 198.18.0.0/15 (RFC 2544, benchmarking).
const (
	routerUL     = "198.18.0.1"
	nodeAIP      = "198.18.0.11"
	nodeBIP      = "198.18.0.12"
	mgmtBIP      = "198.18.1.1" // management host, on node-b's side
	nodeBMgmtIP  = "198.18.1.12"
	mgmtAIP      = "198.18.4.1" // management host, on node-a's side
	nodeAMgmtIP  = "198.18.4.11"
	dhcpBIP      = "198.18.2.12" // a stray DHCP lease (seed: static + DHCP)
	routerOut    = "198.18.10.1"
	extIP        = "198.18.10.10"
	clusterCIDR  = "198.19.0.0/16"
	serviceCIDR  = "198.18.96.0/20"
	apiClusterIP = "198.18.96.1"
	dnsClusterIP = "198.18.96.10"
	webClusterIP = "198.18.96.20"
	apiPort      = 6443
	nicMTU       = 1500
	vxlanMTU     = 1450
	vxlanPort    = 8472
	vxlanVNI     = 1
)

// IPv6 addresses of the lab. All are inside 2001:2::/48 (RFC 5180,
// benchmarking), that is 2001:2:0:XXXX::/64 networks only: 2001:2:1::/56 or
// 2001:2:10::/64 would already lie outside it. The underlay is 2001:2::/64,
// the outside link 2001:2:0:10::/64, the cluster network 2001:2:0:100::/56
// with one /64 per node whose addresses mirror their IPv4 twins (mirror6).
const (
	routerUL6    = "2001:2::1"
	nodeAIP6     = "2001:2::11"
	nodeBIP6     = "2001:2::12"
	routerOut6   = "2001:2:0:10::1"
	extIP6       = "2001:2:0:10::10"
	clusterCIDR6 = "2001:2:0:100::/56"
)

// mirror6 gives a pod-network IPv4 address (198.19.X.Y) its IPv6 twin
// 2001:2:0:1XX::Y, written with the same digits, so that a person reading a
// capture sees at once which pod an IPv6 address belongs to: 198.19.1.10 is
// 2001:2:0:101::10. A CIDR keeps its place: 198.19.1.0/24 becomes the /64
// 2001:2:0:101::/64. X must be below 100 to stay inside the /56.
func mirror6(v4 string) string {
	addr, bits, isCIDR := strings.Cut(v4, "/")
	var a, b, c, d int
	if _, err := fmt.Sscanf(addr, "%d.%d.%d.%d", &a, &b, &c, &d); err != nil || a != 198 || b != 19 || c >= 100 {
		panic(fmt.Sprintf("mirror6: %q is not a pod-network address", v4)) // the topology is fixed
	}
	out := fmt.Sprintf("2001:2:0:1%02d::", c)
	if d != 0 {
		out += strconv.Itoa(d)
	}
	if isCIDR {
		if bits != "24" {
			panic(fmt.Sprintf("mirror6: %q: only /24 PodCIDRs have a twin", v4))
		}
		out += "/64"
	}
	return out
}

// New returns the description of a lab instance. It is a pure function of the
// instance name: building, status and cleanup all derive names from it.
func New(instance string) (*Lab, error) { return NewShape(instance, ShapeEmulated) }

// NewShape is New for a lab of the given shape.
func NewShape(instance, shape string) (*Lab, error) {
	if err := ValidateInstance(instance); err != nil {
		return nil, err
	}
	if shape != ShapeEmulated && shape != ShapeCluster {
		return nil, fmt.Errorf("invalid lab shape %q: accepted are %q and %q", shape, ShapeEmulated, ShapeCluster)
	}
	prefix := NamePrefix + instance + "-"
	ns := func(n string) (string, string) { return prefix + n, "/run/netns/" + prefix + n }

	l := &Lab{
		Instance:      instance,
		Shape:         shape,
		Prefix:        prefix,
		StateDir:      filepath.Join(StateRoot, instance),
		ClusterDomain: "cluster.local",
		ClusterCIDR:   clusterCIDR,
		ClusterCIDR6:  clusterCIDR6,
		ServiceCIDR:   serviceCIDR,
		DNSService:    "kube-system/kube-dns",
		OutsideName:   "example.com",
	}
	mkNode := func(name, ip, ip6, cidr, bridgeIP, vtepAddr, mac string) Node {
		n, p := ns(name)
		return Node{
			Name: name, Netns: n, NetnsPath: p, InternalIP: ip, InternalIP6: ip6, NIC: "eth0",
			PodCIDR: cidr, PodCIDR6: mirror6(cidr), Bridge: "cni0", BridgeIP: bridgeIP, BridgeIP6: mirror6(bridgeIP),
			KubeProxy: "Running",
			// Like flannel, the VTEP address is the PodCIDR's network
			// address, in both families.
			Overlay: Overlay{Device: "flannel.1", Type: "vxlan", VNI: vxlanVNI, Port: vxlanPort,
				Local: ip, MAC: mac, Address: vtepAddr, Address6: mirror6(vtepAddr), MTU: vxlanMTU},
		}
	}
	nodeA := mkNode("node-a", nodeAIP, nodeAIP6, "198.19.1.0/24", "198.19.1.1", "198.19.1.0", "02:4e:44:00:01:01")
	nodeB := mkNode("node-b", nodeBIP, nodeBIP6, "198.19.2.0/24", "198.19.2.1", "198.19.2.0", "02:4e:44:00:02:01")
	// Each node has a second NIC to the deployment/management host, as the
	// seed's master had (eth0 on the node network, another NIC elsewhere).
	nodeA.ExtraNICs = []NIC{{Name: "eth1", Address: nodeAMgmtIP + "/24", Gateway: mgmtAIP}}
	nodeB.ExtraNICs = []NIC{{Name: "eth1", Address: nodeBMgmtIP + "/24", Gateway: mgmtBIP}}
	l.Nodes = []Node{nodeA, nodeB}

	mkPod := func(namespace, name, node, ip string, ports ...int) Pod {
		n, p := ns(namespace + "-" + name)
		return Pod{
			Namespace: namespace, Name: name, Node: node, Netns: n, NetnsPath: p, IP: ip, IP6: mirror6(ip),
			Interface: "eth0", HostVeth: hostVethName(namespace, name), MTU: vxlanMTU,
			ResolvConf: filepath.Join("/etc/netns", n, "resolv.conf"), Ports: ports, Ready: true,
		}
	}
	l.Pods = []Pod{
		mkPod("default", "web", "node-a", "198.19.1.10", 8080),
		mkPod("default", "client", "node-b", "198.19.2.10"),
		mkPod("kube-system", "coredns", "node-b", "198.19.2.53", 53),
	}

	l.Services = []Service{
		{Namespace: "default", Name: "kubernetes", ClusterIP: apiClusterIP,
			Ports:     []ServicePort{{Name: "https", Protocol: "TCP", Port: 443, TargetPort: apiPort}},
			Endpoints: []Endpoint{{Node: "node-a", IP: nodeAIP, Ready: true}}},
		{Namespace: "kube-system", Name: "kube-dns", ClusterIP: dnsClusterIP,
			Ports: []ServicePort{
				{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: 53},
				{Name: "dns-tcp", Protocol: "TCP", Port: 53, TargetPort: 53},
			},
			Endpoints: []Endpoint{{Pod: "kube-system/coredns", Node: "node-b", IP: "198.19.2.53", Ready: true}}},
		{Namespace: "default", Name: "web", ClusterIP: webClusterIP,
			Ports:     []ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: 8080}},
			Endpoints: []Endpoint{{Pod: "default/web", Node: "node-a", IP: "198.19.1.10", Ready: true}}},
	}

	if shape == ShapeCluster {
		l.Pods = nil
		var svcs []Service
		for _, s := range l.Services {
			if s.Name == "kubernetes" || s.Key() == l.DNSService {
				s.Endpoints = nil
				svcs = append(svcs, s)
			}
		}
		l.Services = svcs
		for i := range l.Nodes {
			l.Nodes[i].KubeProxy = ""
		}
	}

	mkHost := func(name, role, ip, ip6 string) Host {
		n, p := ns(name)
		return Host{Name: name, Role: role, Netns: n, NetnsPath: p, IP: ip, IP6: ip6}
	}
	l.Hosts = []Host{
		mkHost("router", "underlay switch and router to the outside network", routerUL, routerUL6),
		mkHost("ext", "outside host: HTTP on :80 and the upstream DNS", extIP, extIP6),
		// The management network is IPv4 only, as deployment networks often are.
		mkHost("mgmt", "management host on the nodes' second NICs; does not route", mgmtBIP, ""),
	}
	return l, nil
}

// hostVethName gives a pod's node-side veth a stable name, as CNI plugins do.
func hostVethName(namespace, name string) string {
	h := fnv.New32a()
	h.Write([]byte(namespace + "/" + name))
	return fmt.Sprintf("veth%08x", h.Sum32())
}

// Node returns the node with the given name.
func (l *Lab) Node(name string) (*Node, error) {
	for i := range l.Nodes {
		if l.Nodes[i].Name == name {
			return &l.Nodes[i], nil
		}
	}
	return nil, fmt.Errorf("lab has no node %q (nodes: node-a, node-b)", name)
}

// Pod returns the pod "namespace/name".
func (l *Lab) Pod(key string) (*Pod, error) {
	for i := range l.Pods {
		if l.Pods[i].Key() == key {
			return &l.Pods[i], nil
		}
	}
	return nil, fmt.Errorf("lab has no pod %q (pods: %s)", key, l.podKeys())
}

// Service returns the Service "namespace/name".
func (l *Lab) Service(key string) (*Service, error) {
	for i := range l.Services {
		if l.Services[i].Key() == key {
			return &l.Services[i], nil
		}
	}
	var keys []string
	for _, s := range l.Services {
		keys = append(keys, s.Key())
	}
	return nil, fmt.Errorf("lab has no Service %q (Services: %v)", key, keys)
}

// Host returns the outside host with the given name.
func (l *Lab) Host(name string) (*Host, error) {
	for i := range l.Hosts {
		if l.Hosts[i].Name == name {
			return &l.Hosts[i], nil
		}
	}
	return nil, fmt.Errorf("lab has no host %q (hosts: router, ext, mgmt)", name)
}

func (l *Lab) podKeys() string {
	s := ""
	for i, p := range l.Pods {
		if i > 0 {
			s += ", "
		}
		s += p.Key()
	}
	return s
}

// Namespaces lists every namespace name of the instance.
func (l *Lab) Namespaces() []string {
	var out []string
	for _, h := range l.Hosts {
		out = append(out, h.Netns)
	}
	for _, n := range l.Nodes {
		out = append(out, n.Netns)
	}
	for _, p := range l.Pods {
		out = append(out, p.Netns)
	}
	return out
}
