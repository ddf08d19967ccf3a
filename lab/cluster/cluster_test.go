package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab/cluster"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/vishvananda/netlink"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// TestControlPlane brings up a lab and its control plane in the master's
// namespace, and checks that each part does its job: the controller-manager
// gives nodes PodCIDRs from the lab's pod ranges, the scheduler binds a pod
// to the one Ready node, the apiserver publishes itself as the endpoints of
// the kubernetes Service, and the service-account machinery (admission,
// the serviceaccount, root-ca-cert-publisher and token controllers) works.
// There are no kubelets: the test writes the nodes' status as their
// kubelets would, node-a Ready and node-b not. Then it stops the control
// plane and checks that nothing is left.
func TestControlPlane(t *testing.T) {
	l := labtest.Up(t, "cl")
	cp := cluster.StartForTest(t, l, cluster.Options{})
	t.Logf("control plane up in %s (kube-apiserver ready in %s, kube-controller-manager healthy in %s, kube-scheduler healthy in %s) at %s in %s",
		cp.Started.Round(time.Millisecond), cp.APIReady.Round(time.Millisecond), cp.ControllerManagerReady.Round(time.Millisecond),
		cp.SchedulerReady.Round(time.Millisecond), cp.URL, cp.Netns)
	if want := "https://" + cluster.MasterIP + ":" + strconv.Itoa(cluster.APIPort); cp.URL != want {
		t.Errorf("URL = %s, want %s", cp.URL, want)
	}
	cs := cp.API.Clientset()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("reachable from a node", func(t *testing.T) {
		// node-a reaches the apiserver over the underlay, through the
		// router's bridge, verifying its certificate.
		nodeA, err := l.Node("node-a")
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.CopyConfig(cp.API.Admin)
		cfg.Dial = labtest.OpenNS(t, nodeA.NetnsPath).Dial
		fromNode, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fromNode.Discovery().ServerVersion(); err != nil {
			t.Fatalf("from node-a: %v", err)
		}
	})

	var nodeNames []string
	for _, n := range l.Nodes {
		nodeNames = append(nodeNames, n.Name)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("node PodCIDRs", func(t *testing.T) {
		ranges := map[bool]netip.Prefix{} // by "is IPv4"
		for _, c := range cp.ClusterCIDRs {
			p := netip.MustParsePrefix(c)
			ranges[p.Addr().Is4()] = p
		}
		seen := map[string]string{}
		for _, name := range nodeNames {
			var node *corev1.Node
			waitFor(t, ctx, 30*time.Second, "PodCIDRs of "+name, func() (bool, error) {
				var err error
				node, err = cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				return err == nil && len(node.Spec.PodCIDRs) == 2, err
			})
			t.Logf("%s: podCIDR %s, podCIDRs %v", name, node.Spec.PodCIDR, node.Spec.PodCIDRs)
			if node.Spec.PodCIDR != node.Spec.PodCIDRs[0] {
				t.Errorf("%s: podCIDR %s is not podCIDRs[0] %s", name, node.Spec.PodCIDR, node.Spec.PodCIDRs[0])
			}
			for i, c := range node.Spec.PodCIDRs {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					t.Errorf("%s: podCIDRs[%d] %q: %v", name, i, c, err)
					continue
				}
				want, bits := ranges[true], 24
				if !p.Addr().Is4() {
					want, bits = ranges[false], 64
				}
				if (i == 0) != p.Addr().Is4() {
					t.Errorf("%s: podCIDRs %v: IPv4 first, then IPv6", name, node.Spec.PodCIDRs)
				}
				if p.Bits() != bits || !want.Contains(p.Addr()) {
					t.Errorf("%s: PodCIDR %s is not a /%d of the cluster CIDR %s", name, p, bits, want)
				}
				if other, dup := seen[c]; dup {
					t.Errorf("%s and %s both have PodCIDR %s", other, name, c)
				}
				seen[c] = name
			}
		}
	})

	// Both nodes report room for pods, as their kubelets would; node-a
	// is Ready, node-b is not (its network plugin is not ready). The
	// node-lifecycle controller taints node-b not-ready:NoSchedule,
	// which is what keeps the scheduler off it: the scheduler itself
	// does not read the Ready condition.
	const readyNode = "node-a"
	for _, name := range nodeNames {
		setStatus(t, ctx, cs, name, name == readyNode)
	}
	for _, name := range nodeNames {
		want := name != readyNode
		waitFor(t, ctx, 30*time.Second, fmt.Sprintf("the node-lifecycle controller: %s tainted not-ready %v", name, want), func() (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			has := false
			for _, taint := range n.Spec.Taints {
				has = has || (taint.Key == corev1.TaintNodeNotReady && taint.Effect == corev1.TaintEffectNoSchedule)
			}
			return has == want, fmt.Errorf("taints %v", n.Spec.Taints)
		})
	}

	t.Run("service accounts", func(t *testing.T) {
		waitFor(t, ctx, 30*time.Second, "the serviceaccount controller's default/default", func() (bool, error) {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err == nil, ignoreNotFound(err)
		})
		waitFor(t, ctx, 30*time.Second, "the root-ca-cert-publisher's default/kube-root-ca.crt", func() (bool, error) {
			cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
			if err != nil {
				return false, ignoreNotFound(err)
			}
			if cm.Data["ca.crt"] != string(cp.API.CAPEM) {
				return false, errors.New("kube-root-ca.crt does not hold the cluster's CA")
			}
			return true, nil
		})
		// The token controller (--service-account-private-key-file)
		// fills a legacy token Secret; the apiserver accepts the token.
		if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe-token", Annotations: map[string]string{corev1.ServiceAccountNameKey: "probe"}},
			Type: corev1.SecretTypeServiceAccountToken}
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var token []byte
		waitFor(t, ctx, 30*time.Second, "the token controller to fill default/probe-token", func() (bool, error) {
			s, err := cs.CoreV1().Secrets("default").Get(ctx, "probe-token", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			token = s.Data[corev1.ServiceAccountTokenKey]
			return len(token) > 0 && len(s.Data[corev1.ServiceAccountRootCAKey]) > 0, nil
		})
		asProbe, err := kubernetes.NewForConfig(cp.API.ConfigFor(string(token)))
		if err != nil {
			t.Fatal(err)
		}
		self, err := asProbe.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("the legacy token is refused: %v", err)
		}
		if got, want := self.Status.UserInfo.Username, "system:serviceaccount:default:probe"; got != want {
			t.Errorf("the legacy token authenticates as %q, want %q", got, want)
		}
		// --use-service-account-credentials: the controllers run as
		// service accounts of their own.
		if _, err := cs.CoreV1().ServiceAccounts("kube-system").Get(ctx, "node-controller", metav1.GetOptions{}); err != nil {
			t.Errorf("kube-system/node-controller: %v", err)
		}
	})

	t.Run("scheduling", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "pause", Image: "netdiag.lab/pause:1"}}}}
		var created *corev1.Pod
		// The ServiceAccount admission plugin refuses pods until the
		// namespace has its default account; the subtest above waited.
		created, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if created.Spec.ServiceAccountName != "default" {
			t.Errorf("serviceAccountName = %q, want default (ServiceAccount admission)", created.Spec.ServiceAccountName)
		}
		hasToken := false
		for _, v := range created.Spec.Volumes {
			if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
				hasToken = true
			}
		}
		if !hasToken {
			t.Errorf("the pod has no kube-api-access projected volume (ServiceAccount admission): %+v", created.Spec.Volumes)
		}
		var got *corev1.Pod
		waitFor(t, ctx, 60*time.Second, "the scheduler to bind default/probe", func() (bool, error) {
			got, err = cs.CoreV1().Pods("default").Get(ctx, "probe", metav1.GetOptions{})
			return err == nil && got.Spec.NodeName != "", err
		})
		if got.Spec.NodeName != readyNode {
			t.Errorf("the pod is bound to %s, want %s, the only Ready node", got.Spec.NodeName, readyNode)
		}
		for _, c := range got.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
				t.Errorf("PodScheduled is %s: %s", c.Status, c.Message)
			}
		}
		t.Logf("default/probe bound to %s", got.Spec.NodeName)
	})

	t.Run("kubernetes Service endpoints", func(t *testing.T) {
		// Without the warning that v1 Endpoints is deprecated.
		cfg := rest.CopyConfig(cp.API.Admin)
		cfg.WarningHandler = rest.NoWarnings{}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s:%d", cluster.MasterIP, cluster.APIPort)
		waitFor(t, ctx, 30*time.Second, "endpoints of default/kubernetes", func() (bool, error) {
			// The apiserver's endpoint reconciler writes Endpoints,
			// and the EndpointSlice beside it.
			ep, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return false, ignoreNotFound(err)
			}
			var got []string
			for _, s := range ep.Subsets {
				for _, a := range s.Addresses {
					for _, p := range s.Ports {
						got = append(got, fmt.Sprintf("%s:%d", a.IP, p.Port))
					}
				}
			}
			if len(got) == 1 && got[0] == want {
				return true, nil
			}
			return false, fmt.Errorf("endpoints %v, want [%s]", got, want)
		})
		slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				for _, a := range e.Addresses {
					found = found || a == cluster.MasterIP
				}
			}
		}
		if !found {
			t.Errorf("no EndpointSlice of default/kubernetes holds %s: %+v", cluster.MasterIP, slices.Items)
		}
	})

	// Stop, and check that nothing is left.
	pids, dir := cp.PIDs(), cp.Dir
	if len(pids) != 4 {
		t.Errorf("PIDs = %v, want 4 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)", pids)
	}
	stopped := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("pid %d is still there", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", dir, err)
	}
	if _, err := os.Stat(cp.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", cp.NetnsPath, err)
	}
	router, err := l.Host("router")
	if err != nil {
		t.Fatal(err)
	}
	rh, err := labtest.OpenNS(t, router.NetnsPath).Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	// The kernel removes a deleted namespace's veth (and so its peer in
	// the router) in the background.
	waitFor(t, context.Background(), 10*time.Second, "the router's ul-master veth to go", func() (bool, error) {
		_, err := rh.LinkByName("ul-" + cluster.MasterName)
		var nf netlink.LinkNotFoundError
		return errors.As(err, &nf), nil
	})
}

