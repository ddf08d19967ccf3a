package kubeview

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
)

// Pod is a pod as the view knows it.
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid"`
	Node        string            `json:"node,omitempty"`
	IPs         []netip.Addr      `json:"ips,omitempty"` // as in status.podIPs: the primary family first
	HostNetwork bool              `json:"host_network,omitempty"`
	Phase       string            `json:"phase"`
	Ready       bool              `json:"ready"`
	Terminating bool              `json:"terminating,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Created     time.Time         `json:"created"`
	Ports       []ContainerPort   `json:"ports,omitempty"`
	// State is "Running" for a running, ready pod, else its phase and why
	// ("Pending: Unschedulable: 0/3 nodes are available: ...").
	State string `json:"state"`
}

// ContainerPort is a port a container declares.
type ContainerPort struct {
	Container string `json:"container"`
	Name      string `json:"name,omitempty"`
	Port      int    `json:"port"`
	Protocol  string `json:"protocol"`
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// IP returns the pod's first address of the family (4 or 6).
func (p *Pod) IP(family int) netip.Addr {
	for _, a := range p.IPs {
		if a.Is4() == (family == 4) {
			return a
		}
	}
	return netip.Addr{}
}

func (p *Pod) running() bool {
	return p.Phase == string(corev1.PodRunning) && p.Ready && !p.Terminating
}

// Service is a Service with its endpoints from its EndpointSlices.
type Service struct {
	Namespace    string            `json:"namespace"`
	Name         string            `json:"name"`
	Type         string            `json:"type"`
	ClusterIPs   []netip.Addr      `json:"cluster_ips,omitempty"` // none for a headless or ExternalName Service
	Headless     bool              `json:"headless,omitempty"`
	ExternalName string            `json:"external_name,omitempty"`
	Selector     map[string]string `json:"selector,omitempty"`
	Ports        []ServicePort     `json:"ports"`
	Endpoints    []Endpoint        `json:"endpoints"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	// TargetPort is the pods' port, a number or a container port's name.
	TargetPort string `json:"target_port"`
}

func (sp ServicePort) String() string {
	s := fmt.Sprintf("%d/%s", sp.Port, sp.Protocol)
	if sp.Name != "" {
		s = sp.Name + " " + s
	}
	return s
}

