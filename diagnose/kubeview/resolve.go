package kubeview

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// Question is what the user asks, as typed.
type Question struct {
	// Kind is what the source is: pod, svc (one of its backends) or node.
	Kind string `json:"kind"`
	// Namespace and Name name it; for a pod or a Service, Name may be
	// NAMESPACE/NAME when Namespace is empty.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// To is the destination in one of the ToForms, as typed.
	To string `json:"to,omitempty"`
	// DNS are names to resolve from the source.
	DNS []string `json:"dns,omitempty"`
}

// Resolved is a question resolved against the cluster: where each end is,
// what to probe, the Cluster facts for the rules and the static checks.
type Resolved struct {
	// Question restates it ("pod default/client to svc/default/web:80").
	Question string `json:"question"`
	Source   End    `json:"source"`
	// Dest is nil when the question has no destination.
	Dest *End `json:"dest,omitempty"`
	// To is the address and port to probe; AltTo is the same destination
	// in the other address family (a dual-stack pod, node or Service).
	// To carries a Name and no address when the user gave a name.
	To    *collectors.Dest `json:"to,omitempty"`
	AltTo *collectors.Dest `json:"also_to,omitempty"`
	DNS   []string         `json:"dns,omitempty"`
	// SourceNode and DestNode are the nodes the two ends run on.
	SourceNode *Node `json:"source_node,omitempty"`
	DestNode   *Node `json:"dest_node,omitempty"`
	// Cluster is for diagnose.Request.Cluster.
	Cluster *diagnose.Cluster `json:"cluster"`
	Checks  []Check           `json:"checks"`
}

// End is one end of a question.
type End struct {
	// Kind is pod, svc, node or host (an address or name outside the
	// cluster's objects).
	Kind string `json:"kind"`
	// Name names it as a finding does: "pod default/web", "svc
	// default/web", "node node-a", "198.51.100.7".
	Name string `json:"name"`
	// Node is the node it runs on: a pod's, a Service's chosen backend's,
	// the node itself. Empty outside the cluster or for a pod not
	// scheduled (the checks say why).
	Node string `json:"node,omitempty"`
	// Pod is the pod; for a Service, its chosen backend (a ready one when
	// there is one); nil otherwise.
	Pod *Pod `json:"pod,omitempty"`
	// HostNetwork is set when Pod is on its node's network namespace.
	HostNetwork bool `json:"host_network,omitempty"`
	// Service, Port and TargetPort are the Service, the port asked and
	// the chosen backend's port for it.
	Service    *Service     `json:"service,omitempty"`
	Port       *ServicePort `json:"port,omitempty"`
	TargetPort int          `json:"target_port,omitempty"`
}

// Resolve resolves a question. Names are checked before any lookup and
// errors say what was wrong and what is accepted. A target that exists
// but is broken (a pod Pending, a Service without ready endpoints) is not
// an error: Resolve answers, and the checks say what is wrong.
func (v *View) Resolve(q Question) (*Resolved, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	for _, n := range q.DNS {
		if err := collectors.ValidateName(n); err != nil {
			return nil, err
		}
	}
	r := &Resolved{DNS: q.DNS, Cluster: &diagnose.Cluster{ClusterDomain: v.opts.ClusterDomain, APIName: "kubernetes.default.svc." + v.opts.ClusterDomain}}
	c := r.Cluster
	target, err := v.resolveSource(q, r)
	if err != nil {
		return nil, err
	}
	c.SourceName = r.Source.Name
	if r.Source.Node != "" {
		if n, err := v.Node(r.Source.Node); err == nil {
			r.SourceNode, c.SourceNode = n, clusterNode(n)
		}
	}
	r.Question = q.Kind + " " + target
	if q.To != "" {
		if err := v.resolveTo(r, q.To); err != nil {
			return nil, err
		}
		r.Question += " to " + q.To
		if r.Dest.Node != "" {
			if n, err := v.Node(r.Dest.Node); err == nil {
				r.DestNode, c.PeerNode = n, clusterNode(n)
			}
		}
	}
	if len(q.DNS) > 0 {
		r.Question += " resolving " + strings.Join(q.DNS, ", ")
	}
	dns, dnsErr := v.dnsService()
	if dns != nil {
		sp := dnsPort(dns)
		bs := dns.Backends(sp)
		c.DNS = clusterService(dns, sp, bs, chooseBackend(bs, ""), primary(dns.ClusterIPs))
	}
	r.Checks = v.checks(r, dns, dnsErr)
	return r, nil
}

