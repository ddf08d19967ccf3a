package kubeview

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// The test cluster is the lab's, as the API would show it: two nodes
// with flannel, web on node-a, client and CoreDNS on node-b, dual-stack
// pods, IPv4 Services, in the lab's address ranges.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// cluster is a set of API objects by "kind/namespace/name", for the cases
// to change before the view starts.
type cluster map[string]runtime.Object

func (c cluster) add(objs ...runtime.Object) {
	for _, o := range objs {
		m := o.(metav1.Object)
		c[kindOf(o)+"/"+keyOf(m.GetNamespace(), m.GetName())] = o
	}
}

func kindOf(o runtime.Object) string {
	switch o.(type) {
	case *corev1.Pod:
		return "pod"
	case *corev1.Node:
		return "node"
	case *corev1.Service:
		return "svc"
	case *discoveryv1.EndpointSlice:
		return "slice"
	case *networkingv1.NetworkPolicy:
		return "netpol"
	}
	return "other"
}

func (c cluster) pod(key string) *corev1.Pod     { return c["pod/"+key].(*corev1.Pod) }
func (c cluster) node(key string) *corev1.Node   { return c["node/"+key].(*corev1.Node) }
func (c cluster) svc(key string) *corev1.Service { return c["svc/"+key].(*corev1.Service) }
func (c cluster) slice(key string) *discoveryv1.EndpointSlice {
	return c["slice/"+key].(*discoveryv1.EndpointSlice)
}

func (c cluster) objects() []runtime.Object {
	var out []runtime.Object
	for _, k := range slices.Sorted(maps.Keys(c)) {
		out = append(out, c[k])
	}
	return out
}

func baseCluster() cluster {
	c := cluster{}
	c.add(
		mkNode("node-a", "198.18.0.11", "2001:2::11", "198.19.1.0/24", "2001:2:0:1::/64"),
		mkNode("node-b", "198.18.0.12", "2001:2::12", "198.19.2.0/24", "2001:2:0:2::/64"),

		mkPod("default", "web", "node-a", []string{"198.19.1.7", "2001:2:0:1::7"}, map[string]string{"app": "web"}, port("http", 8080)),
		mkPod("default", "api", "node-a", []string{"198.19.1.8"}, map[string]string{"app": "api"}),
		mkPod("default", "client", "node-b", []string{"198.19.2.5", "2001:2:0:2::5"}, map[string]string{"app": "client", "tier": "front"}),
		mkPod("kube-system", "coredns-1", "node-b", []string{"198.19.2.3"}, map[string]string{"k8s-app": "kube-dns"}, port("dns", 53)),
		hostNet(mkPod("kube-system", "kube-proxy-a", "node-a", []string{"198.18.0.11"}, map[string]string{"k8s-app": "kube-proxy"})),
		hostNet(mkPod("kube-system", "kube-proxy-b", "node-b", []string{"198.18.0.12"}, map[string]string{"k8s-app": "kube-proxy"})),
		mkPod("netdiag", "agent-a", "node-a", []string{"198.19.1.2"}, map[string]string{"app.kubernetes.io/name": "netdiag-agent"}),
		mkPod("netdiag", "agent-b", "node-b", []string{"198.19.2.2"}, map[string]string{"app.kubernetes.io/name": "netdiag-agent"}),

		mkService("default", "web", "198.18.128.10", map[string]string{"app": "web"}, svcPort("http", 80, "TCP", intstr.FromString("http"))),
		mkSlice("default", "web", "web-x1", []discoveryv1.EndpointPort{epPort("http", 8080, "TCP")},
			mkEP("198.19.1.7", "default/web", "node-a", true, true, false)),
		mkSlice("default", "web", "web-x2", []discoveryv1.EndpointPort{epPort("http", 8080, "TCP")},
			mkEP("2001:2:0:1::7", "default/web", "node-a", true, true, false)),
		mkService("kube-system", "kube-dns", "198.18.128.53", map[string]string{"k8s-app": "kube-dns"},
			svcPort("dns", 53, "UDP", intstr.FromInt32(53)), svcPort("dns-tcp", 53, "TCP", intstr.FromInt32(53))),
		mkSlice("kube-system", "kube-dns", "kube-dns-x1", []discoveryv1.EndpointPort{epPort("dns", 53, "UDP"), epPort("dns-tcp", 53, "TCP")},
			mkEP("198.19.2.3", "kube-system/coredns-1", "node-b", true, true, false)),
		mkService("default", "kubernetes", "198.18.128.1", nil, svcPort("https", 443, "TCP", intstr.FromInt32(6443))),
	)
	return c
}