// setStatus writes the status a kubelet would: Ready or not, an address and
// room for pods (without allocatable pods the scheduler fits nothing).
func setStatus(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, ready bool) {
	t.Helper()
	// The controllers write the Node too (annotations, taints): on a
	// conflict, read it again and redo the change, as a kubelet does.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		markStatus(node, ready)
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("status of %s: %v", name, err)
	}
}

// markStatus gives the node a kubelet's capacity, addresses and Ready
// condition.
func markStatus(node *corev1.Node, ready bool) {
	name := node.Name
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	now := metav1.Now()
	node.Status.Capacity, node.Status.Allocatable = res, res
	cond := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "marked Ready by the test", LastHeartbeatTime: now, LastTransitionTime: now}
	if !ready {
		cond.Status, cond.Reason = corev1.ConditionFalse, "KubeletNotReady"
		cond.Message = "container runtime network not ready: NetworkReady=false (set by the test)"
	}
	node.Status.Conditions = []corev1.NodeCondition{cond}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// waitFor polls check every 200ms until it is done, or fails the test with
// the last error after timeout.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, check func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var last error
	for {
		ok, err := check()
		if ok {
			t.Logf("%s: after %s", what, time.Since(start).Round(time.Millisecond))
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("waited %s for %s; last error: %v", timeout, what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