func (v *View) resolveSource(q Question, r *Resolved) (string, error) {
	ns, name := q.Namespace, q.Name
	split := func() error {
		if ns != "" {
			return nil
		}
		var err error
		ns, name, err = splitNamespaced(q.Kind, name)
		return err
	}
	switch q.Kind {
	case "pod":
		if err := split(); err != nil {
			return "", err
		}
		p, err := v.Pod(ns, name)
		if err != nil {
			return "", err
		}
		r.Source = End{Kind: "pod", Name: "pod " + p.Key(), Node: p.Node, Pod: p, HostNetwork: p.HostNetwork}
		return p.Key(), nil
	case "svc":
		if err := split(); err != nil {
			return "", err
		}
		s, err := v.Service(ns, name)
		if err != nil {
			return "", err
		}
		r.Source = End{Kind: "svc", Name: "svc " + s.Key(), Service: s}
		var bs []Backend
		for _, e := range s.Endpoints {
			bs = append(bs, Backend{Endpoint: e})
		}
		if i := chooseBackend(bs, ""); i >= 0 {
			v.setBackend(&r.Source, bs[i])
		}
		return s.Key(), nil
	case "node":
		if ns != "" {
			return "", fmt.Errorf("bad node %q: a node has no namespace (accepted: %s)", ns+"/"+name, TargetForms)
		}
		n, err := v.Node(name)
		if err != nil {
			return "", err
		}
		r.Source = End{Kind: "node", Name: "node " + n.Name, Node: n.Name}
		return n.Name, nil
	}
	return "", fmt.Errorf("unknown target %q (accepted: %s)", q.Kind, TargetForms)
}

// setBackend makes the Service's chosen backend the end's pod.
func (v *View) setBackend(e *End, b Backend) {
	e.Node, e.TargetPort = b.Node, b.Port
	if ns, name, ok := strings.Cut(b.Pod, "/"); ok {
		if p, err := v.Pod(ns, name); err == nil {
			e.Pod, e.HostNetwork = p, p.HostNetwork
			if e.Node == "" {
				e.Node = p.Node
			}
		}
	}
}

