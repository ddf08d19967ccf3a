// Package cluster runs a real Kubernetes control plane for a lab instance:
// etcd and kube-apiserver (internal/kubetest), kube-controller-manager and
// kube-scheduler, all in one network namespace of the lab, so that the
// lab's nodes reach the API server over the underlay as a cluster's nodes
// do, and the controllers (node IPAM, node lifecycle, endpoints, service
// accounts) and the scheduler do what they do in a cluster.
//
// The lab has no master host: its nodes are node-a and node-b, and the
// `kubernetes` Service of the emulated cluster points at node-a. The control
// plane gets a namespace of its own, ndl-INSTANCE-master, joined to the
// underlay at MasterIP (a veth into the router's ul0 bridge, as node-a and
// node-b are). It carries the lab's prefix, so `netdiag lab down` removes it
// with the rest; Stop removes it first. Nothing else of the lab changes: no
// lab process, address or rule is touched, and the master's own addresses
// and routes live in its namespace.
//
// JoinNodes (nodes.go) then makes the lab's nodes the cluster's: on each
// its containerd (lab/containerd) and a kubelet (lab/kubelet) registered
// over the underlay as system:node:NAME, with the lab's PodCIDRs.
//
// Every process of the control plane is a child of the caller, started
// through nsenter (the PID is the program's own), carries the lab's process
// marker so that `netdiag lab down` finds it after a crash, is ended by its
// PID and dies with the caller (PDEATHSIG). Its files (certificates, kubeconfigs, etcd's data,
// logs) live in a directory under the lab's state directory, removed by
// Stop.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/vishvananda/netlink"
)

// The master's place on the underlay (198.18.0.0/24, 2001:2::/64), beside
// the router (.1) and the nodes (.11, .12).
const (
	MasterName = "master"
	MasterIP   = "198.18.0.10"
	MasterIP6  = "2001:2::10"
	// APIPort is the apiserver's port, the one the lab's `kubernetes`
	// Service targets.
	APIPort = 6443
	// Ports of the controller-manager's and the scheduler's health and
	// metrics endpoints, on the master's loopback.
	ControllerManagerPort = 10257
	SchedulerPort         = 10259

	underlayBridge = "ul0"
	routerVeth     = "ul-" + MasterName
	masterNIC      = "eth0"
	underlayMTU    = 1500
	routerUL       = "198.18.0.1"
	routerUL6      = "2001:2::1"

	// procMarker is the lab's process marker (lab/procs.go): `netdiag lab
	// down` ends every process whose environment carries
	// NETDIAG_LAB_PROC=INSTANCE/..., and the lab's own reconciler only
	// touches the processes its state file names.
	procMarker = "NETDIAG_LAB_PROC"

	healthTimeout = 60 * time.Second
	stopGrace     = 10 * time.Second
	logTailLines  = 40
)

// Options tune the control plane. The zero value is the lab's cluster.
type Options struct {
	// NodeCIDRMaskSize4 and NodeCIDRMaskSize6 are the sizes of the
	// PodCIDRs the controller-manager gives nodes; 0 means the lab's
	// (/24 and /64).
	NodeCIDRMaskSize4, NodeCIDRMaskSize6 int
	// ControllerManagerArgs and SchedulerArgs are added after the
	// package's flags; a flag given again wins (how faults change a
	// controller's behaviour).
	ControllerManagerArgs, SchedulerArgs []string
}

// ControlPlane is a running control plane of a lab.
type ControlPlane struct {
	Lab *lab.Lab
	// Netns and NetnsPath name the master's namespace; IP and IP6 are its
	// underlay addresses.
	Netns, NetnsPath string
	IP, IP6          string
	// API is etcd and the apiserver: its Admin config and Clientset dial
	// through the master's namespace from the calling process.
	API *kubetest.Cluster
	// URL is the apiserver, https://198.18.0.10:6443.
	URL string
	// Dir holds every file of the control plane, logs included.
	Dir string
	// Kubeconfig authenticates as the admin (system:masters), for
	// programs in the lab's namespaces.
	Kubeconfig string
	// ClusterCIDRs are the pod ranges the controller-manager allocates
	// node PodCIDRs from (IPv4, IPv6).
	ClusterCIDRs []string
	// Started is how long Start took until all three servers were
	// healthy; APIReady, ControllerManagerReady and SchedulerReady are
	// each one's time from its own start.
	Started                                          time.Duration
	APIReady, ControllerManagerReady, SchedulerReady time.Duration

	ns         *netns.NS
	bins       programs
	kcm, sched *daemon.Process
	stopOnce   sync.Once
	stopErr    error
}