// Endpoint is one address of a Service's EndpointSlices.
type Endpoint struct {
	IP          netip.Addr `json:"ip"`
	Ready       bool       `json:"ready"`
	Serving     bool       `json:"serving"`
	Terminating bool       `json:"terminating,omitempty"`
	Pod         string     `json:"pod,omitempty"` // namespace/name
	Node        string     `json:"node,omitempty"`
	// Ports are the pod's port numbers by the Service port's name ("" for
	// a Service's single unnamed port), as its EndpointSlice lists them.
	Ports map[string]int `json:"ports,omitempty"`
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Port finds a port by number or name; the error lists the ports.
func (s *Service) Port(p string) (*ServicePort, error) {
	for i, sp := range s.Ports {
		if (p != "" && sp.Name == p) || strconv.Itoa(sp.Port) == p {
			return &s.Ports[i], nil
		}
	}
	what := p
	if _, err := strconv.Atoi(p); err != nil {
		what = strconv.Quote(p)
	}
	return nil, fmt.Errorf("svc %s has no port %s (ports: %s)", s.Key(), what, s.portList())
}

func (s *Service) portList() string {
	if len(s.Ports) == 0 {
		return "none"
	}
	var out []string
	for _, sp := range s.Ports {
		out = append(out, sp.String())
	}
	return strings.Join(out, ", ")
}

// Backends are the endpoints that serve the port, each with the pod's
// port number for it.
func (s *Service) Backends(sp *ServicePort) []Backend {
	var out []Backend
	for _, e := range s.Endpoints {
		port, ok := e.Ports[sp.Name]
		if !ok {
			if len(e.Ports) > 0 {
				continue
			}
			// A slice without ports serves every port of a Service
			// whose targetPort is a number.
			n, err := strconv.Atoi(sp.TargetPort)
			if err != nil {
				continue
			}
			port = n
		}
		out = append(out, Backend{Endpoint: e, Port: port})
	}
	return out
}

// Backend is an endpoint with the port it serves a Service port on.
type Backend struct {
	Endpoint
	Port int `json:"port"`
}

// Node is a node as the view knows it.
type Node struct {
	Name        string         `json:"name"`
	InternalIPs []netip.Addr   `json:"internal_ips,omitempty"`
	PodCIDRs    []netip.Prefix `json:"pod_cidrs,omitempty"`
	Ready       bool           `json:"ready"`
	// Condition is "Ready", or the Ready condition's status, reason and
	// message ("NotReady: KubeletNotReady: container runtime network not
	// ready: ..."), and NetworkUnavailable when it is set.
	Condition     string `json:"condition"`
	Unschedulable bool   `json:"unschedulable,omitempty"`
	// KubeProxy is "Running", or why not ("Failed: Evicted: The node was
	// low on resource: memory."); "" when the cluster has no kube-proxy
	// pods at all (kube-proxy replaced, or the selector does not match).
	KubeProxy    string  `json:"kube_proxy,omitempty"`
	KubeProxyPod string  `json:"kube_proxy_pod,omitempty"`
	Overlay      Overlay `json:"overlay"`
}

// Overlay is what the CNI's annotations on the node say about its overlay.
// Only flannel's are read.
type Overlay struct {
	CNI     string `json:"cni,omitempty"`     // "flannel"
	Backend string `json:"backend,omitempty"` // "vxlan", "host-gw", "wireguard"...
	Device  string `json:"device,omitempty"`  // "flannel.1"
	Port    int    `json:"port,omitempty"`    // UDP port of the VXLAN
	// PublicIP is the address flannel sends from (its public-ip
	// annotation), and PublicIPSet whether an administrator chose it.
	PublicIP    netip.Addr `json:"public_ip,omitzero"`
	PublicIPSet bool       `json:"public_ip_set,omitempty"`
}

// flannelVXLANPort is flannel's default VXLAN port on Linux (the kernel's
// historical one, not RFC 7348's 4789); the node's annotations do not carry
// a changed one.
const flannelVXLANPort = 8472

// Pod returns the pod NS/NAME; the error says which pods there are.
func (v *View) Pod(ns, name string) (*Pod, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	if err := validNamespaced("pod", ns, name); err != nil {
		return nil, err
	}
	p, err := v.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, v.podNotFound(ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	return podFrom(p), nil
}

// PodsOnNode lists the pods bound to the node, by namespace and name.
func (v *View) PodsOnNode(node string) ([]*Pod, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	if err := validNodeName(node); err != nil {
		return nil, err
	}
	objs, err := v.podIdx.ByIndex(byNode, node)
	if err != nil {
		return nil, fmt.Errorf("pods by node: %w", err)
	}
	var out []*Pod
	for _, o := range objs {
		out = append(out, podFrom(o.(*corev1.Pod)))
	}
	slices.SortFunc(out, func(a, b *Pod) int { return cmp.Compare(a.Key(), b.Key()) })
	return out, nil
}

// PodByIP returns the pod that has the address (not a host-network pod:
// that address names its node). When a finished pod's address was reused,
// the running one wins.
func (v *View) PodByIP(ip netip.Addr) (*Pod, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	objs, err := v.podIdx.ByIndex(byIP, ip.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("pods by IP: %w", err)
	}
	var pods []*Pod
	for _, o := range objs {
		pods = append(pods, podFrom(o.(*corev1.Pod)))
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no pod has IP %s", ip)
	}
	return best(pods), nil
}

// Service returns the Service NS/NAME with its endpoints.
func (v *View) Service(ns, name string) (*Service, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	if err := validNamespaced("svc", ns, name); err != nil {
		return nil, err
	}
	s, err := v.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, v.serviceNotFound(ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("svc %s/%s: %w", ns, name, err)
	}
	return v.serviceFrom(s)
}

// ServiceByIP returns the Service that has the ClusterIP.
func (v *View) ServiceByIP(ip netip.Addr) (*Service, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	objs, err := v.svcIdx.ByIndex(byClusterIP, ip.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("services by ClusterIP: %w", err)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no Service has ClusterIP %s", ip)
	}
	return v.serviceFrom(objs[0].(*corev1.Service))
}

// Node returns the node with its kube-proxy's state. An IP address names
// the node whose InternalIP it is, unless a node has it as its name: what a
// scrape target's instance label holds.
func (v *View) Node(name string) (*Node, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	ip, ipErr := netip.ParseAddr(name)
	if err := validNodeName(name); err != nil {
		if ipErr == nil {
			return v.NodeByIP(ip)
		}
		return nil, err
	}
	n, err := v.nodes.Get(name)
	if apierrors.IsNotFound(err) && ipErr == nil {
		return v.NodeByIP(ip)
	}
	if apierrors.IsNotFound(err) {
		return nil, v.nodeNotFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return v.nodeFrom(n), nil
}

// NodeByIP returns the node that has the InternalIP.
func (v *View) NodeByIP(ip netip.Addr) (*Node, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	objs, err := v.nodeIdx.ByIndex(byIP, ip.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("nodes by IP: %w", err)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no node has InternalIP %s", ip)
	}
	return v.nodeFrom(objs[0].(*corev1.Node)), nil
}

// Agent returns the netdiag agent pod on the node: of several (a rollout,
// a pod being replaced), the Running and ready one, then the newest. The
// error says where agents do run.
func (v *View) Agent(node string) (*Pod, error) {
	if err := v.ready(); err != nil {
		return nil, err
	}
	if err := validNodeName(node); err != nil {
		return nil, err
	}
	pods, err := v.rolePods(roleAgent, node)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("pods labelled %s in namespace %s", v.opts.AgentSelector, v.opts.AgentNamespace)
	if len(pods) == 0 {
		on := v.roleNodes(roleAgent)
		slices.Sort(on)
		return nil, fmt.Errorf("no netdiag agent on node %s (looked for %s; agents run on: %s)", node, where, listSome(on, 8))
	}
	p := best(pods)
	if p.Phase != string(corev1.PodRunning) || len(p.IPs) == 0 || p.Terminating {
		return nil, fmt.Errorf("the netdiag agent on node %s is not running: pod %s is %s", node, p.Key(), p.State)
	}
	return p, nil
}

func (v *View) rolePods(role, node string) ([]*Pod, error) {
	objs, err := v.podIdx.ByIndex(byRole, role+node)
	if err != nil {
		return nil, fmt.Errorf("pods by role: %w", err)
	}
	var out []*Pod
	for _, o := range objs {
		out = append(out, podFrom(o.(*corev1.Pod)))
	}
	return out, nil
}

// best picks, of pods that play one part, the one that plays it now:
// Running and ready, then Running, then Pending, then the rest; not
// terminating; then the newest; then by name, so the answer is stable.
func best(pods []*Pod) *Pod {
	rank := func(p *Pod) int {
		r := 0
		switch {
		case p.running():
			r = 3
		case p.Phase == string(corev1.PodRunning):
			r = 2
		case p.Phase == string(corev1.PodPending):
			r = 1
		}
		if !p.Terminating {
			r += 10
		}
		return r
	}
	return slices.MinFunc(pods, func(a, b *Pod) int {
		if c := cmp.Compare(rank(b), rank(a)); c != 0 {
			return c
		}
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Key(), b.Key())
	})
}

func podFrom(p *corev1.Pod) *Pod {
	out := &Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork,
		Phase: string(p.Status.Phase), Labels: maps.Clone(p.Labels), Created: p.CreationTimestamp.Time, Terminating: p.DeletionTimestamp != nil}
	if out.Phase == "" {
		out.Phase = string(corev1.PodPending)
	}
	for _, s := range podIPStrings(p) {
		out.IPs = append(out.IPs, netip.MustParseAddr(s))
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto := string(cp.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			out.Ports = append(out.Ports, ContainerPort{Container: c.Name, Name: cp.Name, Port: int(cp.ContainerPort), Protocol: proto})
		}
	}
	out.State = podState(p, out)
	return out
}

// podState says what the pod is doing in the words kubectl describe would
// use: the phase, then the most telling reason.
func podState(p *corev1.Pod, pp *Pod) string {
	if pp.running() {
		return "Running"
	}
	st := pp.Phase
	switch {
	case pp.Terminating:
		st += ", terminating"
	case pp.Phase == string(corev1.PodRunning):
		st += ", not ready"
	}
	if why := podWhy(p); why != "" {
		st += ": " + why
	}
	return st
}

func podWhy(p *corev1.Pod) string {
	s := &p.Status
	if s.Reason != "" {
		return join(s.Reason, s.Message)
	}
	for _, c := range s.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return join(c.Reason, c.Message)
		}
	}
	for _, list := range [][]corev1.ContainerStatus{s.InitContainerStatuses, s.ContainerStatuses} {
		for _, c := range list {
			if w := c.State.Waiting; w != nil && w.Reason != "" {
				return withRestarts("container "+c.Name+": "+join(w.Reason, w.Message), c.RestartCount)
			}
			// A container that ended well (an init container done) says
			// nothing about a pod that is not ready.
			if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
				return withRestarts(fmt.Sprintf("container %s: %s (exit code %d)", c.Name, join(t.Reason, t.Message), t.ExitCode), c.RestartCount)
			}
		}
	}
	for _, c := range s.Conditions {
		if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
			return join(c.Reason, c.Message)
		}
	}
	return ""
}

