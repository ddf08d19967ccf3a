// Package podns finds a pod's network namespace on a node, the way an
// engineer does by hand with crictl inspectp, the pod's cgroup, or nsenter
// after a search: through the container runtime (CRI: containerd, CRI-O),
// through the pod UID's cgroup, and by scanning every namespace on the node
// for the one that holds the pod's IP. The agent tries them in that order.
package podns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Found says where a pod's namespace is and how it was found.
type Found struct {
	// Path opens the namespace: /run/netns/NAME, /var/run/netns/cni-...,
	// or /proc/PID/ns/net.
	Path string `json:"path"`
	PID  int    `json:"pid,omitempty"`
	// Via is "cri", "cgroup" or "scan".
	Via string `json:"via"`
	// ResolvConf is the pod's own resolv.conf as its containers see it,
	// when a container process was found (the sandbox's pause process
	// has none); empty otherwise.
	ResolvConf string `json:"resolv_conf,omitempty"`
	// DNS is the DNS configuration the runtime was given for the pod's
	// resolv.conf (CRI), for when no container runs to read it from.
	DNS *DNSConfig `json:"dns,omitempty"`
}

// DNSConfig is a pod's DNS configuration, as the kubelet hands it to the
// runtime.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// ResolvConf renders it as the runtime writes the pod's resolv.conf.
func (d *DNSConfig) ResolvConf() []byte {
	var b strings.Builder
	for _, s := range d.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Searches, " "))
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return []byte(b.String())
}

// ErrNotFound is returned when no method finds the pod.
var ErrNotFound = errors.New("pod network namespace not found")

// DefaultCRISockets are where containerd and CRI-O listen.
var DefaultCRISockets = []string{
	"/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/var/run/containerd/containerd.sock",
	"/var/run/crio/crio.sock",
}

// PodRef names a pod.
type PodRef struct {
	Namespace, Name, UID string
	IP                   netip.Addr
}

// ViaCRI asks the container runtime for the pod's sandbox and reads its
// network namespace path (or its PID) from the sandbox's verbose status.
func ViaCRI(ctx context.Context, socket string, pod PodRef) (*Found, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("CRI socket %s: %w", socket, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI %s: %w", socket, err)
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	labels := map[string]string{}
	if pod.UID != "" {
		labels["io.kubernetes.pod.uid"] = pod.UID
	} else {
		labels["io.kubernetes.pod.namespace"] = pod.Namespace
		labels["io.kubernetes.pod.name"] = pod.Name
	}
	list, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{
		LabelSelector: labels,
		State:         &cri.PodSandboxStateValue{State: cri.PodSandboxState_SANDBOX_READY},
	}})
	if err != nil {
		return nil, fmt.Errorf("CRI %s: list pod sandboxes: %w", socket, err)
	}
	if len(list.Items) == 0 {
		return nil, fmt.Errorf("CRI %s: no ready sandbox for pod %s/%s: %w", socket, pod.Namespace, pod.Name, ErrNotFound)
	}
	// The newest ready sandbox is the pod's current one.
	sb := list.Items[0]
	for _, it := range list.Items[1:] {
		if it.CreatedAt > sb.CreatedAt {
			sb = it
		}
	}
	st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: sb.Id, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("CRI %s: sandbox %s status: %w", socket, sb.Id, err)
	}
	f, err := fromSandboxInfo(st.Info["info"])
	if err != nil {
		return nil, err
	}
	f.ResolvConf = containerResolvConf(ctx, rs, sb.Id)
	var info sandboxInfo
	if json.Unmarshal([]byte(st.Info["info"]), &info) == nil && info.Config.DNS != nil && len(info.Config.DNS.Servers) > 0 {
		f.DNS = info.Config.DNS
	}
	return f, nil
}

