package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/lab"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The cluster's network on a lab of the cluster shape: on every node
// flanneld (VXLAN backend, kube subnet manager) builds the overlay from the
// Node objects' PodCIDRs and writes the node's lease for the flannel CNI
// plugin, and kube-proxy in iptables mode writes the Service rules, each
// as the node process a DaemonSet would run, with the identity and rights
// kube-flannel.yml and kubeadm give it.
const (
	// FlannelVNI and FlannelPort are the VXLAN network's, as kube-flannel
	// configures it (8472 is also the kernel's default).
	FlannelVNI  = 1
	FlannelPort = 8472
	// FlannelBackendMTU is the MTU flannel's VXLAN backend plans for (see
	// netConf): its devices and the pods get 50 less, 1430.
	FlannelBackendMTU = 1480
	// KubeProxyHealthPort serves kube-proxy's /healthz on the node's
	// InternalIP.
	KubeProxyHealthPort = 10256

	// flannelRole is kube-flannel.yml's ClusterRole, bound to the user
	// flanneld's certificate names.
	flannelRole = "netdiag-lab:flannel"
	flannelUser = "netdiag-lab:flannel"
	// kubeProxyUser is the user kubeadm gives kube-proxy; the apiserver's
	// bootstrap policy binds it to system:node-proxier.
	kubeProxyUser = "system:kube-proxy"

	networkReadyTimeout = 90 * time.Second
)

// netPrograms are the node network's programs.
type netPrograms struct{ flanneld, kubeProxy string }

func findNetPrograms() (netPrograms, error) {
	var p netPrograms
	err := need(prog{"flanneld", &p.flanneld}, prog{"kube-proxy", &p.kubeProxy})
	return p, err
}

// netConf is flannel's net-conf.json: the lab's cluster CIDRs, dual-stack,
// VXLAN on the lab's VNI and port, iptables (not nftables) for its masquerade
// rules, as kube-proxy's.
//
// The Backend's MTU is set, as operators of dual-stack flannel clusters set
// it: flannel v0.28.10 gives both its VXLAN devices, and the pods, the
// underlay's MTU less 50 (the IPv4 encapsulation), but flannel-v6.1 carries
// pod packets in IPv6, whose header is 20 bytes longer, so a full-size IPv6
// pod packet (1450) leaves as 1520 bytes on a 1500 underlay and is lost.
// netdiag's first diagnosis on this cluster found it (mtu-mismatch over
// IPv6 only: the path carries 1430). MTU 1480 leaves 1430 for both.
func netConf(l *lab.Lab) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"Network":        l.ClusterCIDR,
		"IPv6Network":    l.ClusterCIDR6,
		"EnableIPv4":     true,
		"EnableIPv6":     l.ClusterCIDR6 != "",
		"EnableNFTables": false,
		"Backend":        map[string]any{"Type": "vxlan", "VNI": FlannelVNI, "Port": FlannelPort, "MTU": FlannelBackendMTU},
	}, "", "  ")
}

// networkSetup writes what every node's flanneld and kube-proxy share: the
// flannel RBAC, net-conf.json and the two kubeconfigs.
func (cp *ControlPlane) networkSetup(ctx context.Context, dir string) (netConfPath, flannelKubeconfig, proxyKubeconfig string, err error) {
	cs := cp.API.Clientset()
	if err := ensureFlannelRBAC(ctx, cs); err != nil {
		return "", "", "", err
	}
	b, err := netConf(cp.Lab)
	if err != nil {
		return "", "", "", err
	}
	netConfPath = filepath.Join(dir, "net-conf.json")
	if err := os.WriteFile(netConfPath, b, 0o644); err != nil {
		return "", "", "", err
	}
	flannelKubeconfig = filepath.Join(dir, "flannel.kubeconfig")
	if err := cp.API.WriteKubeconfig(flannelKubeconfig, kubetest.User{Name: "flannel", CommonName: flannelUser}); err != nil {
		return "", "", "", err
	}
	proxyKubeconfig = filepath.Join(dir, "kube-proxy.kubeconfig")
	if err := cp.API.WriteKubeconfig(proxyKubeconfig, kubetest.User{Name: "kube-proxy", CommonName: kubeProxyUser}); err != nil {
		return "", "", "", err
	}
	return netConfPath, flannelKubeconfig, proxyKubeconfig, nil
}

