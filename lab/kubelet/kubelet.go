// Package kubelet runs a real kubelet on a lab node: in the node's network
// namespace, on the node's containerd (lab/containerd), registered with a
// real API server (internal/kubetest), so that what goes through a node's
// kubelet (port-forward, logs, static pods) can be tested as a cluster has
// it. Everything the kubelet needs from this machine and cannot have here
// is turned off in its configuration, each with the reason.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/tools"
)

// Options say where the kubelet runs and what it talks to.
type Options struct {
	NodeName, NodeIP string
	// NodeIP6, if set, is the node's second InternalIP (--node-ip
	// NodeIP,NodeIP6: a dual-stack node). The kubelet listens on NodeIP
	// only.
	NodeIP6 string
	// NetnsPath is the node's network namespace.
	NetnsPath string
	// CRISocket is the node's containerd; CgroupRoot the cgroup under
	// which its pods go (the runtime's own, so that its teardown removes
	// them).
	CRISocket, CgroupRoot string
	// Kubeconfig reaches the API server; ClientCAFile verifies who calls
	// the kubelet (the API server's client certificate).
	Kubeconfig, ClientCAFile string
	// StaticPods are manifests (file name to YAML) the kubelet runs
	// without the API server's say.
	StaticPods map[string]string
	// ClusterDNS and ClusterDomain make the resolv.conf of the pods it
	// runs (dnsPolicy ClusterFirst), as in any cluster.
	ClusterDNS, ClusterDomain string
	// Env is added to the kubelet's environment (a marker by which its
	// owner finds it after a crash).
	Env []string
}

// Kubelet is a running kubelet.
type Kubelet struct {
	Dir string
	Log string
	cmd *exec.Cmd
	// release lets the thread that started the kubelet end.
	release func()
}

// config is the kubelet's configuration file. Off, and why:
//   - failSwapOn, failCgroupV1: this machine may have swap and has cgroup v1;
//     a lab node is not a production node.
//   - cgroupsPerQOS, enforceNodeAllocatable: the kubelet would create and
//     size its QoS hierarchy at the machine's cgroup root; pods go under
//     cgroupRoot, the runtime's own cgroup, instead.
//   - localStorageCapacityIsolation, evictionHard: the kubelet would read
//     and police the machine's disks, which are not the lab node's.
//   - kernelMemcgNotification false: the kubelet would arm memcg
//     notifications on the machine's memory cgroup.
//   - protectKernelDefaults true: with false the kubelet writes the
//     machine-wide sysctls of kernelTunables whenever they differ; with
//     true it only reads them, and reads them from files of its own
//     (startIsolated).
//   - authorization AlwaysAllow: whoever the client CA vouches for (the
//     API server) may call it; anonymous callers may not.
const config = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[2]q}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: %[3]q
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
localStorageCapacityIsolation: false
evictionHard: {}
evictionPressureTransitionPeriod: 0s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
protectKernelDefaults: true
kernelMemcgNotification: false
containerRuntimeEndpoint: %[4]q
staticPodPath: %[5]q
podLogsDir: %[6]q
resolvConf: ""
clusterDNS: [%[7]q]
clusterDomain: %[8]q
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 2s
nodeStatusUpdateFrequency: 5s
`

// Start runs the kubelet in the node's namespace.
func Start(ctx context.Context, o Options) (_ *Kubelet, err error) {
	bin, err := tools.FindGoInstalled("kubelet")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", filepath.Base(o.NetnsPath)+"-kubelet-")
	if err != nil {
		return nil, err
	}
	k := &Kubelet{Dir: dir, Log: filepath.Join(dir, "kubelet.log")}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	manifests, logs := filepath.Join(dir, "manifests"), filepath.Join(dir, "pod-logs")
	for _, d := range []string{manifests, logs, filepath.Join(dir, "root"), filepath.Join(dir, "certs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	for name, y := range o.StaticPods {
		if err := os.WriteFile(filepath.Join(manifests, name), []byte(y), 0o644); err != nil {
			return nil, err
		}
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, o.NodeIP, o.ClientCAFile, o.CgroupRoot, "unix://"+o.CRISocket, manifests, logs, o.ClusterDNS, o.ClusterDomain), 0o644); err != nil {
		return nil, err
	}
	ns, err := netns.Open(o.NetnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	log, err := os.Create(k.Log)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	nodeIP := o.NodeIP
	if o.NodeIP6 != "" {
		nodeIP += "," + o.NodeIP6
	}
	k.cmd = exec.Command(bin, "--config", cfg, "--kubeconfig", o.Kubeconfig, "--hostname-override", o.NodeName, "--node-ip", nodeIP,
		"--root-dir", filepath.Join(dir, "root"), "--cert-dir", filepath.Join(dir, "certs"), "--v", "2",
		// Its default, /usr/libexec/kubernetes/kubelet-plugins/volume/exec,
		// is created on the machine's disk if missing.
		"--volume-plugin-dir", filepath.Join(dir, "volume-plugins"))
	k.cmd.Stdout, k.cmd.Stderr = log, log
	if len(o.Env) > 0 {
		k.cmd.Env = append(os.Environ(), o.Env...)
	}
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if k.release, err = startIsolated(k.cmd, ns, dir); err != nil {
		return nil, fmt.Errorf("start kubelet: %w", err)
	}
	return k, nil
}

// Stop ends the kubelet by its PID and removes what it left: its mounts
// under its directory (deepest first), then the directory.
func (k *Kubelet) Stop() error {
	var errs []error
	if k.cmd != nil && k.cmd.Process != nil {
		k.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- k.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			k.cmd.Process.Kill()
			<-done
		}
	}
	if k.release != nil {
		k.release()
	}
	errs = append(errs, removeDir(k.Dir))
	return errors.Join(errs...)
}

// removeDir unmounts whatever is mounted under a kubelet's directory, then
// removes it: RemoveAll must never walk into a pod's volume.
func removeDir(dir string) error {
	var errs []error
	mounts, _ := mountsUnder(dir)
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(dir)
}

// RemoveLeftovers removes the directories of the kubelets of a lab's nodes
// (namePrefix is the lab's, ndl-INSTANCE-) that a killed process left: call
// it once the lab's processes are ended, as `netdiag lab down` does. It
// returns what it removed.
func RemoveLeftovers(namePrefix string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), namePrefix+"*-kubelet-*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, d := range dirs {
		if err := removeDir(d); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}

// PID is the kubelet's process ID, 0 before it started.
func (k *Kubelet) PID() int {
	if k.cmd == nil || k.cmd.Process == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

// Tail is the end of the kubelet's log.
func (k *Kubelet) Tail(n int) string { return daemon.TailFile(k.Log, n) }

// mountsUnder lists mount points under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}
