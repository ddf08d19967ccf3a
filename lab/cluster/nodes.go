package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/internal/procfs"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/kubelet"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodesRoleBinding binds the apiserver's bootstrap ClusterRole system:node
// to the group system:nodes. The apiserver runs with RBAC alone (no Node
// authorizer, no NodeRestriction), so a kubelet's identity,
// system:node:NAME in system:nodes, has no rights until this binding gives
// them: what clusters did before the Node authorizer (Kubernetes 1.7),
// broader than a node's rights today (any node may write any node's
// objects) but the same verbs and resources.
const NodesRoleBinding = "netdiag-lab:nodes"

// NodeOptions tune the nodes that join a control plane. The zero value
// joins every node of the lab.
type NodeOptions struct {
	// Names are the lab nodes to join; empty means all of them.
	Names []string
	// PauseBinary is a static pause binary for the runtimes' sandbox
	// image; empty means one built once for all nodes from ModuleDir.
	PauseBinary string
	// ModuleDir is a directory inside this module, for building the pause
	// binary; empty means the working directory.
	ModuleDir string
	// ReadyTimeout bounds the wait for every node to be Ready; 0 means 2
	// minutes.
	ReadyTimeout time.Duration
	// Log receives the runtimes' progress; default: discarded.
	Log *slog.Logger
}

// Node is a lab node joined to the control plane: its containerd and its
// kubelet.
type Node struct {
	Name string
	Lab  lab.Node
	// Runtime is the node's containerd; Kubelet its kubelet, registered
	// as system:node:NAME with Kubeconfig.
	Runtime    *containerd.Runtime
	Kubelet    *kubelet.Kubelet
	Kubeconfig string
	// Containerd is how long the runtime took to start (pause image
	// imported); Ready how long the node took from its kubelet's start to
	// its Ready condition.
	Containerd, Ready time.Duration

	// On a lab of the cluster shape: the node's flanneld, the subnet file
	// it writes the node's lease to, and its extra flags (RestartFlannel);
	// kube-proxy (nil while StopKubeProxy has it stopped). FlannelReady is how long
	// flanneld took to write the lease, KubeProxyReady how long kube-proxy
	// took until healthy.
	Flannel, KubeProxy           *daemon.Process
	SubnetFile                   string
	FlannelArgs                  []string
	FlannelReady, KubeProxyReady time.Duration
}

// Nodes are the joined nodes.
type Nodes struct {
	CP    *ControlPlane
	Nodes []*Node
	// Ready is how long JoinNodes took until every node was Ready.
	Ready time.Duration

	// The network's programs and shared files, for restarting flanneld
	// or kube-proxy on a node (network.go).
	netBins                                         netPrograms
	netConfPath, flannelKubeconfig, proxyKubeconfig string

	stopOnce sync.Once
	stopErr  error
}

