package kubeview

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Result is a check's outcome.
type Result string

const (
	Pass Result = "ok"
	Fail Result = "failed"
	// Note is a fact that can explain a failure without being one (a
	// NetworkPolicy selects the pod: only what it allows passes).
	Note Result = "note"
	// Skip is a check that could not be made; the message says why.
	Skip Result = "skipped"
)

// Check is one static check: what the API alone shows.
type Check struct {
	Name    string `json:"name"`
	Result  Result `json:"result"`
	Subject string `json:"subject"` // "svc default/web:80", "node node-b"
	// Message says what was seen, with the evidence, in a sentence a
	// finding can quote.
	Message string `json:"message"`
	// Verdict is the taxonomy's class/cause the check points at when it
	// fails, for the rules to weigh against the probes.
	Verdict string `json:"verdict,omitempty"`
}

// OK is true unless the check failed.
func (c Check) OK() bool { return c.Result != Fail }

// Check names.
const (
	CheckPodReady      = "pod-ready"
	CheckNodeReady     = "node-ready"
	CheckPodCIDR       = "node-podcidr"
	CheckOverlay       = "overlay-address"
	CheckKubeProxy     = "kube-proxy"
	CheckEndpoints     = "service-endpoints"
	CheckDNSEndpoints  = "dns-endpoints"
	CheckNetworkPolicy = "network-policy"
)

func (v *View) checks(r *Resolved, dns *Service, dnsErr error) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }
	src, dst := &r.Source, r.Dest

	if src.Kind == "pod" {
		add(podReadyCheck(src.Pod))
	}
	if src.Kind == "svc" {
		add(v.endpointsCheck(CheckEndpoints, "port-unreachable/no-endpoints", src.Service, nil))
	}
	if src.Node != "" {
		v.nodeChecks(src.Node, r.SourceNode, add)
		add(kubeProxyCheck(src.Node, r.SourceNode, v.opts))
	}
	if dst != nil {
		if dst.Kind == "pod" && dst.Pod != nil {
			add(podReadyCheck(dst.Pod))
		}
		if dst.Kind == "svc" {
			add(v.endpointsCheck(CheckEndpoints, "port-unreachable/no-endpoints", dst.Service, dst.Port))
		}
		if dst.Node != "" && dst.Node != src.Node {
			v.nodeChecks(dst.Node, r.DestNode, add)
		}
	}
	switch {
	case dns != nil:
		add(v.endpointsCheck(CheckDNSEndpoints, "dns-failure/dns-service-down", dns, dnsPort(dns)))
	default:
		add(Check{Name: CheckDNSEndpoints, Result: Skip, Subject: "svc " + v.opts.DNSService,
			Message: fmt.Sprintf("the cluster DNS Service was not found (%v), nor a Service labelled k8s-app=kube-dns in %s: set the DNS Service option to the one the pods' resolv.conf points at", dnsErr, v.dnsNS)})
	}
	if src.Pod != nil {
		add(v.policyCheck(src.Pod, networkingv1.PolicyTypeEgress))
	}
	if dst != nil && dst.Pod != nil {
		add(v.policyCheck(dst.Pod, networkingv1.PolicyTypeIngress))
	}
	return out
}

func podReadyCheck(p *Pod) Check {
	c := Check{Name: CheckPodReady, Subject: "pod " + p.Key()}
	if p.running() {
		c.Result = Pass
		c.Message = fmt.Sprintf("pod %s is Running and ready on node %s", p.Key(), p.Node)
		if len(p.IPs) > 0 {
			c.Message += " (" + addrs(p.IPs) + ")"
		}
		return c
	}
	c.Result = Fail
	c.Message = fmt.Sprintf("pod %s is %s", p.Key(), p.State)
	if p.Node == "" {
		c.Message += "; it is on no node yet"
	}
	return c
}