// containerResolvConf is the resolv.conf a running container of the
// sandbox sees (the runtime mounts the pod's into each container), read
// through the container's root: /proc/PID/root/etc/resolv.conf.
func containerResolvConf(ctx context.Context, rs cri.RuntimeServiceClient, sandbox string) string {
	list, err := rs.ListContainers(ctx, &cri.ListContainersRequest{Filter: &cri.ContainerFilter{
		PodSandboxId: sandbox, State: &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_RUNNING}}})
	if err != nil {
		return ""
	}
	for _, c := range list.Containers {
		st, err := rs.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: c.Id, Verbose: true})
		if err != nil {
			continue
		}
		var info struct {
			PID int `json:"pid"`
		}
		if json.Unmarshal([]byte(st.Info["info"]), &info) != nil || info.PID <= 0 {
			continue
		}
		p := fmt.Sprintf("/proc/%d/root/etc/resolv.conf", info.PID)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// sandboxInfo is the part of the verbose sandbox status that containerd and
// CRI-O both report.
type sandboxInfo struct {
	PID         int `json:"pid"`
	RuntimeSpec struct {
		Linux struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
	// Config is the sandbox's CRI config (containerd reports it).
	Config struct {
		DNS *DNSConfig `json:"dns_config"`
	} `json:"config"`
}

// readBounded reads a cgroup file; a pod's process list is small, and a
// file that is not must not make the agent read without end.
func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// ParseSandboxInfo reads a verbose sandbox status's "info" (containerd's
// and CRI-O's shape): the sandbox's PID and its network namespace path,
// either of which may be missing.
func ParseSandboxInfo(s string) (pid int, netnsPath string, err error) {
	if s == "" {
		return 0, "", errors.New("CRI: sandbox status has no verbose info")
	}
	var info sandboxInfo
	if err := json.Unmarshal([]byte(s), &info); err != nil {
		return 0, "", fmt.Errorf("CRI: sandbox info: %w", err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			netnsPath = ns.Path
		}
	}
	return info.PID, netnsPath, nil
}

func fromSandboxInfo(s string) (*Found, error) {
	pid, path, err := ParseSandboxInfo(s)
	if err != nil {
		return nil, err
	}
	// The path is the runtime's, in the runtime's mount namespace. Seen
	// from a container (the agent's) it may be missing, or a plain file:
	// a namespace bind-mounted after the container started does not
	// appear under a host directory mounted without propagation (the
	// lab's runtimes keep theirs under their own directory; a runtime
	// whose netns directory the agent does not mount HostToContainer,
	// likewise). The sandbox's process then leads to it through /proc.
	if path != "" {
		if ns, err := netns.Open(path); err == nil {
			ns.Close()
			return &Found{Path: path, PID: pid, Via: "cri"}, nil
		}
	}
	if pid > 0 {
		return &Found{Path: fmt.Sprintf("/proc/%d/ns/net", pid), PID: pid, Via: "cri"}, nil
	}
	if path != "" {
		_, err := netns.Open(path)
		return nil, fmt.Errorf("CRI: the sandbox's network namespace %s cannot be opened here (%v) and the sandbox info names no PID", path, err)
	}
	return nil, errors.New("CRI: sandbox info names neither a network namespace nor a PID")
}

// ViaCgroup finds a process of the pod through its UID's cgroup, in both the
// cgroupfs layout (kubepods/burstable/podUID) and the systemd one
// (kubepods-burstable-podUID_WITH_UNDERSCORES.slice), cgroup v1 (under a
// controller) and v2 (unified). root is normally /sys/fs/cgroup.
func ViaCgroup(root, uid string) (*Found, error) {
	if uid == "" {
		return nil, errors.New("cgroup: no pod UID")
	}
	names := []string{"pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_")}
	var podDir string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if depth := strings.Count(strings.TrimPrefix(p, root), "/"); depth > 6 {
			return fs.SkipDir
		}
		base := strings.TrimSuffix(d.Name(), ".slice")
		for _, n := range names {
			if base == n || strings.HasSuffix(base, "-"+n) {
				podDir = p
				return fs.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if podDir == "" {
		return nil, fmt.Errorf("cgroup: no cgroup for pod UID %s under %s: %w", uid, root, ErrNotFound)
	}
	var pid int
	filepath.WalkDir(podDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := readBounded(p)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil && n > 0 {
				pid = n
				return fs.SkipAll
			}
		}
		return nil
	})
	if pid == 0 {
		return nil, fmt.Errorf("cgroup: pod %s has no process in %s: %w", uid, podDir, ErrNotFound)
	}
	return &Found{Path: fmt.Sprintf("/proc/%d/ns/net", pid), PID: pid, Via: "cgroup"}, nil
}

