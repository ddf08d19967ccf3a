package kubeview

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/kubetest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// TestRealAPIServer runs the view against a real kube-apiserver (on
// loopback, from internal/kubetest) as a service account with RBAC: a
// role without networkpolicies makes Start fail naming them; with them,
// a question resolves on objects as the API server stores and defaults
// them (an allocated ClusterIP, a NetworkPolicy's defaulted policyTypes),
// and a change after Start reaches the view through the watch.
func TestRealAPIServer(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	admin := c.Clientset()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// The view's service account and a role without networkpolicies.
	token, err := c.ServiceAccountToken(ctx, "netdiag", "netdiag", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "netdiag-view"}, Rules: rules}
	must(admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}))
	must(admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "netdiag-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "netdiag-view"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "netdiag", Name: "netdiag"}}}, metav1.CreateOptions{}))

	seed(ctx, t, admin)
	client, err := kubernetes.NewForConfig(c.ConfigFor(token))
	if err != nil {
		t.Fatal(err)
	}
	quiet := Options{Logger: slog.New(slog.DiscardHandler)}

	v := New(client, quiet)
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	err = v.Start(short)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), `networkpolicies.networking.k8s.io (failed to list *v1.NetworkPolicy: networkpolicies.networking.k8s.io is forbidden: User "system:serviceaccount:netdiag:netdiag" cannot list resource "networkpolicies"`) {
		t.Fatalf("Start without RBAC on networkpolicies: %v", err)
	}
	t.Logf("the error a missing RBAC rule gives: %v", err)

	role.Rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}})
	must(admin.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}))
	// RBAC takes effect when the apiserver's authorizer sees the update:
	// retry Start on fresh views, boundedly.
	deadline := time.Now().Add(20 * time.Second)
	for {
		v = New(client, quiet)
		short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
		err = v.Start(short)
		cancelShort()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Start with RBAC on networkpolicies: %v", err)
		}
	}
	t.Cleanup(v.Stop)

	r, err := v.Resolve(Question{Kind: "pod", Name: "kv/client", To: "svc/kv/web:http"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := admin.CoreV1().Services("kv").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.To.Addr.String() != svc.Spec.ClusterIP || r.To.Port != 80 || r.Cluster.Service.TargetPort != 8080 || r.Dest.Pod == nil || r.Dest.Pod.Name != "web" ||
		r.Cluster.SourceNode.InternalIP != "198.18.0.12" || r.Cluster.SourceNode.PodCIDR != "198.19.2.0/24" || r.Source.Pod.UID == "" {
		t.Errorf("resolved: to %v service %+v dest %+v source node %+v", r.To, r.Cluster.Service, r.Dest, r.Cluster.SourceNode)
	}
	// The API server defaulted the policy's types to Ingress: it isolates
	// web, not client.
	if ck := check(r, CheckNetworkPolicy, "pod kv/web"); ck == nil || ck.Result != Note || !strings.Contains(ck.Message, "kv/deny (all pods; denies all ingress)") {
		t.Errorf("ingress check %+v", ck)
	}
	if ck := check(r, CheckNetworkPolicy, "pod kv/client"); ck == nil || ck.Result != Pass {
		t.Errorf("egress check %+v", ck)
	}

	// A change after Start arrives by the watch.
	sl, err := admin.DiscoveryV1().EndpointSlices("kv").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := false
	sl.Endpoints[0].Conditions.Ready = &f
	must(admin.DiscoveryV1().EndpointSlices("kv").Update(ctx, sl, metav1.UpdateOptions{}))
	deadline = time.Now().Add(5 * time.Second)
	for {
		r, err := v.Resolve(Question{Kind: "pod", Name: "kv/client", To: "svc/kv/web:80"})
		if err == nil && check(r, CheckEndpoints, "").Result == Fail {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view did not see the endpoint go unready within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// seed creates what the controllers and kubelets would: two nodes with
// their status, two running pods, a Service and its EndpointSlice, and a
// NetworkPolicy.
func seed(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kv"}}, metav1.CreateOptions{})
	fail("namespace", err)
	for _, n := range []*corev1.Node{
		mkNode("node-a", "198.18.0.11", "2001:2::11", "198.19.1.0/24"),
		mkNode("node-b", "198.18.0.12", "2001:2::12", "198.19.2.0/24"),
	} {
		status := n.Status
		n.Status, n.ManagedFields = corev1.NodeStatus{}, nil
		created, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		fail("node", err)
		created.Status = status
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		fail("node status", err)
	}
	for _, p := range []*corev1.Pod{
		mkPod("kv", "web", "node-a", []string{"198.19.1.7"}, map[string]string{"app": "web"}, port("http", 8080)),
		mkPod("kv", "client", "node-b", []string{"198.19.2.5"}, map[string]string{"app": "client"}),
	} {
		status := p.Status
		p.Status, p.ManagedFields, p.UID = corev1.PodStatus{}, nil, ""
		created, err := cs.CoreV1().Pods("kv").Create(ctx, p, metav1.CreateOptions{})
		fail("pod", err)
		created.Status = status
		_, err = cs.CoreV1().Pods("kv").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		fail("pod status", err)
	}
	svc := mkService("kv", "web", "", map[string]string{"app": "web"}, svcPort("http", 80, "TCP", intstr.FromString("http")))
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs, svc.UID = "", nil, ""
	_, err = cs.CoreV1().Services("kv").Create(ctx, svc, metav1.CreateOptions{})
	fail("service", err)
	_, err = cs.DiscoveryV1().EndpointSlices("kv").Create(ctx, mkSlice("kv", "web", "web-1", []discoveryv1.EndpointPort{epPort("http", 8080, "TCP")},
		mkEP("198.19.1.7", "kv/web", "node-a", true, true, false)), metav1.CreateOptions{})
	fail("endpointslice", err)
	_, err = cs.NetworkingV1().NetworkPolicies("kv").Create(ctx, mkPolicy("kv", "deny", metav1.LabelSelector{}, nil, 0, 0), metav1.CreateOptions{})
	fail("networkpolicy", err)
}