// Node is the joined node called name, or nil.
func (ns *Nodes) Node(name string) *Node {
	for _, n := range ns.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// JoinNodes makes lab nodes nodes of the cluster, as kubeadm join would:
// it binds system:nodes to the system:node role, creates each Node object
// with the lab's PodCIDRs (so that the controller-manager's allocator
// takes them as they are and hands out no others: a PodCIDR cannot change
// once set, and the lab's routes and bridges are built for these), starts
// the node's containerd in its namespace (CNI bridge on cni0, host-local
// IPAM in the node's range) and its kubelet, which registers with the
// apiserver over the underlay as system:node:NAME, and waits until every
// node is Ready. The kubelets' cluster DNS is the lab's kube-dns
// ClusterIP. On error nothing it started is left.
func (cp *ControlPlane) JoinNodes(ctx context.Context, opts NodeOptions) (ns *Nodes, err error) {
	t0 := time.Now()
	l := cp.Lab
	names := opts.Names
	if len(names) == 0 {
		for _, n := range l.Nodes {
			names = append(names, n.Name)
		}
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	dnsIP := ""
	if svc, err := l.Service(l.DNSService); err == nil {
		dnsIP = svc.ClusterIP
	}
	if dnsIP == "" {
		return nil, fmt.Errorf("the lab has no DNS Service %q with a ClusterIP for the kubelets' clusterDNS", l.DNSService)
	}
	ns = &Nodes{CP: cp}
	defer func() {
		if err != nil {
			err = errors.Join(err, ns.Stop(context.WithoutCancel(ctx)))
			ns = nil
		}
	}()
	cs := cp.API.Clientset()
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: NodesRoleBinding},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:nodes"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return ns, fmt.Errorf("ClusterRoleBinding %s: %w", NodesRoleBinding, err)
	}

	dir := filepath.Join(cp.Dir, "nodes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ns, err
	}
	if opts.PauseBinary == "" {
		mod := opts.ModuleDir
		if mod == "" {
			mod = "."
		}
		opts.PauseBinary = filepath.Join(dir, "pause")
		if err := containerd.BuildStatic(ctx, mod, containerd.PausePackage, opts.PauseBinary); err != nil {
			return ns, fmt.Errorf("pause image: %w", err)
		}
	}

	// On a lab of the cluster shape the network is the cluster's own:
	// flanneld and kube-proxy on every node. On an emulated lab the
	// runtimes use the lab's bridges and overlay.
	realNetwork := l.Shape == lab.ShapeCluster
	if realNetwork {
		if ns.netBins, err = findNetPrograms(); err != nil {
			return ns, err
		}
		if ns.netConfPath, ns.flannelKubeconfig, ns.proxyKubeconfig, err = cp.networkSetup(ctx, dir); err != nil {
			return ns, err
		}
	}

	for _, name := range names {
		ln, err := l.Node(name)
		if err != nil {
			return ns, err
		}
		n := &Node{Name: name, Lab: *ln, Kubeconfig: filepath.Join(dir, name+".kubeconfig")}
		ns.Nodes = append(ns.Nodes, n)
		if err := createNode(ctx, cp, ln); err != nil {
			return ns, err
		}
		// The identity the Node authorizer and NodeRestriction expect
		// of a kubelet, as kubeadm's TLS bootstrap gives it.
		if err := cp.API.WriteKubeconfig(n.Kubeconfig, kubeUser(name)); err != nil {
			return ns, err
		}
		rtOpts := containerd.Options{NetnsPath: ln.NetnsPath, PauseBinary: opts.PauseBinary, Log: opts.Log}
		if realNetwork {
			n.SubnetFile = filepath.Join(dir, name+"-subnet.env")
			rtOpts.Flannel = &containerd.FlannelNetwork{SubnetFile: n.SubnetFile}
		}
		c0 := time.Now()
		if n.Runtime, err = containerd.Start(ctx, rtOpts); err != nil {
			return ns, fmt.Errorf("containerd on %s: %w", name, err)
		}
		n.Containerd = time.Since(c0)
	}

	started := map[string]time.Time{}
	for _, n := range ns.Nodes {
		started[n.Name] = time.Now()
		n.Kubelet, err = kubelet.Start(ctx, kubelet.Options{
			NodeName: n.Name, NodeIP: n.Lab.InternalIP, NodeIP6: n.Lab.InternalIP6, NetnsPath: n.Lab.NetnsPath,
			CRISocket: n.Runtime.Socket, CgroupRoot: "/" + n.Runtime.Name,
			Kubeconfig: n.Kubeconfig, ClientCAFile: cp.API.CAFile,
			ClusterDNS: dnsIP, ClusterDomain: l.ClusterDomain,
			Env: []string{marker(l, "kubelet-"+n.Name)},
		})
		if err != nil {
			return ns, fmt.Errorf("kubelet on %s: %w", n.Name, err)
		}
	}

	wctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting, last := 0, ""
		for _, n := range ns.Nodes {
			if n.Ready != 0 {
				continue
			}
			node, err := cs.CoreV1().Nodes().Get(wctx, n.Name, metav1.GetOptions{})
			if err == nil && nodeReady(node) {
				n.Ready = time.Since(started[n.Name])
				continue
			}
			waiting++
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.Name, err)
			} else {
				last = fmt.Sprintf("%s: %s", n.Name, readyMessage(node))
			}
			if !procfs.Alive(n.Kubelet.PID()) {
				return ns, fmt.Errorf("the kubelet on %s exited:\n%s", n.Name, n.Kubelet.Tail(logTailLines))
			}
		}
		if waiting == 0 {
			break
		}
		select {
		case <-wctx.Done():
			var tails string
			for _, n := range ns.Nodes {
				if n.Ready == 0 {
					tails += fmt.Sprintf("\nlast lines of the kubelet on %s (%s):\n%s", n.Name, n.Kubelet.Log, n.Kubelet.Tail(logTailLines))
				}
			}
			return ns, fmt.Errorf("%d node(s) not Ready after %s (%s)%s", waiting, opts.ReadyTimeout, last, tails)
		case <-tick.C:
		}
	}
	if realNetwork {
		// As their DaemonSets' pods would, flanneld and kube-proxy start
		// once the node has registered. (flanneld v0.28.10 also panics
		// on a Node object without annotations, kube.go:431, which is
		// what the object is before the kubelet registers.) Pods wait
		// for flanneld's lease: until then the CNI plugin refuses them
		// and the kubelet retries.
		for _, n := range ns.Nodes {
			if err := ns.startFlannel(n); err != nil {
				return ns, fmt.Errorf("flanneld on %s: %w", n.Name, err)
			}
			if err := ns.startKubeProxy(n); err != nil {
				return ns, fmt.Errorf("kube-proxy on %s: %w", n.Name, err)
			}
		}
		for _, n := range ns.Nodes {
			if err := waitFlannel(ctx, n); err != nil {
				return ns, err
			}
			if n.KubeProxy != nil {
				if err := waitKubeProxy(ctx, n); err != nil {
					return ns, err
				}
			}
		}
	}
	ns.Ready = time.Since(t0)
	return ns, nil
}