// ensureFlannelRBAC gives flanneld kube-flannel.yml's rights: read pods and
// nodes, patch the node status (its NetworkUnavailable condition) and the
// nodes (its annotations: backend data, public IP).
func ensureFlannelRBAC(ctx context.Context, cs kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: flannelRole}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ClusterRole %s: %w", flannelRole, err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: flannelRole},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: flannelRole},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: flannelUser}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ClusterRoleBinding %s: %w", flannelRole, err)
	}
	return nil
}

// startFlannel runs flanneld on the node: the node's name from NODE_NAME
// (as the DaemonSet's downward API gives it), its lease written to the
// node's own subnet file, the public address eth0's, --ip-masq as
// kube-flannel.yml runs it.
func (ns *Nodes) startFlannel(n *Node) error {
	args := []string{
		"--kube-subnet-mgr",
		"--kubeconfig-file=" + ns.flannelKubeconfig,
		"--ip-masq",
		"--subnet-file=" + n.SubnetFile,
		"--net-config-path=" + ns.netConfPath,
		"--v=1",
	}
	// --iface is a list tried in order: one given in FlannelArgs replaces
	// the node's NIC rather than following it.
	if !slices.ContainsFunc(n.FlannelArgs, func(a string) bool { return a == "--iface" || strings.HasPrefix(a, "--iface=") }) {
		args = append(args, "--iface="+n.Lab.NIC)
	}
	args = append(args, n.FlannelArgs...)
	var err error
	n.Flannel, err = ns.CP.startIn(n.Lab.NetnsPath, "flanneld-"+n.Name, ns.CP.bins.nsenter, ns.netBins.flanneld, args, []string{"NODE_NAME=" + n.Name})
	return err
}

// RestartFlannel restarts flanneld on a node with args added to its flags
// (nil: as it was first started), as a changed DaemonSet rolls its pod,
// and waits for its lease. The overlay device and the peers' routes stay
// as they are until the new flanneld rewrites them.
func (ns *Nodes) RestartFlannel(ctx context.Context, name string, args []string) error {
	n := ns.Node(name)
	if n == nil || n.Flannel == nil {
		return fmt.Errorf("no flanneld runs on %q", name)
	}
	if err := n.Flannel.Stop(stopGrace); err != nil {
		return err
	}
	n.FlannelArgs = args
	if err := ns.startFlannel(n); err != nil {
		return err
	}
	return waitFlannel(ctx, n)
}

// waitFlannel waits for flanneld's lease in the node's subnet file: until
// it is there, the CNI plugin cannot give a pod an address.
func waitFlannel(ctx context.Context, n *Node) error {
	ctx, cancel := context.WithTimeout(ctx, networkReadyTimeout)
	defer cancel()
	return poll(ctx, n.Flannel, n.SubnetFile, func() error {
		env, err := ReadSubnetFile(n.SubnetFile)
		if err != nil {
			return err
		}
		if env["FLANNEL_SUBNET"] == "" {
			return fmt.Errorf("no FLANNEL_SUBNET yet")
		}
		n.FlannelReady = time.Since(n.Flannel.Started)
		return nil
	})
}

// ReadSubnetFile reads a flannel subnet file (KEY=VALUE lines).
func ReadSubnetFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			env[k] = v
		}
	}
	return env, sc.Err()
}