// programs are the absolute paths of what Start runs besides kubetest's.
type programs struct{ kcm, sched, nsenter string }

// MissingError says which programs are not installed.
type MissingError struct{ Names []string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found (looked in PATH, $GOBIN and $(go env GOPATH)/bin): run ./scripts/install-deps", strings.Join(e.Names, " and "))
}

func findPrograms() (programs, error) {
	var p programs
	err := need(prog{"kube-controller-manager", &p.kcm}, prog{"kube-scheduler", &p.sched}, prog{"nsenter", &p.nsenter}, prog{"etcd", nil}, prog{"kube-apiserver", nil})
	return p, err
}

// prog is a program to find, and where its path goes (nil: only whether
// it is installed).
type prog struct {
	name string
	dst  *string
}

// need finds every program and names all the missing ones at once.
func need(progs ...prog) error {
	var absent []string
	for _, x := range progs {
		path, err := tools.FindGoInstalled(x.name)
		if err != nil {
			absent = append(absent, x.name)
			continue
		}
		if x.dst != nil {
			*x.dst = path
		}
	}
	if len(absent) > 0 {
		return &MissingError{Names: absent}
	}
	return nil
}

// Start brings the control plane up for the lab l, which must be up: the
// master's namespace on the underlay, then etcd and kube-apiserver, then
// kube-controller-manager and kube-scheduler, each waited for until
// healthy. On error nothing it started is left.
func Start(ctx context.Context, l *lab.Lab, opts Options) (cp *ControlPlane, err error) {
	t0 := time.Now()
	bins, err := findPrograms()
	if err != nil {
		return nil, err
	}
	router, err := l.Host("router")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(router.NetnsPath); err != nil {
		return nil, fmt.Errorf("lab %q is not up (%w): run `netdiag lab up --instance %s`", l.Instance, err, l.Instance)
	}
	if opts.NodeCIDRMaskSize4 == 0 {
		opts.NodeCIDRMaskSize4 = 24
	}
	if opts.NodeCIDRMaskSize6 == 0 {
		opts.NodeCIDRMaskSize6 = 64
	}
	cp = &ControlPlane{
		Lab: l, Netns: l.Prefix + MasterName, NetnsPath: filepath.Join(netns.RunDir, l.Prefix+MasterName),
		IP: MasterIP, IP6: MasterIP6, ClusterCIDRs: []string{l.ClusterCIDR, l.ClusterCIDR6}, bins: bins,
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, cp.Stop())
			cp = nil
		}
	}()
	if err := os.MkdirAll(l.StateDir, 0o755); err != nil {
		return cp, err
	}
	if cp.Dir, err = os.MkdirTemp(l.StateDir, "cluster-"); err != nil {
		return cp, err
	}
	if err := cp.plugIn(router.NetnsPath); err != nil {
		return cp, fmt.Errorf("master namespace %s: %w", cp.Netns, err)
	}

	apiDir := filepath.Join(cp.Dir, "apiserver")
	if err := os.Mkdir(apiDir, 0o700); err != nil {
		return cp, err
	}
	cp.API, err = kubetest.Run(ctx, apiDir, kubetest.Options{
		Netns: cp.NetnsPath, Listen: MasterIP, Port: APIPort,
		EndpointReconciler: true, ServiceAccountAdmission: true,
		Env: []string{marker(l, "apiserver")},
	})
	if err != nil {
		return cp, err
	}
	cp.URL, cp.APIReady = cp.API.URL, cp.API.Ready

	cp.Kubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	kcmConfig := filepath.Join(cp.Dir, "controller-manager.kubeconfig")
	schedConfig := filepath.Join(cp.Dir, "scheduler.kubeconfig")
	for _, k := range []struct {
		path string
		user kubetest.User
	}{
		{cp.Kubeconfig, kubetest.User{Name: "admin"}},
		// The identities kubeadm gives them: the apiserver's bootstrap
		// RBAC grants each what it needs, no more.
		{kcmConfig, kubetest.User{Name: "controller-manager", CommonName: "system:kube-controller-manager"}},
		{schedConfig, kubetest.User{Name: "scheduler", CommonName: "system:kube-scheduler"}},
	} {
		var users []kubetest.User
		if k.user.Name != "admin" {
			users = append(users, k.user)
		}
		if err := cp.API.WriteKubeconfig(k.path, users...); err != nil {
			return cp, err
		}
	}
	flex := filepath.Join(cp.Dir, "flexvolume")
	if err := os.Mkdir(flex, 0o755); err != nil {
		return cp, err
	}

	// Both serve /healthz on the master's loopback with an in-memory
	// self-signed certificate. They get no --authentication-kubeconfig
	// or --authorization-kubeconfig: delegated authentication would read
	// the apiserver's front-proxy (requestheader) CA, which kubetest does
	// not configure, and log its absence every few seconds; without them
	// /healthz, /readyz and /livez stay open and /metrics is refused.
	kcmArgs := append([]string{
		"--kubeconfig=" + kcmConfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ControllerManagerPort),
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + strings.Join(cp.ClusterCIDRs, ","),
		"--node-cidr-mask-size-ipv4=" + strconv.Itoa(opts.NodeCIDRMaskSize4),
		"--node-cidr-mask-size-ipv6=" + strconv.Itoa(opts.NodeCIDRMaskSize6),
		"--service-cluster-ip-range=" + l.ServiceCIDR,
		"--service-account-private-key-file=" + cp.API.ServiceAccountKeyFile,
		"--root-ca-file=" + cp.API.CAFile,
		"--flex-volume-plugin-dir=" + flex,
		"--profiling=false",
		"--v=2",
	}, opts.ControllerManagerArgs...)
	if cp.kcm, err = cp.startProc("kube-controller-manager", bins.nsenter, bins.kcm, kcmArgs); err != nil {
		return cp, err
	}
	schedArgs := append([]string{
		"--kubeconfig=" + schedConfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(SchedulerPort),
		"--leader-elect=false",
		"--profiling=false",
		"--v=2",
	}, opts.SchedulerArgs...)
	if cp.sched, err = cp.startProc("kube-scheduler", bins.nsenter, bins.sched, schedArgs); err != nil {
		return cp, err
	}
	if cp.ControllerManagerReady, err = cp.waitHealthy(ctx, cp.kcm, ControllerManagerPort); err != nil {
		return cp, err
	}
	if cp.SchedulerReady, err = cp.waitHealthy(ctx, cp.sched, SchedulerPort); err != nil {
		return cp, err
	}
	cp.Started = time.Since(t0)
	return cp, nil
}