func withRestarts(s string, n int32) string {
	if n > 0 {
		s += fmt.Sprintf(", %d restarts", n)
	}
	return s
}

// join is "reason: message", the message trimmed to a line of a finding.
func join(reason, message string) string {
	message = strings.Join(strings.Fields(message), " ")
	if len(message) > 200 {
		message = strings.ToValidUTF8(message[:197], "") + "..."
	}
	switch {
	case reason == "":
		return message
	case message == "":
		return reason
	}
	return reason + ": " + message
}

func (v *View) serviceFrom(s *corev1.Service) (*Service, error) {
	out := &Service{Namespace: s.Namespace, Name: s.Name, Type: string(s.Spec.Type), Selector: maps.Clone(s.Spec.Selector), ExternalName: s.Spec.ExternalName}
	if out.Type == "" {
		out.Type = string(corev1.ServiceTypeClusterIP)
	}
	for _, ip := range serviceIPStrings(s) {
		if ip == corev1.ClusterIPNone {
			out.Headless = true
			continue
		}
		if a, err := parseAddr(ip); err == nil {
			out.ClusterIPs = append(out.ClusterIPs, a)
		}
	}
	for _, sp := range s.Spec.Ports {
		proto := string(sp.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		tp := sp.TargetPort.String()
		if sp.TargetPort.IntVal == 0 && sp.TargetPort.StrVal == "" {
			// The API defaults an unset targetPort to the port.
			tp = strconv.Itoa(int(sp.Port))
		}
		out.Ports = append(out.Ports, ServicePort{Name: sp.Name, Port: int(sp.Port), Protocol: proto, TargetPort: tp})
	}
	objs, err := v.sliceIdx.ByIndex(byService, s.Namespace+"/"+s.Name)
	if err != nil {
		return nil, fmt.Errorf("EndpointSlices of svc %s/%s: %w", s.Namespace, s.Name, err)
	}
	// An address can sit in two slices for a moment while the controller
	// moves it; it is listed once, with the ports of both and the
	// conditions of the slice first by name, so the answer is stable.
	slices.SortFunc(objs, func(a, b any) int {
		return cmp.Compare(a.(*discoveryv1.EndpointSlice).Name, b.(*discoveryv1.EndpointSlice).Name)
	})
	seen := map[netip.Addr]int{}
	for _, o := range objs {
		sl := o.(*discoveryv1.EndpointSlice)
		if sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		ports := map[string]int{}
		for _, p := range sl.Ports {
			if p.Port == nil {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = int(*p.Port)
		}
		for _, e := range sl.Endpoints {
			ep := Endpoint{Ready: isTrue(e.Conditions.Ready, true), Terminating: isTrue(e.Conditions.Terminating, false)}
			// serving, when not given, is what ready says (the API's
			// own rule for clients that predate it).
			ep.Serving = isTrue(e.Conditions.Serving, ep.Ready)
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ns := e.TargetRef.Namespace
				if ns == "" {
					ns = s.Namespace
				}
				ep.Pod = ns + "/" + e.TargetRef.Name
			}
			if e.NodeName != nil {
				ep.Node = *e.NodeName
			}
			for _, a := range e.Addresses {
				ip, err := parseAddr(a)
				if err != nil {
					continue
				}
				if i, ok := seen[ip]; ok {
					for k, p := range ports {
						out.Endpoints[i].Ports[k] = p
					}
					continue
				}
				ep.IP = ip
				ep.Ports = maps.Clone(ports)
				seen[ip] = len(out.Endpoints)
				out.Endpoints = append(out.Endpoints, ep)
			}
		}
	}
	slices.SortFunc(out.Endpoints, func(a, b Endpoint) int { return a.IP.Compare(b.IP) })
	return out, nil
}

func isTrue(b *bool, unset bool) bool {
	if b == nil {
		return unset
	}
	return *b
}

func (v *View) nodeFrom(n *corev1.Node) *Node {
	out := &Node{Name: n.Name, Unschedulable: n.Spec.Unschedulable, Condition: "Ready"}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := parseAddr(a.Address); err == nil {
			out.InternalIPs = append(out.InternalIPs, ip)
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p)
		}
	}
	var ready *corev1.NodeCondition
	var netDown string
	for i, c := range n.Status.Conditions {
		switch c.Type {
		case corev1.NodeReady:
			ready = &n.Status.Conditions[i]
		case corev1.NodeNetworkUnavailable:
			if c.Status == corev1.ConditionTrue {
				netDown = "NetworkUnavailable: " + join(c.Reason, c.Message)
			}
		}
	}
	switch {
	case ready == nil:
		out.Condition = "Unknown: the node reports no Ready condition"
	case ready.Status == corev1.ConditionTrue:
		out.Ready = true
	case ready.Status == corev1.ConditionUnknown:
		out.Condition = "Unknown"
	default:
		out.Condition = "NotReady"
	}
	if !out.Ready && ready != nil {
		if why := join(ready.Reason, ready.Message); why != "" {
			out.Condition += ": " + why
		}
		if !ready.LastTransitionTime.IsZero() {
			out.Condition += fmt.Sprintf(" (since %s)", ready.LastTransitionTime.UTC().Format(time.RFC3339))
		}
	}
	if netDown != "" {
		out.Ready = false
		if out.Condition == "Ready" {
			out.Condition = netDown
		} else {
			out.Condition += "; " + netDown
		}
	}
	out.Overlay = overlayOf(n)
	out.KubeProxy, out.KubeProxyPod = v.kubeProxyOn(n.Name)
	return out
}