func (v *View) resolveTo(r *Resolved, to string) error {
	c := r.Cluster
	kind, rest, ok := strings.Cut(to, "/")
	if !ok {
		return v.resolveAddr(r, to)
	}
	target, portStr, hasPort := rest, "", false
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		target, portStr, hasPort = rest[:i], rest[i+1:], true
	}
	port, portName := 0, ""
	if hasPort {
		var err error
		if port, portName, err = parsePort(portStr, to); err != nil {
			return err
		}
	}
	switch kind {
	case "pod":
		ns, name, err := splitNamespaced("pod", target)
		if err != nil {
			return fmt.Errorf("bad --to %q (accepted: %s)", to, ToForms)
		}
		p, err := v.Pod(ns, name)
		if err != nil {
			return fmt.Errorf("--to %s: %w", to, err)
		}
		if len(p.IPs) == 0 {
			return fmt.Errorf("--to %s: pod %s has no IP yet (%s)", to, p.Key(), p.State)
		}
		if portName != "" {
			i := slices.IndexFunc(p.Ports, func(cp ContainerPort) bool { return cp.Name == portName })
			if i < 0 {
				return fmt.Errorf("--to %s: pod %s has no port named %q (ports: %s)", to, p.Key(), portName, containerPorts(p.Ports))
			}
			port = p.Ports[i].Port
		}
		r.Dest = &End{Kind: "pod", Name: "pod " + p.Key(), Node: p.Node, Pod: p, HostNetwork: p.HostNetwork, TargetPort: port}
		r.To, r.AltTo = dest(p.IPs, port)
		c.PeerName = r.Dest.Name
	case "svc":
		ns, name, err := splitNamespaced("svc", target)
		if err != nil {
			return fmt.Errorf("bad --to %q (accepted: %s)", to, ToForms)
		}
		s, err := v.Service(ns, name)
		if err != nil {
			return fmt.Errorf("--to %s: %w", to, err)
		}
		if s.ExternalName != "" {
			return fmt.Errorf("--to %s: svc %s is an ExternalName Service for %s: ask --to %s:PORT", to, s.Key(), s.ExternalName, s.ExternalName)
		}
		if !hasPort {
			if len(s.Ports) == 0 {
				return fmt.Errorf("--to %s: svc %s has no ports", to, s.Key())
			}
			return fmt.Errorf("--to %s: a Service needs its port (ports: %s), e.g. svc/%s:%d", to, s.portList(), s.Key(), s.Ports[0].Port)
		}
		want := portName
		if port > 0 {
			want = strconv.Itoa(port)
		}
		sp, err := s.Port(want)
		if err != nil {
			return fmt.Errorf("--to %s: %w", to, err)
		}
		return v.toService(r, s, sp, nil, to)
	case "node":
		if hasPort && portName != "" {
			return fmt.Errorf("--to %s: a node's port is a number", to)
		}
		n, err := v.Node(target)
		if err != nil {
			return fmt.Errorf("--to %s: %w", to, err)
		}
		if len(n.InternalIPs) == 0 {
			return fmt.Errorf("--to %s: node %s has no InternalIP", to, n.Name)
		}
		r.Dest = &End{Kind: "node", Name: "node " + n.Name, Node: n.Name}
		r.To, r.AltTo = dest(n.InternalIPs, port)
		c.PeerName = r.Dest.Name
	default:
		return fmt.Errorf("bad --to %q: %q is not a kind (accepted: %s)", to, kind, ToForms)
	}
	return nil
}

// toService aims the question at a Service port. addr is the address the
// user gave (nil when the Service was named).
func (v *View) toService(r *Resolved, s *Service, sp *ServicePort, given *collectors.Dest, to string) error {
	bs := s.Backends(sp)
	fam := primary(s.ClusterIPs)
	if given != nil && given.Addr.IsValid() {
		fam = given.Addr
	}
	chosen := chooseBackend(bs, fam.String())
	d := &End{Kind: "svc", Name: "svc " + s.Key(), Service: s, Port: sp}
	if chosen >= 0 {
		v.setBackend(d, bs[chosen])
	}
	r.Dest = d
	switch {
	case given != nil:
		r.To = given
	case s.Headless:
		// A headless Service's name resolves to its pods: probe the
		// chosen one. Without a ClusterIP there are no Service rules to
		// check, so the Cluster carries no Service.
		if chosen < 0 {
			return fmt.Errorf("--to %s: svc %s is headless (no ClusterIP) and has no endpoint for port %s: %s", to, s.Key(), sp, v.noEndpointsWhy(s, sp, bs))
		}
		r.To = &collectors.Dest{Addr: bs[chosen].IP, Port: uint16(bs[chosen].Port)}
		r.Cluster.PeerName = d.Name
		if d.Pod != nil {
			r.Cluster.PeerName = "pod " + d.Pod.Key()
		}
		return nil
	default:
		r.To, r.AltTo = dest(s.ClusterIPs, sp.Port)
	}
	r.Cluster.Service = clusterService(s, sp, bs, chosen, fam)
	// As the lab's view does, the destination side is the chosen backend.
	r.Cluster.PeerName = d.Name
	if d.Pod != nil {
		r.Cluster.PeerName = "pod " + d.Pod.Key()
	}
	return nil
}

