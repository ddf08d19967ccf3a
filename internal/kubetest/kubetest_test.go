package kubetest_test

import (
	"context"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/lab/labtest"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestAgentAPIs starts a real control plane, on loopback and inside a lab
// namespace, and uses every API the agent relies on: pods with a node and an
// IP, nodes, services, endpoint slices, service-account tokens checked by
// TokenReview, and RBAC answered by SubjectAccessReview.
func TestAgentAPIs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		netns bool
	}{
		{name: "loopback"},
		{name: "netns", netns: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts kubetest.Options
			var peer *labtest.Bare
			if tc.netns {
				// The apiserver in "api", a client in "peer": what an
				// agent in a lab pod sees.
				peer = labtest.NewBare(t, "kt", "api", "peer")
				peer.Link("api", "eth0", []string{"198.18.254.1/30"}, "peer", "eth0", []string{"198.18.254.2/30"}, 1500)
				opts = kubetest.Options{Netns: peer.Path("api"), Listen: "198.18.254.1"}
			}
			c := kubetest.Start(t, opts)
			t.Logf("time to ready: %s", c.Ready.Round(time.Millisecond))
			if c.Ready > 30*time.Second {
				t.Errorf("kube-apiserver took %s to be ready; about 4 s is expected", c.Ready)
			}
			if tc.netns {
				wantURL := "https://198.18.254.1:"
				if len(c.URL) <= len(wantURL) || c.URL[:len(wantURL)] != wantURL {
					t.Fatalf("URL = %s, want it on %s", c.URL, wantURL)
				}
				// Another namespace reaches it over the veth, verifying
				// the serving certificate for the lab address.
				fromPeer := rest.CopyConfig(c.Admin)
				fromPeer.Dial = labtest.OpenNS(t, peer.Path("peer")).Dial
				readyz(t, fromPeer)
			}
			exerciseAgentAPIs(t, c)
		})
	}
}

func readyz(t *testing.T, cfg *rest.Config) {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 5 * time.Second
	resp, err := hc.Get(cfg.Host + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /readyz: %s", resp.Status)
	}
}

func exerciseAgentAPIs(t *testing.T, c *kubetest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := c.Clientset()
	const ns, sa = "netdiag-test", "agent"

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}

	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:   node.Name,
			Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	// What the kubelet would report, through the status subresource.
	const podIP = "198.18.2.7"
	patch := []byte(`{"status":{"phase":"Running","podIP":"` + podIP + `","podIPs":[{"ip":"` + podIP + `"}]}}`)
	pod, err = cs.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("patch pod status: %v", err)
	}
	got, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod: %v", err)
	}
	if got.Spec.NodeName != "node-a" || got.Status.PodIP != podIP {
		t.Fatalf("pod read back: node %q IP %q, want node-a %s", got.Spec.NodeName, got.Status.PodIP, podIP)
	}

	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !netip.MustParsePrefix(kubetest.ServiceCIDR).Contains(ip) {
		t.Errorf("service ClusterIP %q, want one in %s", svc.Spec.ClusterIP, kubetest.ServiceCIDR)
	}
	ready := true
	port, proto := int32(8080), corev1.ProtocolTCP
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{podIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node.Name,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: new("http"), Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create endpoint slice: %v", err)
	}
	eps, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatalf("list endpoint slices of web: %v", err)
	}
	if len(eps.Items) != 1 || !slices.Equal(eps.Items[0].Endpoints[0].Addresses, []string{podIP}) {
		t.Fatalf("endpoint slices of web: %+v, want one with %s", eps.Items, podIP)
	}

	// A caller presents a token for the agent's audience; the agent asks
	// the apiserver who it is.
	token, err := c.ServiceAccountToken(ctx, ns, sa, []string{"netdiag-agent"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	review, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{"netdiag-agent"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token review: %v", err)
	}
	wantUser := "system:serviceaccount:" + ns + ":" + sa
	if !review.Status.Authenticated || review.Status.User.Username != wantUser || !slices.Contains(review.Status.Audiences, "netdiag-agent") {
		t.Fatalf("token review: authenticated %v as %q for %q (error %q), want %s for netdiag-agent",
			review.Status.Authenticated, review.Status.User.Username, review.Status.Audiences, review.Status.Error, wantUser)
	}
	// The same token is refused for another audience.
	other, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{"someone-else"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token review: %v", err)
	}
	if other.Status.Authenticated {
		t.Errorf("a netdiag-agent token authenticated for audience someone-else")
	}

	// Then whether it may create a diagnosis: not until RBAC says so.
	sar := func() *authorizationv1.SubjectAccessReviewStatus {
		t.Helper()
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   review.Status.User.Username,
				Groups: review.Status.User.Groups,
				UID:    review.Status.User.UID,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: "create", Group: "netdiag.io", Resource: "diagnoses",
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("subject access review: %v", err)
		}
		return &r.Status
	}
	if st := sar(); st.Allowed {
		t.Fatalf("RBAC allowed %s to create diagnoses before any grant: %+v", wantUser, st)
	}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "diagnose"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"netdiag.io"}, Resources: []string{"diagnoses"}, Verbs: []string{"create"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "diagnose"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "diagnose"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	// RBAC reads roles from an informer: the grant shows a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for st := sar(); !st.Allowed; st = sar() {
		if time.Now().After(deadline) {
			t.Fatalf("RBAC still denies %s after the role binding: %+v", wantUser, st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A token for the apiserver's own audience works as credentials.
	apiToken, err := c.ServiceAccountToken(ctx, ns, sa, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	asSA, err := kubernetes.NewForConfig(c.ConfigFor(apiToken))
	if err != nil {
		t.Fatal(err)
	}
	self, err := asSA.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review with the service-account token: %v", err)
	}
	if self.Status.UserInfo.Username != wantUser {
		t.Errorf("the service-account token is %q, want %s", self.Status.UserInfo.Username, wantUser)
	}
	if _, err := asSA.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		t.Errorf("the service account listed pods without a grant")
	}
}

// TestKubeconfig writes a kubeconfig with the admin and a token user and
// uses each context as a CLI would.
func TestKubeconfig(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token, err := c.ServiceAccountToken(ctx, "cli", "reader", nil, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(path, kubetest.User{Name: "reader", Token: token},
		kubetest.User{Name: "scheduler", CommonName: "system:kube-scheduler", Groups: []string{"lab"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		context, want string
	}{
		{"", "system:serviceaccount:cli:reader"}, // the current context is the first user's
		{"reader", "system:serviceaccount:cli:reader"},
		{"admin", kubetest.AdminUser},
		{"scheduler", "system:kube-scheduler"}, // a client certificate of its own
	} {
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: path},
			&clientcmd.ConfigOverrides{CurrentContext: tc.context}).ClientConfig()
		if err != nil {
			t.Fatalf("load %s context %q: %v", path, tc.context, err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("context %q: %v", tc.context, err)
		}
		if r.Status.UserInfo.Username != tc.want {
			t.Errorf("context %q is %q, want %s", tc.context, r.Status.UserInfo.Username, tc.want)
		}
	}
	if err := c.WriteKubeconfig(path, kubetest.User{Name: "admin", Token: token}); err == nil {
		t.Errorf("a second user named admin was accepted")
	}
}