// overlayOf reads flannel's annotations: its backend, the VXLAN device
// (flannel.VNI) and the address it sends from.
func overlayOf(n *corev1.Node) Overlay {
	var o Overlay
	bt, ok := n.Annotations[flannelBackendType]
	if !ok {
		return o
	}
	o.CNI, o.Backend = "flannel", bt
	if bt == "vxlan" {
		var data struct {
			VNI int `json:"VNI"`
		}
		vni := 1
		if err := json.Unmarshal([]byte(n.Annotations[flannelBackendData]), &data); err == nil && data.VNI > 0 {
			vni = data.VNI
		}
		o.Device, o.Port = fmt.Sprintf("flannel.%d", vni), flannelVXLANPort
	}
	if ip, err := parseAddr(n.Annotations[flannelPublicIP]); err == nil {
		o.PublicIP = ip
	}
	_, o.PublicIPSet = n.Annotations[flannelPublicIPSet]
	return o
}

// kubeProxyOn is kube-proxy's state on the node, and its pod's name.
func (v *View) kubeProxyOn(node string) (state, pod string) {
	pods, err := v.rolePods(roleKubeProxy, node)
	if err != nil {
		return "", ""
	}
	if len(pods) == 0 {
		others := v.roleNodes(roleKubeProxy)
		if len(others) == 0 {
			return "", ""
		}
		return fmt.Sprintf("no kube-proxy pod for this node (kube-proxy runs on %d other node(s))", len(others)), ""
	}
	p := best(pods)
	state = p.State
	if !p.running() {
		// The pod before it often says more: an evicted kube-proxy is
		// replaced by one that stays Pending.
		n := 0
		for _, o := range pods {
			if o != p && o.State != p.State && n < 2 {
				state += fmt.Sprintf("; earlier pod %s: %s", o.Name, o.State)
				n++
			}
		}
	}
	return state, p.Key()
}

// podsMatching lists the namespace's pods the selector selects.
func (v *View) podsMatching(ns string, sel map[string]string) []*Pod {
	objs, err := v.pods.Pods(ns).List(labels.SelectorFromSet(sel))
	if err != nil {
		return nil
	}
	var out []*Pod
	for _, p := range objs {
		out = append(out, podFrom(p))
	}
	slices.SortFunc(out, func(a, b *Pod) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	return a.Unmap(), nil
}