func mkNode(name, ip4, ip6 string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0),
		Labels: map[string]string{"kubernetes.io/hostname": name},
		Annotations: map[string]string{
			flannelBackendType: "vxlan", flannelBackendData: `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`, flannelPublicIP: ip4,
			"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 1000),
		},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}},
	}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip4}, {Type: corev1.NodeInternalIP, Address: ip6}, {Type: corev1.NodeHostName, Address: name}}
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
	}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example/big:1"}, SizeBytes: 1 << 30}}
	return n
}

func mkPod(ns, name, node string, ips []string, lbl map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: lbl, CreationTimestamp: metav1.NewTime(t0),
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 1000)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "registry.example/app:1", Ports: ports,
			Env: []corev1.EnvVar{{Name: "BIG", Value: strings.Repeat("y", 1000)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		}, ContainerStatuses: []corev1.ContainerStatus{{Name: "main", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func port(name string, n int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: corev1.ProtocolTCP}
}

func hostNet(p *corev1.Pod) *corev1.Pod {
	p.Spec.HostNetwork = true
	return p
}

// notReady makes a running pod unready, as a failing readiness probe does.
func notReady(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [main]"}}
	p.Status.ContainerStatuses[0].Ready = false
}

func mkService(ns, name, ip string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-svc-" + name), Labels: map[string]string{}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}, Selector: sel, Ports: ports}}
	if name == "kube-dns" {
		s.Labels["k8s-app"] = "kube-dns"
	}
	return s
}

func svcPort(name string, p int32, proto string, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: p, Protocol: corev1.Protocol(proto), TargetPort: target}
}

func mkSlice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	at := discoveryv1.AddressTypeIPv4
	if len(eps) > 0 && strings.Contains(eps[0].Addresses[0], ":") {
		at = discoveryv1.AddressTypeIPv6
	}
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: at, Ports: ports, Endpoints: eps}
}

func epPort(name string, p int32, proto string) discoveryv1.EndpointPort {
	pr := corev1.Protocol(proto)
	return discoveryv1.EndpointPort{Name: &name, Port: &p, Protocol: &pr}
}

func mkEP(ip, pod, node string, ready, serving, terminating bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}}
	if node != "" {
		e.NodeName = &node
	}
	if ns, name, ok := strings.Cut(pod, "/"); ok {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}
	}
	return e
}

func mkPolicy(ns, name string, sel metav1.LabelSelector, types []networkingv1.PolicyType, ingress, egress int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: types}}
	for range ingress {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
	}
	for range egress {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{})
	}
	return np
}

// startView starts a view of the objects and stops it when the test ends.
func startView(t *testing.T, objs []runtime.Object, opts Options) (*View, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v := New(cs, opts)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(v.Stop)
	return v, cs
}

func check(r *Resolved, name, subject string) *Check {
	for i, c := range r.Checks {
		if c.Name == name && (subject == "" || c.Subject == subject) {
			return &r.Checks[i]
		}
	}
	return nil
}

func checkList(r *Resolved) string {
	var b strings.Builder
	for _, c := range r.Checks {
		b.WriteString("\n  " + c.Name + " " + string(c.Result) + " [" + c.Subject + "] " + c.Message)
	}
	return b.String()
}