// nodeChecks are the node's own: Ready, PodCIDR, the overlay's address.
func (v *View) nodeChecks(name string, n *Node, add func(Check)) {
	subject := "node " + name
	if n == nil {
		add(Check{Name: CheckNodeReady, Result: Fail, Subject: subject, Message: fmt.Sprintf("node %s is not in the API (deleted?)", name)})
		return
	}
	c := Check{Name: CheckNodeReady, Subject: subject, Result: Pass, Message: fmt.Sprintf("node %s is Ready", name)}
	if !n.Ready {
		c.Result, c.Message = Fail, fmt.Sprintf("node %s is %s", name, n.Condition)
	}
	if n.Unschedulable {
		c.Message += " (cordoned: no new pods are scheduled on it)"
	}
	add(c)

	c = Check{Name: CheckPodCIDR, Subject: subject, Verdict: "cni-anomaly/podcidr-exhausted"}
	other, otherCIDR := "", ""
	if len(n.PodCIDRs) == 0 {
		other, otherCIDR = v.nodeWithPodCIDR()
	}
	switch {
	case len(n.PodCIDRs) > 0:
		c.Result, c.Message = Pass, fmt.Sprintf("node %s has PodCIDR %s", name, prefixes(n.PodCIDRs))
	case other != "" || n.Overlay.CNI == "flannel":
		c.Result = Fail
		c.Message = fmt.Sprintf("node %s has no PodCIDR", name)
		if other != "" {
			c.Message += fmt.Sprintf(" while node %s has %s", other, otherCIDR)
		}
		c.Message += ": a CNI that takes pod addresses from the node's PodCIDR (flannel, host-local IPAM) cannot start pods there; check kube-controller-manager's --allocate-node-cidrs and whether --cluster-cidr has room for another node (--node-cidr-mask-size)"
	default:
		c.Result, c.Message = Skip, "no node has a PodCIDR: the CNI allocates pod addresses itself, not from the nodes' PodCIDRs"
	}
	add(c)

	o := n.Overlay
	if o.CNI == "" || !o.PublicIP.IsValid() {
		return
	}
	c = Check{Name: CheckOverlay, Subject: subject, Verdict: "cni-anomaly/overlay-misconfigured"}
	dev := o.Backend
	if o.Device != "" {
		dev = fmt.Sprintf("%s, %s UDP %d", o.Device, o.Backend, o.Port)
	}
	switch {
	case slices.Contains(n.InternalIPs, o.PublicIP):
		c.Result, c.Message = Pass, fmt.Sprintf("flannel on node %s uses the node's InternalIP %s for its overlay (%s)", name, o.PublicIP, dev)
	case o.PublicIPSet:
		c.Result, c.Message = Pass, fmt.Sprintf("flannel on node %s uses %s for its overlay (%s), as its public-ip-overwrite annotation sets, not the InternalIP %s", name, o.PublicIP, dev, addrs(n.InternalIPs))
	default:
		c.Result = Fail
		c.Message = fmt.Sprintf("flannel on node %s uses %s for its overlay (%s; its public-ip annotation), not the node's InternalIP %s: the other nodes send its overlay traffic there and expect it from there; if that is not the address the nodes reach each other on, pin it with flannel's --iface or --iface-regex",
			name, o.PublicIP, dev, addrs(n.InternalIPs))
	}
	add(c)
}