// resolveAddr handles HOST:PORT: an address that is a pod's, a Service's
// or a node's becomes that object; a cluster Service's DNS name becomes
// the Service (the name stays the probe's destination, resolved as the
// pod would); anything else is a host outside.
func (v *View) resolveAddr(r *Resolved, to string) error {
	d, err := collectors.ParseDest(to)
	if err != nil {
		// ParseDest lists the forms it accepts; these are more.
		why, _, _ := strings.Cut(err.Error(), " (accepted:")
		return fmt.Errorf("bad --to %q: %s (accepted: %s)", to, why, ToForms)
	}
	r.To = d
	host := &End{Kind: "host", Name: to}
	if d.Addr.IsValid() {
		host.Name = d.Addr.String()
		if p, err := v.PodByIP(d.Addr); err == nil {
			r.Dest = &End{Kind: "pod", Name: "pod " + p.Key(), Node: p.Node, Pod: p, TargetPort: int(d.Port)}
			r.Cluster.PeerName = r.Dest.Name
			return nil
		}
		if s, err := v.ServiceByIP(d.Addr); err == nil {
			if d.Port == 0 {
				return fmt.Errorf("--to %s: %s is the ClusterIP of svc %s: give its port (ports: %s), e.g. %s", to, d.Addr, s.Key(), s.portList(), netip.AddrPortFrom(d.Addr, uint16(s.Ports[0].Port)))
			}
			sp, err := s.Port(strconv.Itoa(int(d.Port)))
			if err != nil {
				return fmt.Errorf("--to %s: %w", to, err)
			}
			return v.toService(r, s, sp, d, to)
		}
		if n, err := v.NodeByIP(d.Addr); err == nil {
			r.Dest = &End{Kind: "node", Name: "node " + n.Name, Node: n.Name}
			r.Cluster.PeerName = r.Dest.Name
			return nil
		}
		r.Dest = host
		return nil
	}
	if ns, name, ok := v.serviceName(d.Name); ok && d.Port != 0 {
		if s, err := v.Service(ns, name); err == nil && !s.Headless && s.ExternalName == "" {
			if sp, err := s.Port(strconv.Itoa(int(d.Port))); err == nil {
				return v.toService(r, s, sp, d, to)
			}
		}
	}
	r.Dest = host
	return nil
}

// serviceName reads NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.DOMAIN.
func (v *View) serviceName(host string) (ns, name string, ok bool) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	h = strings.TrimSuffix(h, "."+v.opts.ClusterDomain)
	rest, ok := strings.CutSuffix(h, ".svc")
	if !ok {
		return "", "", false
	}
	name, ns, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") {
		return "", "", false
	}
	return ns, name, true
}

// dest is the destination in the primary family and its twin in the
// other family, if any.
func dest(ips []netip.Addr, port int) (*collectors.Dest, *collectors.Dest) {
	if len(ips) == 0 {
		return nil, nil
	}
	to := &collectors.Dest{Addr: ips[0], Port: uint16(port)}
	for _, a := range ips[1:] {
		if a.Is4() != ips[0].Is4() {
			return to, &collectors.Dest{Addr: a, Port: uint16(port)}
		}
	}
	return to, nil
}

func primary(ips []netip.Addr) netip.Addr {
	if len(ips) == 0 {
		return netip.Addr{}
	}
	return ips[0]
}

// chooseBackend picks the backend to probe behind a Service: ready and
// not terminating, then serving, then any, preferring one of the family
// given (an address, "" for any) and one backed by a pod; by pod name and
// address, so the same question gets the same backend. -1 when there is
// none.
func chooseBackend(bs []Backend, family string) int {
	if len(bs) == 0 {
		return -1
	}
	fam, _ := netip.ParseAddr(family)
	rank := func(b Backend) int {
		r := 0
		switch {
		case b.Ready && !b.Terminating:
			r = 4
		case b.Serving:
			r = 2
		}
		if b.Pod != "" {
			r++
		}
		if fam.IsValid() && b.IP.Is4() == fam.Is4() {
			r += 8
		}
		return r
	}
	idx := make([]int, len(bs))
	for i := range idx {
		idx[i] = i
	}
	return slices.MinFunc(idx, func(i, j int) int {
		a, b := bs[i], bs[j]
		if c := cmp.Compare(rank(b), rank(a)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Pod, b.Pod); c != 0 {
			return c
		}
		return a.IP.Compare(b.IP)
	})
}