// startKubeProxy runs kube-proxy in iptables mode on the node. What it
// would otherwise write outside the node's namespace is turned off:
// nf_conntrack_max and the conntrack hash size are the machine's (read-only
// from a node's namespace: kube-proxy would exit on the write), so
// --conntrack-max-per-core=0 leaves them as they are; the conntrack
// timeouts are left to the kernel; localhost NodePorts (which set
// route_localnet) are off, and NodePorts listen on the node's primary
// addresses.
func (ns *Nodes) startKubeProxy(n *Node) error {
	args := []string{
		"--kubeconfig=" + ns.proxyKubeconfig,
		"--hostname-override=" + n.Name,
		"--proxy-mode=iptables",
		"--bind-address=" + n.Lab.InternalIP,
		"--cluster-cidr=" + strings.Join(ns.CP.ClusterCIDRs, ","),
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--iptables-localhost-nodeports=false",
		"--nodeport-addresses=primary",
		"--healthz-bind-address=" + n.Lab.InternalIP + ":" + strconv.Itoa(KubeProxyHealthPort),
		"--metrics-bind-address=127.0.0.1:10249",
		"--v=2",
	}
	var err error
	n.KubeProxy, err = ns.CP.startIn(n.Lab.NetnsPath, "kube-proxy-"+n.Name, ns.CP.bins.nsenter, ns.netBins.kubeProxy, args, nil)
	return err
}

// StopKubeProxy ends kube-proxy on a node and removes its rules (kube-proxy
// --cleanup), as on a node whose kube-proxy pod never ran: evicted or
// Pending when the node joined, the seed's autoscaled nodes.
func (ns *Nodes) StopKubeProxy(ctx context.Context, name string) error {
	n := ns.Node(name)
	if n == nil || n.KubeProxy == nil {
		return fmt.Errorf("no kube-proxy runs on %q", name)
	}
	if err := n.KubeProxy.Stop(stopGrace); err != nil {
		return err
	}
	n.KubeProxy = nil
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, ns.CP.bins.nsenter, "--net="+n.Lab.NetnsPath, "--", ns.netBins.kubeProxy, "--cleanup").CombinedOutput()
	if err != nil {
		return fmt.Errorf("kube-proxy --cleanup on %s: %w\n%s", name, err, out)
	}
	return nil
}

// StartKubeProxy starts kube-proxy on a node where it does not run and
// waits until it is healthy.
func (ns *Nodes) StartKubeProxy(ctx context.Context, name string) error {
	n := ns.Node(name)
	if n == nil {
		return fmt.Errorf("no node %q", name)
	}
	if n.KubeProxy != nil {
		return fmt.Errorf("kube-proxy already runs on %s", name)
	}
	if err := ns.startKubeProxy(n); err != nil {
		return err
	}
	return waitKubeProxy(ctx, n)
}

// waitKubeProxy polls kube-proxy's /healthz on the node until it says it
// has synced its rules.
func waitKubeProxy(ctx context.Context, n *Node) error {
	ctx, cancel := context.WithTimeout(ctx, networkReadyTimeout)
	defer cancel()
	ns, err := netns.Open(n.Lab.NetnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: ns.Dial}}
	defer hc.CloseIdleConnections()
	url := "http://" + n.Lab.InternalIP + ":" + strconv.Itoa(KubeProxyHealthPort) + "/healthz"
	return poll(ctx, n.KubeProxy, url, func() error {
		if err := getOK(ctx, hc, url); err != nil {
			return err
		}
		n.KubeProxyReady = time.Since(n.KubeProxy.Started)
		return nil
	})
}

// poll runs check every 200 ms until it succeeds, p exits or ctx ends.
func poll(ctx context.Context, p *daemon.Process, what string, check func() error) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %v\nlast lines of %s:\n%s", p.Name, p.Err(), p.Log, p.Tail(logTailLines))
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s: %w (last: %v)\nlast lines of %s:\n%s", p.Name, what, ctx.Err(), last, p.Log, p.Tail(logTailLines))
		case <-tick.C:
		}
	}
}

// getOK is nil when GET url answers 200 OK.
func getOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
