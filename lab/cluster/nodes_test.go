package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/procfs"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/cluster"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/labtest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestNodesJoin runs a real cluster in a lab of the cluster shape (the
// machines and wires alone): the control plane in the master's namespace,
// and on node-a and node-b their containerd, a real kubelet that registers
// over the underlay as system:node:NAME, flanneld building the VXLAN
// overlay from the Node objects' PodCIDRs, and kube-proxy writing the
// Service rules. A Deployment of two servers, kept apart by a pod
// anti-affinity, gets one pod on each node from the scheduler; the kubelets
// run them through containerd and the flannel CNI plugin, and each pod
// answers the other across flannel's overlay over both families. Then
// CoreDNS, web and client are deployed and the cluster's health checked
// from the client pod (DNS through the kube-dns Service, the web Service,
// IPv6 across the overlay). Then everything stops and the test checks that
// no process, mount, cgroup or namespace is left.
func TestNodesJoin(t *testing.T) {
	l := labtest.UpShape(t, "cln", lab.ShapeCluster)
	cp := cluster.StartForTest(t, l, cluster.Options{})
	t.Logf("control plane up in %s (kube-apiserver %s, kube-controller-manager %s, kube-scheduler %s)",
		cp.Started.Round(time.Millisecond), cp.APIReady.Round(time.Millisecond), cp.ControllerManagerReady.Round(time.Millisecond), cp.SchedulerReady.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	server := filepath.Join(t.TempDir(), "server")
	b0 := time.Now()
	if err := containerd.BuildStatic(ctx, "../..", containerd.ServerPackage, server); err != nil {
		t.Fatal(err)
	}
	t.Logf("server binary built in %s", time.Since(b0).Round(time.Millisecond))

	hostBefore := hostEntries()
	t.Run("a failed join leaves nothing", func(t *testing.T) {
		// node-a's Node object and runtime come first; node-z does not
		// exist, so JoinNodes stops what it started. The real join below
		// then finds node-a's Node object with the lab's PodCIDRs.
		_, err := cp.JoinNodes(ctx, cluster.NodeOptions{Names: []string{"node-a", "node-z"}, ModuleDir: "../.."})
		if err == nil || !strings.Contains(err.Error(), "node-z") {
			t.Fatalf("JoinNodes with node-z: %v, want an error naming it", err)
		}
		t.Logf("JoinNodes: %v", err)
		if left, _ := filepath.Glob(filepath.Join(os.TempDir(), l.Prefix+"node-a-*")); len(left) > 0 {
			t.Errorf("left: %v", left)
		}
		if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + l.Prefix + "node-a-containerd"); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
	})
	nodes := cluster.JoinNodesForTest(t, cp, cluster.NodeOptions{ModuleDir: "../.."})
	for _, n := range nodes.Nodes {
		t.Logf("%s: containerd up in %s (%s snapshotter), Ready %s after its kubelet started", n.Name,
			n.Containerd.Round(time.Millisecond), n.Runtime.Snapshotter, n.Ready.Round(time.Millisecond))
	}
	t.Logf("nodes Ready in %s (from JoinNodes, pause image build included)", nodes.Ready.Round(time.Millisecond))
	if len(nodes.Nodes) != 2 {
		t.Fatalf("%d nodes joined, want node-a and node-b", len(nodes.Nodes))
	}
	cs := cp.API.Clientset()

	t.Run("Node objects", func(t *testing.T) {
		for _, n := range nodes.Nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{n.Lab.PodCIDR, n.Lab.PodCIDR6}; !slices.Equal(node.Spec.PodCIDRs, want) || node.Spec.PodCIDR != want[0] {
				t.Errorf("%s: podCIDR %s, podCIDRs %v, want the lab's %v", n.Name, node.Spec.PodCIDR, node.Spec.PodCIDRs, want)
			}
			var internal []string
			for _, a := range node.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					internal = append(internal, a.Address)
				}
			}
			if want := []string{n.Lab.InternalIP, n.Lab.InternalIP6}; !slices.Equal(internal, want) {
				t.Errorf("%s: InternalIPs %v, want %v", n.Name, internal, want)
			}
			// flanneld registered the node's VTEP (its public IP the
			// node's InternalIP) and found its lease in the PodCIDR.
			if got := node.Annotations["flannel.alpha.coreos.com/public-ip"]; got != n.Lab.InternalIP {
				t.Errorf("%s: flannel public-ip annotation %q, want %s", n.Name, got, n.Lab.InternalIP)
			}
			env, err := cluster.ReadSubnetFile(n.SubnetFile)
			if err != nil {
				t.Fatal(err)
			}
			if sub, err := netip.ParsePrefix(env["FLANNEL_SUBNET"]); err != nil || !netip.MustParsePrefix(n.Lab.PodCIDR).Contains(sub.Addr()) {
				t.Errorf("%s: FLANNEL_SUBNET %q, want an address in %s", n.Name, env["FLANNEL_SUBNET"], n.Lab.PodCIDR)
			}
			t.Logf("%s: flanneld lease in %s, kube-proxy healthy in %s; %s: %v", n.Name, n.FlannelReady.Round(time.Millisecond),
				n.KubeProxyReady.Round(time.Millisecond), n.SubnetFile, env)
			info := node.Status.NodeInfo
			t.Logf("%s: kubelet %s, %s, podCIDRs %v, InternalIPs %v", n.Name, info.KubeletVersion, info.ContainerRuntimeVersion, node.Spec.PodCIDRs, internal)
		}
		// The kubelets are who their certificates say, in system:nodes.
		leases, err := cs.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var holders []string
		for _, le := range leases.Items {
			if le.Spec.HolderIdentity != nil {
				holders = append(holders, *le.Spec.HolderIdentity)
			}
		}
		slices.Sort(holders)
		if !slices.Equal(holders, []string{"node-a", "node-b"}) {
			t.Errorf("node leases held by %v, want node-a and node-b", holders)
		}
	})

	i0 := time.Now()
	for _, n := range nodes.Nodes {
		if err := n.Runtime.ImportImage(ctx, containerd.Image{Ref: containerd.ServerRef, Binary: server}); err != nil {
			t.Fatalf("import the server image on %s: %v", n.Name, err)
		}
	}
	t.Logf("server image imported on both nodes in %s", time.Since(i0).Round(time.Millisecond))

	const port = 8080
	labels := map[string]string{"app": "echo"}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// One pod per node: the scheduler must spread them.
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: corev1.LabelHostname}}}},
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name: "server", Image: containerd.ServerRef, ImagePullPolicy: corev1.PullNever,
						Args:  []string{"-listen", ":" + strconv.Itoa(port)},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}},
						// The kubelet probes from the node's namespace.
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(port)}},
							PeriodSeconds: 1},
					}},
				},
			},
		},
	}
	d0 := time.Now()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	waitFor(t, ctx, 2*time.Minute, "both pods of default/echo Running and Ready", func() (bool, error) {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return false, err
		}
		pods = list.Items
		var state []string
		ready := 0
		for _, p := range pods {
			ok := p.Status.Phase == corev1.PodRunning && len(p.Status.PodIPs) > 0 && cluster.PodReady(&p)
			if ok {
				ready++
			}
			state = append(state, fmt.Sprintf("%s on %q: %s ready=%v %s", p.Name, p.Spec.NodeName, p.Status.Phase, cluster.PodReady(&p), p.Status.Message))
		}
		return len(pods) == 2 && ready == 2, fmt.Errorf("%s", strings.Join(state, "; "))
	})
	t.Logf("pods Running and Ready %s after the Deployment was created", time.Since(d0).Round(time.Millisecond))
	// Deployment status follows the pods.
	waitFor(t, ctx, 30*time.Second, "the Deployment's availableReplicas 2", func() (bool, error) {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "echo", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2, err
	})

	byNode := map[string]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		byNode[p.Spec.NodeName] = p
		n := nodes.Node(p.Spec.NodeName)
		if n == nil {
			t.Fatalf("pod %s on %q, not a lab node", p.Name, p.Spec.NodeName)
		}
		ranges := []netip.Prefix{netip.MustParsePrefix(n.Lab.PodCIDR), netip.MustParsePrefix(n.Lab.PodCIDR6)}
		var ips []string
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
			a, err := netip.ParseAddr(ip.IP)
			if err != nil || !slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(a) }) {
				t.Errorf("pod %s on %s has IP %s outside the node's pod ranges %v", p.Name, n.Name, ip.IP, ranges)
			}
		}
		if len(ips) != 2 {
			t.Errorf("pod %s has IPs %v, want one of each family", p.Name, ips)
		}
		t.Logf("pod %s on %s: %v", p.Name, n.Name, ips)
	}
	if len(byNode) != 2 {
		t.Fatalf("both pods on %v: the anti-affinity should spread them", slices.Collect(maps.Keys(byNode)))
	}

	// Each pod's port, from the other node's namespace and from the other
	// pod's: across the overlay, both families.
	var podNetns []string
	for _, n := range nodes.Nodes {
		other := nodes.Nodes[0]
		if other == n {
			other = nodes.Nodes[1]
		}
		target := byNode[n.Name]
		src := byNode[other.Name]
		srcNetns := sandboxNetns(t, ctx, other, string(src.UID))
		podNetns = append(podNetns, srcNetns)
		for _, from := range []struct{ what, path string }{{"node " + other.Name, other.Lab.NetnsPath}, {"pod " + src.Name, srcNetns}} {
			fns, err := netns.Open(from.path)
			if err != nil {
				t.Fatal(err)
			}
			for _, ip := range target.Status.PodIPs {
				addr := net.JoinHostPort(ip.IP, strconv.Itoa(port))
				body, err := lab.HTTPGet(ctx, fns, addr)
				if err != nil {
					t.Errorf("from %s to pod %s at %s: %v", from.what, target.Name, addr, err)
					continue
				}
				if strings.TrimSpace(body) != target.Name {
					t.Errorf("from %s, %s answered %q, want its hostname %s", from.what, addr, body, target.Name)
				}
				t.Logf("from %s to %s (%s on %s): %s", from.what, addr, target.Name, n.Name, strings.TrimSpace(body))
			}
			// Closed now: an open handle would keep the pod's
			// namespace alive after its runtime removed it.
			fns.Close()
		}
	}

	a0 := time.Now()
	addons, err := nodes.DeployAddons(ctx, cluster.AddonOptions{ModuleDir: "../.."})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CoreDNS, web and client available in %s (images built and imported in %s, Deployments available %s after creation)",
		time.Since(a0).Round(time.Millisecond), addons.Images.Round(time.Millisecond), addons.Ready.Round(time.Millisecond))
	for _, h := range nodes.Health(ctx) {
		if h.Err != nil {
			t.Errorf("health: %s: %v", h.Name, h.Err)
			continue
		}
		t.Logf("health: %s: %s (%s)", h.Name, h.Detail, h.Took.Round(time.Microsecond))
	}
	if t.Failed() {
		t.FailNow()
	}

	// Stop everything, then check that nothing is left.
	pids := append(nodes.PIDs(), cp.PIDs()...)
	var dirs []string
	var cgroups []string
	for _, n := range nodes.Nodes {
		dirs = append(dirs, n.Kubelet.Dir, n.Runtime.Dir)
		cgroups = append(cgroups, n.Runtime.Name)
	}
	dirs = append(dirs, cp.Dir)
	s0 := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer scancel()
	if err := nodes.Stop(sctx); err != nil {
		t.Errorf("stop the nodes: %v", err)
	}
	t.Logf("nodes stopped in %s", time.Since(s0).Round(time.Millisecond))
	s0 = time.Now()
	if err := cp.Stop(); err != nil {
		t.Errorf("stop the control plane: %v", err)
	}
	t.Logf("control plane stopped in %s", time.Since(s0).Round(time.Millisecond))
	if len(pids) != 12 {
		t.Errorf("PIDs %v, want 12 (2 kubelets, 2 containerd, 2 flanneld, 2 kube-proxy, etcd, kube-apiserver, kube-controller-manager, kube-scheduler)", pids)
	}
	for _, pid := range pids {
		if procfs.Alive(pid) {
			t.Errorf("pid %d still runs", pid)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		for _, d := range dirs {
			if strings.Contains(line, d) {
				t.Errorf("still mounted: %s", line)
			}
		}
	}
	for _, d := range append(dirs, podNetns...) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", d, err)
		}
	}
	for _, name := range cgroups {
		if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + name); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
	}
	if _, err := os.Stat(cp.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", cp.NetnsPath, err)
	}
	// The kubelets wrote nothing to the machine's fixed paths (lab/kubelet
	// gives each its own in its mount namespace).
	if after := hostEntries(); !slices.Equal(after, hostBefore) {
		t.Errorf("the machine's kubelet paths changed: before %v, after %v", hostBefore, after)
	}
	// No process names a directory of theirs.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if strings.Contains(string(b), d) {
				t.Errorf("%s still runs: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
}

// sandboxNetns asks the node's containerd for the pod's network namespace,
// which must be the runtime's.
func sandboxNetns(t *testing.T, ctx context.Context, n *cluster.Node, uid string) string {
	t.Helper()
	path, err := n.PodNetns(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, n.Runtime.Dir) {
		t.Errorf("sandbox namespace %s is not under the runtime's directory %s", path, n.Runtime.Dir)
	}
	return path
}

// hostEntries lists, with their modification times, the entries of the
// machine's directories a kubelet writes whatever its flags say.
func hostEntries() []string {
	var out []string
	for _, d := range []string{"/var/lib/kubelet/device-plugins", "/var/log/containers"} {
		es, err := os.ReadDir(d)
		if err != nil {
			// Absent before and after is fine; appearing is not.
			out = append(out, d+"@absent")
			continue
		}
		for _, e := range es {
			info, err := e.Info()
			if err == nil {
				out = append(out, filepath.Join(d, e.Name())+"@"+info.ModTime().String())
			}
		}
	}
	return out
}