// clusterService is the Service for the rules: the port asked, the
// ClusterIP probed (fam: the address, or one of its family) and the
// backends of its family, the chosen one first (the plan probes the first
// ready one directly).
func clusterService(s *Service, sp *ServicePort, bs []Backend, chosen int, fam netip.Addr) *diagnose.Service {
	out := &diagnose.Service{Name: s.Key(), Port: sp.Port, Protocol: sp.Protocol}
	ip := primary(s.ClusterIPs)
	if slices.Contains(s.ClusterIPs, fam) {
		ip = fam
	}
	if ip.IsValid() {
		out.ClusterIP = ip.String()
	}
	if n, err := strconv.Atoi(sp.TargetPort); err == nil {
		out.TargetPort = n
	}
	order := make([]int, 0, len(bs))
	if chosen >= 0 {
		order = append(order, chosen)
		out.TargetPort = bs[chosen].Port
	}
	for i := range bs {
		if i != chosen {
			order = append(order, i)
		}
	}
	for _, i := range order {
		b := bs[i]
		if fam.IsValid() && b.IP.Is4() != fam.Is4() {
			continue
		}
		if out.TargetPort == 0 {
			out.TargetPort = b.Port
		}
		out.Endpoints = append(out.Endpoints, diagnose.Endpoint{IP: b.IP.String(), Pod: b.Pod, Ready: b.Ready && !b.Terminating})
	}
	return out
}

func clusterNode(n *Node) *diagnose.Node {
	out := &diagnose.Node{Name: n.Name, KubeProxy: n.KubeProxy, OverlayDevice: n.Overlay.Device, OverlayPort: n.Overlay.Port}
	ip := primary(n.InternalIPs)
	if ip.IsValid() {
		out.InternalIP = ip.String()
	}
	for _, p := range n.PodCIDRs {
		if !ip.IsValid() || p.Addr().Is4() == ip.Is4() {
			out.PodCIDR = p.String()
			break
		}
	}
	if out.PodCIDR == "" && len(n.PodCIDRs) > 0 {
		out.PodCIDR = n.PodCIDRs[0].String()
	}
	return out
}

// dnsService is the cluster DNS Service: the one configured, else the
// kube-system Service labelled k8s-app=kube-dns (CoreDNS keeps the label
// when a cluster renames the Service).
func (v *View) dnsService() (*Service, error) {
	s, err := v.Service(v.dnsNS, v.dnsName)
	if err == nil {
		return s, nil
	}
	objs, lerr := v.services.Services(v.dnsNS).List(labels.SelectorFromSet(labels.Set{"k8s-app": "kube-dns"}))
	if lerr != nil || len(objs) == 0 {
		return nil, err
	}
	slices.SortFunc(objs, func(a, b *corev1.Service) int { return cmp.Compare(a.Name, b.Name) })
	return v.serviceFrom(objs[0])
}

// dnsPort is the DNS Service's port for queries: named dns, else 53/UDP,
// else the first.
func dnsPort(s *Service) *ServicePort {
	if len(s.Ports) == 0 {
		return &ServicePort{Port: 53, Protocol: "UDP", TargetPort: "53"}
	}
	for i, sp := range s.Ports {
		if sp.Name == "dns" {
			return &s.Ports[i]
		}
	}
	for i, sp := range s.Ports {
		if sp.Port == 53 && sp.Protocol == "UDP" {
			return &s.Ports[i]
		}
	}
	return &s.Ports[0]
}

func containerPorts(ps []ContainerPort) string {
	if len(ps) == 0 {
		return "none declared"
	}
	var out []string
	for _, p := range ps {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.Name != "" {
			s = p.Name + " " + s
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// Place is where the end's network namespace is, for a diagnose.Request:
// its node, and its pod unless it is on the node's own namespace (a node,
// a host-network pod). The zero Place for a host outside the cluster or a
// pod on no node.
func (e End) Place() diagnose.Place {
	if e.Node == "" {
		return diagnose.Place{}
	}
	pl := diagnose.Place{Node: e.Node}
	if e.Pod != nil && !e.HostNetwork {
		pl.Pod = &diagnose.Pod{Namespace: e.Pod.Namespace, Name: e.Pod.Name, UID: e.Pod.UID}
		if len(e.Pod.IPs) > 0 {
			pl.Pod.IP = e.Pod.IPs[0]
		}
	}
	return pl
}

// NodePlace is the node's own namespace for an end's node.
func NodePlace(node string) diagnose.Place {
	return diagnose.Place{Node: node}
}