// ViaScan opens every named namespace and every process's namespace (each
// namespace once) and returns the one with an interface holding ip. Two
// namespaces holding the same IP is an answer too: it is reported, not
// guessed.
func ViaScan(ip netip.Addr) (*Found, error) { return viaScan(ip, "") }

func viaScan(ip netip.Addr, prefix string) (*Found, error) {
	all, searched := scanAll(ip, prefix)
	switch len(all) {
	case 0:
		return nil, fmt.Errorf("scan: no namespace on this node holds %s (%d namespaces searched): %w", ip, searched, ErrNotFound)
	case 1:
		return &all[0], nil
	}
	var paths []string
	for _, f := range all {
		paths = append(paths, f.Path)
	}
	return nil, fmt.Errorf("scan: %d namespaces hold %s (%s): give the namespace path instead", len(all), ip, strings.Join(paths, ", "))
}

// ScanAll returns every namespace holding ip, and how many were searched.
func ScanAll(ip netip.Addr) ([]Found, int) { return scanAll(ip, "") }

// scanAll with a prefix searches only the named namespaces that carry it:
// where several nodes share one kernel (the lab), the rest are not this
// node's.
func scanAll(ip netip.Addr, prefix string) ([]Found, int) {
	var candidates []string
	if entries, err := os.ReadDir(netns.RunDir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				candidates = append(candidates, filepath.Join(netns.RunDir, e.Name()))
			}
		}
	}
	var procs []os.DirEntry
	if prefix == "" {
		procs, _ = os.ReadDir("/proc")
	}
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			candidates = append(candidates, "/proc/"+e.Name()+"/ns/net")
		}
	}
	seen := map[uint64]bool{}
	var out []Found
	for _, path := range candidates {
		ns, err := netns.Open(path)
		if err != nil {
			continue // processes come and go
		}
		if seen[ns.Inode()] {
			ns.Close()
			continue
		}
		seen[ns.Inode()] = true
		has, err := holds(ns, ip)
		ns.Close()
		if err == nil && has {
			f := Found{Path: path, Via: "scan"}
			if strings.HasPrefix(path, "/proc/") {
				f.PID, _ = strconv.Atoi(strings.Split(path, "/")[2])
			}
			out = append(out, f)
		}
	}
	return out, len(seen)
}

func holds(ns *netns.NS, ip netip.Addr) (bool, error) {
	h, err := ns.Handle()
	if err != nil {
		return false, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, 0)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// Find looks with a Finder of those sockets and that cgroup root.
func Find(ctx context.Context, pod PodRef, criSockets []string, cgroupRoot string) (*Found, error) {
	return Finder{CRISockets: criSockets, CgroupRoot: cgroupRoot}.Find(ctx, pod)
}

// Finder says where to look. ScanPrefix, when set, limits the scan to the
// named namespaces with that prefix (a lab node, whose kernel other nodes
// share) and leaves the cgroup out (the lab's pods have none).
type Finder struct {
	CRISockets []string
	CgroupRoot string
	ScanPrefix string
}

// Find tries the runtime, then the cgroup, then the scan, and reports what
// each method said when none succeeds.
func (fd Finder) Find(ctx context.Context, pod PodRef) (*Found, error) {
	criSockets, cgroupRoot := fd.CRISockets, fd.CgroupRoot
	var errs []error
	for _, s := range criSockets {
		if _, err := os.Stat(s); err != nil {
			continue
		}
		f, err := ViaCRI(ctx, s, pod)
		if err == nil {
			return f, nil
		}
		errs = append(errs, err)
	}
	if pod.UID != "" && fd.ScanPrefix == "" {
		f, err := ViaCgroup(cgroupRoot, pod.UID)
		if err == nil {
			return f, nil
		}
		errs = append(errs, err)
	}
	if pod.IP.IsValid() {
		f, err := viaScan(pod.IP, fd.ScanPrefix)
		if err == nil {
			return f, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("pod %s/%s: no CRI socket, no UID and no IP to search by: %w", pod.Namespace, pod.Name, ErrNotFound)
	}
	return nil, errors.Join(errs...)
}