func marker(l *lab.Lab, name string) string {
	return procMarker + "=" + l.Instance + "/cluster-" + name
}

// plugIn creates the master's namespace and joins it to the underlay: a
// veth from the router's bridge, the master's addresses and default routes
// via the router. Only lab namespaces are touched.
func (cp *ControlPlane) plugIn(routerPath string) error {
	ns, err := netns.CreateNamed(cp.Netns)
	if err != nil {
		return err
	}
	cp.ns = ns
	for _, kv := range [][2]string{
		// As in the lab's namespaces: IPv6 addresses usable at once, no
		// router solicitations or advertisements.
		{"ipv6.conf.all.disable_ipv6", "0"}, {"ipv6.conf.default.disable_ipv6", "0"},
		{"ipv6.conf.all.accept_dad", "0"}, {"ipv6.conf.default.accept_dad", "0"},
		{"ipv6.conf.all.accept_ra", "0"}, {"ipv6.conf.default.accept_ra", "0"},
		{"ipv6.conf.default.router_solicitations", "0"},
	} {
		if err := ns.WriteSysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	rns, err := netns.Open(routerPath)
	if err != nil {
		return err
	}
	defer rns.Close()
	rh, err := rns.Handle()
	if err != nil {
		return err
	}
	defer rh.Close()
	mh, err := ns.Handle()
	if err != nil {
		return err
	}
	defer mh.Close()

	br, err := rh.LinkByName(underlayBridge)
	if err != nil {
		return fmt.Errorf("the router's underlay bridge %s: %w", underlayBridge, err)
	}
	if _, err := rh.LinkByName(routerVeth); err == nil {
		return fmt.Errorf("the router already has a link %s: another control plane runs for lab %q", routerVeth, cp.Lab.Instance)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: routerVeth, MTU: underlayMTU, MasterIndex: br.Attrs().Index},
		PeerName: masterNIC, PeerNamespace: netlink.NsFd(ns.Fd())}
	if err := rh.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s into the router: %w", routerVeth, err)
	}
	rv, err := rh.LinkByName(routerVeth)
	if err != nil {
		return err
	}
	if err := rh.LinkSetUp(rv); err != nil {
		return err
	}
	lo, err := mh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := mh.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := mh.LinkByName(masterNIC)
	if err != nil {
		return err
	}
	for _, a := range []string{MasterIP + "/24", MasterIP6 + "/64"} {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return err
		}
		if err := mh.AddrAdd(eth, addr); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	if err := mh.LinkSetUp(eth); err != nil {
		return err
	}
	for _, gw := range []string{routerUL, routerUL6} {
		if err := mh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// Stop ends the scheduler, the controller-manager, the apiserver and etcd
// by their PIDs, removes the master's namespace (and with it the veth in
// the router) and the control plane's directory. The logs go with it: call
// DumpLogs first to keep them. Stopping twice is harmless.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		for _, p := range []*daemon.Process{cp.sched, cp.kcm} {
			if p != nil {
				errs = append(errs, p.Stop(stopGrace))
			}
		}
		if cp.API != nil {
			errs = append(errs, cp.API.Stop())
		}
		if cp.ns != nil {
			cp.ns.Close()
			if err := netns.DeleteNamed(cp.Netns); err != nil {
				errs = append(errs, fmt.Errorf("remove namespace %s: %w", cp.Netns, err))
			}
		}
		if cp.Dir != "" {
			if err := os.RemoveAll(cp.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// PIDs are the process IDs of everything the control plane started.
func (cp *ControlPlane) PIDs() []int {
	var pids []int
	if cp.API != nil {
		pids = cp.API.PIDs()
	}
	for _, p := range []*daemon.Process{cp.kcm, cp.sched} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// DumpLogs writes the end of every log through logf.
func (cp *ControlPlane) DumpLogs(logf func(format string, args ...any)) {
	if cp.API != nil {
		cp.API.DumpLogs(logf)
	}
	for _, p := range []*daemon.Process{cp.kcm, cp.sched} {
		if p != nil {
			if t := p.Tail(logTailLines); t != "" {
				logf("cluster: last lines of %s:\n%s", p.Log, t)
			}
		}
	}
}

func (cp *ControlPlane) startProc(name, nsenter, bin string, args []string) (*daemon.Process, error) {
	return cp.startIn(cp.NetnsPath, name, nsenter, bin, args, nil)
}

// startIn runs bin in the network namespace at netnsPath, with the lab's
// marker and env added to a clean environment; its log is NAME.log in the
// control plane's directory.
func (cp *ControlPlane) startIn(netnsPath, name, nsenter, bin string, args, env []string) (*daemon.Process, error) {
	// nsenter enters the namespace and execs the program: the PID is the
	// program's own.
	argv := append([]string{"--net=" + netnsPath, "--", bin}, args...)
	cmd := exec.Command(nsenter, argv...)
	cmd.Dir = cp.Dir
	cmd.Env = append(append(cleanEnv(), env...), marker(cp.Lab, name))
	return daemon.Start(name, cmd, filepath.Join(cp.Dir, name+".log"))
}

// cleanEnv is the caller's environment without a lab marker it may carry,
// without what would change flanneld's flags (every FLANNELD_FLAG variable
// is its --flag) or make it notify the caller's service manager
// (NOTIFY_SOCKET), and with the sbin directories on PATH, where kube-proxy
// and flanneld find iptables.
func cleanEnv() []string {
	var env []string
	path := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, procMarker+"="), strings.HasPrefix(kv, "FLANNELD_"), strings.HasPrefix(kv, "NOTIFY_SOCKET="):
		case strings.HasPrefix(kv, "PATH="):
			path = kv + ":/usr/sbin:/sbin"
		default:
			env = append(env, kv)
		}
	}
	return append(env, path)
}

// waitHealthy polls the server's /healthz on the master's loopback until it
// answers ok, the process exits or the time is up. The certificate is the
// server's in-memory self-signed one, so it is not verified: this is a
// liveness probe of a process this package started, on loopback.
func (cp *ControlPlane) waitHealthy(ctx context.Context, p *daemon.Process, port int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:     cp.ns.Dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
	}}
	defer hc.CloseIdleConnections()
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	err := poll(ctx, p, url, func() error { return getOK(ctx, hc, url) })
	if err != nil {
		return 0, err
	}
	return time.Since(p.Started), nil
}
