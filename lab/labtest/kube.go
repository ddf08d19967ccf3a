package labtest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdiag/netdiag/lab"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Mirror writes the lab into a real API server as Kubernetes would know
// it: its nodes (InternalIPs, PodCIDRs, Ready), its pods on their nodes
// with their IPs (dual-stack), kube-proxy's pod on each node in the lab's
// state for it, and its Services with their EndpointSlices. The lab's pods
// are bare namespaces, so the pods' IPs are written by hand, as a kubelet
// would report them.
func Mirror(ctx context.Context, client kubernetes.Interface, st *lab.Status) error {
	for _, n := range st.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name},
			Annotations: map[string]string{"flannel.alpha.coreos.com/backend-type": n.Overlay.Type,
				"flannel.alpha.coreos.com/backend-data": fmt.Sprintf(`{"VNI":%d,"VtepMAC":%q}`, n.Overlay.VNI, n.Overlay.MAC),
				"flannel.alpha.coreos.com/public-ip":    n.InternalIP}},
			Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR, n.PodCIDR6}}}
		created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		created.Status = corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.InternalIP}, {Type: corev1.NodeInternalIP, Address: n.InternalIP6}, {Type: corev1.NodeHostName, Address: n.Name}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		}
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
		phase, reason, msg := corev1.PodRunning, "", ""
		if n.KubeProxy != "Running" && n.KubeProxy != "" {
			p, rest, _ := strings.Cut(n.KubeProxy, ": ")
			phase = corev1.PodPhase(p)
			reason, msg, _ = strings.Cut(rest, ": ")
		}
		kp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy-" + n.Name, Labels: map[string]string{"k8s-app": "kube-proxy"}},
			Spec: corev1.PodSpec{NodeName: n.Name, HostNetwork: true, Containers: []corev1.Container{{Name: "kube-proxy", Image: "kube-proxy", ImagePullPolicy: corev1.PullNever}}}}
		kpStatus := corev1.PodStatus{Phase: phase, Reason: reason, Message: msg, HostIP: n.InternalIP, PodIP: n.InternalIP}
		if phase == corev1.PodRunning {
			kpStatus.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		if err := createPod(ctx, client, kp, kpStatus); err != nil {
			return err
		}
	}
	// The pods stand for the lab's own. Their images exist nowhere: a
	// real kubelet that meets them (a test runs one on a lab node) must
	// not try to pull them, which would send it to a registry the lab
	// cannot reach and, pulls being serialized, hold every other pod of
	// that node behind the timeouts. Hence PullNever, here and above.
	for _, p := range st.Pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: map[string]string{"app": p.Name}},
			Spec: corev1.PodSpec{NodeName: p.Node, Containers: []corev1.Container{{Name: p.Name, Image: p.Name, ImagePullPolicy: corev1.PullNever}}}}
		if p.Namespace == "kube-system" && strings.HasPrefix(p.Name, "coredns") {
			pod.Labels = map[string]string{"k8s-app": "kube-dns"}
		}
		for _, port := range p.Ports {
			pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: int32(port)})
		}
		if err := ensureNamespace(ctx, client, p.Namespace); err != nil {
			return err
		}
		st := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP, PodIPs: []corev1.PodIP{{IP: p.IP}}}
		if p.IP6 != "" {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: p.IP6})
		}
		ready := corev1.ConditionFalse
		if p.Ready {
			ready = corev1.ConditionTrue
		}
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		if err := createPod(ctx, client, pod, st); err != nil {
			return err
		}
	}
	for _, s := range st.Services {
		if err := ensureNamespace(ctx, client, s.Namespace); err != nil {
			return err
		}
		if err := mirrorService(ctx, client, s); err != nil {
			return err
		}
	}
	return nil
}

func ensureNamespace(ctx context.Context, client kubernetes.Interface, name string) error {
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

func createPod(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, st corev1.PodStatus) error {
	created, err := client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	created.Status = st
	if _, err := client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

func mirrorService(ctx context.Context, client kubernetes.Interface, s lab.Service) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: corev1.ServiceSpec{ClusterIP: s.ClusterIP, Type: corev1.ServiceTypeClusterIP}}
	if s.Name == "kubernetes" && s.Namespace == "default" {
		return nil // the API server keeps its own
	}
	var ports []discoveryv1.EndpointPort
	for _, p := range s.Ports {
		proto := corev1.Protocol(strings.ToUpper(p.Protocol))
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: proto, Port: int32(p.Port), TargetPort: intstr.FromInt32(int32(p.TargetPort))})
		name, port := p.Name, int32(p.TargetPort)
		ports = append(ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &port})
	}
	for _, e := range s.Endpoints {
		if e.Pod != "" {
			ns, name, _ := strings.Cut(e.Pod, "/")
			if ns == s.Namespace {
				svc.Spec.Selector = map[string]string{"app": name}
				if s.Namespace == "kube-system" && strings.HasPrefix(name, "coredns") {
					svc.Spec.Selector = map[string]string{"k8s-app": "kube-dns"}
				}
			}
		}
	}
	if _, err := client.CoreV1().Services(s.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("service %s: %w", s.Key(), err)
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name + "-lab",
		Labels: map[string]string{discoveryv1.LabelServiceName: s.Name, discoveryv1.LabelManagedBy: "netdiag-lab"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports}
	for _, e := range s.Endpoints {
		if _, err := netip.ParseAddr(e.IP); err != nil {
			continue
		}
		ready := e.Ready
		node := e.Node
		ep := discoveryv1.Endpoint{Addresses: []string{e.IP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready}, NodeName: &node}
		if e.Pod != "" {
			ns, name, _ := strings.Cut(e.Pod, "/")
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}
		}
		slice.Endpoints = append(slice.Endpoints, ep)
	}
	if _, err := client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("endpointslice of %s: %w", s.Key(), err)
	}
	return nil
}