// nodeWithPodCIDR finds a node that has a PodCIDR, to tell a node that
// lacks one from a CNI that does not use them.
func (v *View) nodeWithPodCIDR() (string, string) {
	objs, err := v.nodes.List(labels.Everything())
	if err != nil {
		return "", ""
	}
	slices.SortFunc(objs, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	for _, n := range objs {
		if n.Spec.PodCIDR != "" {
			return n.Name, n.Spec.PodCIDR
		}
	}
	return "", ""
}

func kubeProxyCheck(name string, n *Node, o Options) Check {
	c := Check{Name: CheckKubeProxy, Subject: "node " + name, Verdict: "cni-anomaly/kube-proxy-down"}
	switch {
	case n == nil:
		c.Result, c.Message = Skip, fmt.Sprintf("node %s is not in the API: kube-proxy not checked", name)
	case n.KubeProxy == "":
		c.Result = Skip
		c.Message = fmt.Sprintf("no pod labelled %s in %s on any node: the cluster may run without kube-proxy (a CNI that replaces it) or label it otherwise; not checked", o.KubeProxySelector, o.KubeProxyNamespace)
	case n.KubeProxy == "Running":
		c.Result, c.Message = Pass, fmt.Sprintf("kube-proxy (pod %s) is Running on node %s", n.KubeProxyPod, name)
	default:
		c.Result = Fail
		c.Message = fmt.Sprintf("kube-proxy is not running on node %s: ", name)
		if n.KubeProxyPod != "" {
			c.Message += "pod " + n.KubeProxyPod + " is "
		}
		c.Message += n.KubeProxy + "; without it the node's Service rules go stale or are missing"
	}
	return c
}

// endpointsCheck says whether the Service has ready endpoints for the
// port (for every port when sp is nil), and when not, why.
func (v *View) endpointsCheck(name, verdict string, s *Service, sp *ServicePort) Check {
	subject := "svc " + s.Key()
	var bs []Backend
	what := "svc " + s.Key()
	if sp != nil {
		subject += ":" + strconv.Itoa(sp.Port)
		what += " port " + sp.String()
		bs = s.Backends(sp)
	} else {
		for _, e := range s.Endpoints {
			bs = append(bs, Backend{Endpoint: e})
		}
	}
	c := Check{Name: name, Subject: subject, Verdict: verdict}
	var ready []string
	notReady, terminating := 0, 0
	for _, b := range bs {
		switch {
		case b.Ready && !b.Terminating:
			ready = append(ready, backendString(b))
		case b.Terminating:
			terminating++
		default:
			notReady++
		}
	}
	var others []string
	if notReady > 0 {
		others = append(others, fmt.Sprintf("%d not ready", notReady))
	}
	if terminating > 0 {
		others = append(others, fmt.Sprintf("%d terminating", terminating))
	}
	if len(ready) > 0 {
		c.Result = Pass
		c.Message = fmt.Sprintf("%s has %d ready endpoint(s): %s", what, len(ready), listSome(ready, 3))
		if len(others) > 0 {
			c.Message += "; " + strings.Join(others, ", ")
		}
		return c
	}
	c.Result = Fail
	c.Message = fmt.Sprintf("%s has no ready endpoint", what)
	if len(others) > 0 {
		c.Message += " (" + strings.Join(others, ", ") + ")"
	}
	c.Message += ": " + v.noEndpointsWhy(s, sp, bs)
	return c
}

func backendString(b Backend) string {
	s := b.IP.String()
	if b.Port != 0 {
		s = joinHostPort(b.IP.String(), b.Port)
	}
	if b.Pod != "" {
		s = "pod " + b.Pod + " " + s
	}
	if b.Node != "" {
		s += " on " + b.Node
	}
	return s
}

func joinHostPort(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(port)
	}
	return ip + ":" + strconv.Itoa(port)
}

// noEndpointsWhy explains a Service without ready endpoints from its
// selector and the pods it selects.
func (v *View) noEndpointsWhy(s *Service, sp *ServicePort, bs []Backend) string {
	if len(s.Selector) == 0 {
		return "it has no selector, so Kubernetes does not manage its endpoints; the EndpointSlices written for it (by hand or by another controller) list no ready address"
	}
	sel := labels.Set(s.Selector).String()
	pods := v.podsMatching(s.Namespace, s.Selector)
	if len(pods) == 0 {
		return fmt.Sprintf("its selector %s matches no pod in namespace %s%s", sel, s.Namespace, v.selectorHint(s))
	}
	var ready, unready []*Pod
	for _, p := range pods {
		if p.running() {
			ready = append(ready, p)
		} else {
			unready = append(unready, p)
		}
	}
	if len(ready) == 0 {
		var states []string
		for _, p := range unready {
			states = append(states, p.Name+" "+p.State)
		}
		return fmt.Sprintf("its selector %s matches %d pod(s), none ready: %s", sel, len(pods), listSome(states, 3))
	}
	var names []string
	for _, p := range ready {
		names = append(names, p.Name)
	}
	if sp != nil {
		if _, err := strconv.Atoi(sp.TargetPort); err != nil {
			var has []string
			for _, p := range ready {
				if slices.ContainsFunc(p.Ports, func(cp ContainerPort) bool { return cp.Name == sp.TargetPort }) {
					has = append(has, p.Name)
				}
			}
			if len(has) == 0 {
				return fmt.Sprintf("its targetPort %q names no container port of the %d ready pod(s) it selects (%s: %s)", sp.TargetPort, len(ready), ready[0].Name, containerPorts(ready[0].Ports))
			}
		}
	}
	return fmt.Sprintf("%d ready pod(s) match its selector %s (%s) but its EndpointSlices list none of them as ready: the EndpointSlice controller (kube-controller-manager) may be behind or down", len(ready), sel, listSome(names, 3))
}

