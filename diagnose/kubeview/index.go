package kubeview

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The annotations flannel writes on its node, the only ones kept.
const (
	flannelBackendType = "flannel.alpha.coreos.com/backend-type"
	flannelBackendData = "flannel.alpha.coreos.com/backend-data"
	flannelPublicIP    = "flannel.alpha.coreos.com/public-ip"
	flannelPublicIPSet = "flannel.alpha.coreos.com/public-ip-overwrite"
)

// slim is the informers' transform: it keeps what the view reads and drops
// the rest before the object enters the cache, so the caches of a big
// cluster stay small. Everywhere: managedFields, annotations (a
// last-applied-configuration can be larger than the object), owner
// references and finalizers go. Pods keep their labels, node, host-network
// flag, container names and ports, phase, reason, message, IPs, the
// PodScheduled, Ready and ContainersReady conditions and the containers'
// ready/state/restarts, and, for a pod not yet bound to a node, the node
// its DaemonSet aims it at. Nodes keep their PodCIDRs, InternalIP and
// ExternalIP addresses, the Ready and NetworkUnavailable conditions, the
// unschedulable flag and flannel's annotations; their labels, images,
// capacity and node info go. Services, EndpointSlices and NetworkPolicies
// keep their spec whole. It builds new objects rather than editing the ones
// it is given, and slimming a slimmed object changes nothing.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return slimPod(o), nil
	case *corev1.Node:
		return slimNode(o), nil
	case *corev1.Service:
		c := *o
		c.ObjectMeta = slimMeta(o.ObjectMeta)
		return &c, nil
	case *discoveryv1.EndpointSlice:
		c := *o
		c.ObjectMeta = slimMeta(o.ObjectMeta)
		return &c, nil
	case *networkingv1.NetworkPolicy:
		c := *o
		c.ObjectMeta = slimMeta(o.ObjectMeta)
		return &c, nil
	}
	return obj, nil
}

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp}
}

func slimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{ObjectMeta: slimMeta(p.ObjectMeta)}
	out.Spec.NodeName, out.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	if p.Spec.NodeName == "" {
		if n := daemonSetNode(p); n != "" {
			out.Spec.Affinity = nodeNameAffinity(n)
		}
	}
	for _, c := range p.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
	}
	s := &p.Status
	out.Status = corev1.PodStatus{Phase: s.Phase, Reason: s.Reason, Message: s.Message,
		PodIP: s.PodIP, PodIPs: s.PodIPs, HostIP: s.HostIP, HostIPs: s.HostIPs}
	for _, c := range s.Conditions {
		switch c.Type {
		case corev1.PodScheduled, corev1.PodReady, corev1.ContainersReady:
			out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
		}
	}
	slimStatuses := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		var out []corev1.ContainerStatus
		for _, c := range in {
			out = append(out, corev1.ContainerStatus{Name: c.Name, Ready: c.Ready, RestartCount: c.RestartCount, State: c.State})
		}
		return out
	}
	out.Status.InitContainerStatuses = slimStatuses(s.InitContainerStatuses)
	out.Status.ContainerStatuses = slimStatuses(s.ContainerStatuses)
	return out
}

func slimNode(n *corev1.Node) *corev1.Node {
	out := &corev1.Node{ObjectMeta: slimMeta(n.ObjectMeta)}
	out.Labels = nil
	for _, k := range []string{flannelBackendType, flannelBackendData, flannelPublicIP, flannelPublicIPSet} {
		if v, ok := n.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	out.Spec.PodCIDR, out.Spec.PodCIDRs, out.Spec.Unschedulable = n.Spec.PodCIDR, n.Spec.PodCIDRs, n.Spec.Unschedulable
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady || c.Type == corev1.NodeNetworkUnavailable {
			out.Status.Conditions = append(out.Status.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message, LastTransitionTime: c.LastTransitionTime})
		}
	}
	return out
}

// daemonSetNode is the node a DaemonSet's pod is meant for while it is
// not bound yet: the DaemonSet controller pins each pod to its node with a
// required node affinity on metadata.name. A kube-proxy pod stuck Pending
// has no spec.nodeName, and this is how it is told apart.
func daemonSetNode(p *corev1.Pod) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

func nodeNameAffinity(node string) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}},
	}}}
}

// podNode is where the pod runs, or is meant to run.
func podNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	return daemonSetNode(p)
}

func podNodeIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// podIPIndex indexes a pod by its own addresses. A host-network pod has
// its node's, which name the node rather than the pod.
func podIPIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.HostNetwork {
		return nil, nil
	}
	return podIPStrings(p), nil
}

func podIPStrings(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		if a, err := parseAddr(ip.IP); err == nil {
			out = append(out, a.String())
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		if a, err := parseAddr(p.Status.PodIP); err == nil {
			out = append(out, a.String())
		}
	}
	return out
}

func nameIndex(obj any) ([]string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	return []string{m.GetName()}, nil
}

// podRoleIndex marks the pods the view looks up per node: the netdiag
// agent and kube-proxy.
func (v *View) podRoleIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	node := podNode(p)
	if node == "" {
		return nil, nil
	}
	var out []string
	set := labels.Set(p.Labels)
	if v.agentSel != nil && p.Namespace == v.opts.AgentNamespace && v.agentSel.Matches(set) {
		out = append(out, roleAgent+node)
	}
	if v.kubeProxySel != nil && p.Namespace == v.opts.KubeProxyNamespace && v.kubeProxySel.Matches(set) {
		out = append(out, roleKubeProxy+node)
	}
	return out, nil
}

const (
	roleAgent     = "agent/"
	roleKubeProxy = "kube-proxy/"
)

func serviceIPIndex(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, ip := range serviceIPStrings(s) {
		if a, err := parseAddr(ip); err == nil {
			out = append(out, a.String())
		}
	}
	return out, nil
}

func serviceIPStrings(s *corev1.Service) []string {
	if len(s.Spec.ClusterIPs) > 0 {
		return s.Spec.ClusterIPs
	}
	if s.Spec.ClusterIP != "" {
		return []string{s.Spec.ClusterIP}
	}
	return nil
}

func sliceServiceIndex(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

func nodeIPIndex(obj any) ([]string, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := parseAddr(a.Address); err == nil {
			out = append(out, ip.String())
		}
	}
	return out, nil
}

// keyOf is the cache key of a namespaced object.
func keyOf(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// roleNodes lists the nodes that have a pod of the role, from the index's
// values.
func (v *View) roleNodes(role string) []string {
	var out []string
	for _, k := range v.podIdx.ListIndexFuncValues(byRole) {
		if n, ok := strings.CutPrefix(k, role); ok {
			if objs, _ := v.podIdx.ByIndex(byRole, k); len(objs) > 0 {
				out = append(out, n)
			}
		}
	}
	return out
}