// kubeUser is a node's kubeconfig user: system:node:NAME in system:nodes.
func kubeUser(name string) kubetest.User {
	return kubetest.User{Name: name, CommonName: "system:node:" + name, Groups: []string{"system:nodes"}}
}

// createNode creates the Node object of a lab node with the lab's
// PodCIDRs, or checks that an existing one has them.
func createNode(ctx context.Context, cp *ControlPlane, ln *lab.Node) error {
	cidrs := []string{ln.PodCIDR}
	if ln.PodCIDR6 != "" {
		cidrs = append(cidrs, ln.PodCIDR6)
	}
	cs := cp.API.Clientset()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: ln.Name, Labels: map[string]string{corev1.LabelHostname: ln.Name}},
		Spec:       corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs},
	}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, gerr := cs.CoreV1().Nodes().Get(ctx, ln.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		if !slices.Equal(got.Spec.PodCIDRs, cidrs) {
			return fmt.Errorf("node %s exists with PodCIDRs %v, not the lab's %v (a PodCIDR cannot change: delete the Node first)", ln.Name, got.Spec.PodCIDRs, cidrs)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", ln.Name, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readyMessage(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
		}
	}
	return "no Ready condition yet"
}

// Stop ends every kubelet by its PID (its pods keep running, as when a
// kubelet dies), then stops every runtime, which removes the pods through
// CRI and everything the runtime made. The Node objects stay in the
// apiserver, NotReady, as after a node's crash; the control plane's Stop
// removes them with etcd. Stopping twice is harmless.
func (ns *Nodes) Stop(ctx context.Context) error {
	ns.stopOnce.Do(func() {
		var errs []error
		for _, n := range ns.Nodes {
			if n.Kubelet != nil {
				if err := n.Kubelet.Stop(); err != nil {
					errs = append(errs, fmt.Errorf("kubelet on %s: %w", n.Name, err))
				}
			}
		}
		for _, n := range ns.Nodes {
			for _, p := range []*daemon.Process{n.KubeProxy, n.Flannel} {
				if p != nil {
					if err := p.Stop(stopGrace); err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
					}
				}
			}
		}
		for _, n := range ns.Nodes {
			if n.Runtime != nil {
				if err := n.Runtime.Stop(ctx); err != nil {
					errs = append(errs, fmt.Errorf("containerd on %s: %w", n.Name, err))
				}
			}
		}
		ns.stopErr = errors.Join(errs...)
	})
	return ns.stopErr
}

// PIDs are the kubelets' and the runtimes' process IDs (containerd's; its
// shims and pods are its to end).
func (ns *Nodes) PIDs() []int {
	var pids []int
	for _, n := range ns.Nodes {
		if n.Kubelet != nil {
			pids = append(pids, n.Kubelet.PID())
		}
		if n.Runtime != nil {
			pids = append(pids, n.Runtime.PID)
		}
		for _, p := range []*daemon.Process{n.KubeProxy, n.Flannel} {
			if p != nil {
				pids = append(pids, p.PID())
			}
		}
	}
	return pids
}

// DumpLogs writes the end of every kubelet's and runtime's log through
// logf.
func (ns *Nodes) DumpLogs(logf func(format string, args ...any)) {
	for _, n := range ns.Nodes {
		if n.Kubelet != nil {
			logf("cluster: last lines of the kubelet on %s (%s):\n%s", n.Name, n.Kubelet.Log, n.Kubelet.Tail(logTailLines))
		}
		if n.Runtime != nil {
			logf("cluster: last lines of containerd on %s (%s):\n%s", n.Name, n.Runtime.Dir, n.Runtime.LogTail(logTailLines))
		}
		for _, p := range []*daemon.Process{n.Flannel, n.KubeProxy} {
			if p != nil {
				logf("cluster: last lines of %s (%s):\n%s", p.Name, p.Log, p.Tail(logTailLines))
			}
		}
	}
}