// selectorHint names pods that carry the selector's keys with other
// values, the usual typo ("app=web" against pods labelled app=webapp).
func (v *View) selectorHint(s *Service) string {
	all := v.podsMatching(s.Namespace, nil)
	var near []string
	for _, p := range all {
		for k, want := range s.Selector {
			if got, ok := p.Labels[k]; ok && got != want {
				near = append(near, fmt.Sprintf("%s has %s=%s", p.Name, k, got))
				break
			}
		}
	}
	switch {
	case len(near) > 0:
		return " (" + listSome(near, 3) + ")"
	case len(all) > 0:
		var keys []string
		for k := range s.Selector {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return fmt.Sprintf(" (none of its %d pods has the label %s)", len(all), strings.Join(keys, ", "))
	}
	return " (the namespace has no pods)"
}

// policyCheck lists the NetworkPolicies that isolate the pod in one
// direction. Being selected is not a failure: only what the policies
// allow passes, which the probes then test.
func (v *View) policyCheck(p *Pod, dir networkingv1.PolicyType) Check {
	way := map[networkingv1.PolicyType]string{networkingv1.PolicyTypeIngress: "ingress to", networkingv1.PolicyTypeEgress: "egress from"}[dir]
	c := Check{Name: CheckNetworkPolicy, Subject: "pod " + p.Key()}
	if p.HostNetwork {
		c.Result, c.Message = Skip, fmt.Sprintf("pod %s is on its node's network: NetworkPolicies do not apply to it", p.Key())
		return c
	}
	names, err := v.policiesSelecting(p, dir)
	if err != nil {
		c.Result, c.Message = Skip, fmt.Sprintf("NetworkPolicies of %s: %v", p.Namespace, err)
		return c
	}
	if len(names) == 0 {
		d := strings.ToLower(string(dir))
		c.Result, c.Message = Pass, fmt.Sprintf("no NetworkPolicy in %s selects pod %s for %s: its %s is not restricted by policy", p.Namespace, p.Key(), d, d)
		return c
	}
	c.Result = Note
	c.Message = fmt.Sprintf("%s pod %s is restricted by NetworkPolicy %s: only what they allow passes", way, p.Key(), strings.Join(names, ", "))
	return c
}

// policiesSelecting names the policies of the pod's namespace whose
// podSelector selects it for the direction, each with its selector and,
// when it has no rule for the direction, "denies all".
func (v *View) policiesSelecting(p *Pod, dir networkingv1.PolicyType) ([]string, error) {
	pols, err := v.policies.NetworkPolicies(p.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	slices.SortFunc(pols, func(a, b *networkingv1.NetworkPolicy) int { return strings.Compare(a.Name, b.Name) })
	var out []string
	for _, np := range pols {
		ingress, egress := policyTypes(np)
		rules := len(np.Spec.Ingress)
		if dir == networkingv1.PolicyTypeEgress {
			rules = len(np.Spec.Egress)
		}
		if (dir == networkingv1.PolicyTypeIngress && !ingress) || (dir == networkingv1.PolicyTypeEgress && !egress) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			// The API validates selectors; one that does not parse
			// selects nothing here, as it would for the plugin.
			continue
		}
		if !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		what := "all pods"
		if !sel.Empty() {
			what = metav1.FormatLabelSelector(&np.Spec.PodSelector)
		}
		if rules == 0 {
			what += "; denies all " + strings.ToLower(string(dir))
		}
		out = append(out, fmt.Sprintf("%s/%s (%s)", np.Namespace, np.Name, what))
	}
	return out, nil
}

// policyTypes is the directions a policy isolates: its policyTypes, or,
// when they are not set (objects older than the field), ingress always and
// egress when it has egress rules, as the API defaults them.
func policyTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func addrs(ips []netip.Addr) string {
	var out []string
	for _, a := range ips {
		out = append(out, a.String())
	}
	return strings.Join(out, ", ")
}

func prefixes(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ", ")
}
