package containerd

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/netdiag/netdiag/collectors/podns"
	"net/netip"
	"path/filepath"
	"regexp"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSpec is a pod with one container, as the kubelet would ask for it.
type PodSpec struct {
	Namespace string
	Name      string
	// UID defaults to a random UUID.
	UID string
	// Container is the container's name; default "server".
	Container string
	// Image is an imported image's reference (ImportImage).
	Image string
	// Command replaces the image's entrypoint, Args its Cmd.
	Command []string
	Args    []string
	Env     map[string]string
	// Port is a TCP port the container listens on: RunPod returns once
	// it accepts connections from the node. 0: do not wait.
	Port int
	// Labels are added to the sandbox's and the container's labels.
	Labels map[string]string
	// DNSServers and DNSSearches make the pod's resolv.conf; none: the
	// machine's, as containerd copies it.
	DNSServers  []string
	DNSSearches []string

	// What a DaemonSet's node agent asks for (hostNetwork, hostPID, its
	// securityContext and hostPath volumes).

	// HostNetwork runs the pod in the node's network namespace (CRI
	// namespace mode NODE) instead of one of its own: on a lab node that
	// is the node's namespace, which containerd runs in. No CNI network is
	// set up; the pod's addresses are the node's (those of the interface
	// its default route leaves by), and Port is waited for on them.
	HostNetwork bool
	// HostPID shares the machine's PID namespace (CRI mode NODE): the
	// container's /proc shows every process.
	HostPID bool
	// RunAsUser is the container's user ID; nil: the image's USER.
	RunAsUser *int64
	// CapAdd and CapDrop change the container's capabilities from the
	// runtime's default set, by their Kubernetes names ("NET_ADMIN", no
	// CAP_ prefix); "ALL" in CapDrop drops every one before CapAdd adds.
	CapAdd  []string
	CapDrop []string
	// Mounts are host paths mounted into the container.
	Mounts []Mount
	// ReadOnlyRootfs makes the image's filesystem read-only
	// (readOnlyRootFilesystem); mount a directory where it must write.
	ReadOnlyRootfs bool
	// Seccomp is the container's seccomp profile, as Kubernetes names
	// it: "" or "Unconfined" (the CRI's default: none), "RuntimeDefault"
	// (containerd's default profile).
	Seccomp string
}

// Mount is a host path (a directory, a file or a socket) mounted into the
// container, as a hostPath volume is.
type Mount struct {
	HostPath      string
	ContainerPath string
	ReadOnly      bool
	// Propagation is Kubernetes' mountPropagation: "" or "None",
	// "HostToContainer" (mounts made on the host later appear in the
	// container: rslave; the host path must be on a shared or slave
	// mount), "Bidirectional" (rshared).
	Propagation string
}

// criMount maps a Mount to the CRI's.
func (m Mount) criMount() (*cri.Mount, error) {
	if !filepath.IsAbs(m.HostPath) || !filepath.IsAbs(m.ContainerPath) {
		return nil, fmt.Errorf("mount %s -> %s: both paths must be absolute", m.HostPath, m.ContainerPath)
	}
	out := &cri.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, Readonly: m.ReadOnly}
	switch m.Propagation {
	case "", "None":
		out.Propagation = cri.MountPropagation_PROPAGATION_PRIVATE
	case "HostToContainer":
		out.Propagation = cri.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
	case "Bidirectional":
		out.Propagation = cri.MountPropagation_PROPAGATION_BIDIRECTIONAL
	default:
		return nil, fmt.Errorf("mount %s -> %s: propagation %q: accepted are None, HostToContainer and Bidirectional", m.HostPath, m.ContainerPath, m.Propagation)
	}
	return out, nil
}

// Pod is a running pod.
type Pod struct {
	Spec        PodSpec
	SandboxID   string
	ContainerID string
	// IP is the pod's IPv4 address, IPs all its addresses (IPv6 too on a
	// dual-stack node), from the sandbox status.
	IP  netip.Addr
	IPs []netip.Addr
	// NetnsPath is the sandbox's network namespace (a mount under the
	// runtime's state directory); PID is the pause process.
	NetnsPath string
	PID       int
	// ContainerPID is the container's process, as the machine numbers it.
	ContainerPID int
	// LogPath is the container's CRI log.
	LogPath string
}

// Kubernetes' pod labels: podns.ViaCRI and crictl find pods by them.
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
	labelContainer    = "io.kubernetes.container.name"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// RunPod creates the pod's sandbox (its network set up by CNI on the node's
// bridge), creates and starts its container, reads its addresses, and when
// spec.Port is set waits until the port accepts connections from the node.
// On failure the sandbox is removed again.
func (r *Runtime) RunPod(ctx context.Context, spec PodSpec) (_ *Pod, err error) {
	if !dnsLabel.MatchString(spec.Namespace) || !dnsLabel.MatchString(spec.Name) {
		return nil, fmt.Errorf("pod %s/%s: namespace and name must be DNS labels (lower-case letters, digits, '-')", spec.Namespace, spec.Name)
	}
	if spec.Image == "" {
		return nil, fmt.Errorf("pod %s/%s: no image (import one with ImportImage, e.g. %s)", spec.Namespace, spec.Name, ServerRef)
	}
	if spec.Port < 0 || spec.Port > 65535 {
		return nil, fmt.Errorf("pod %s/%s: port %d: accepted are 1-65535, or 0 for no readiness wait", spec.Namespace, spec.Name, spec.Port)
	}
	if spec.UID == "" {
		spec.UID = newUID()
	}
	if spec.Container == "" {
		spec.Container = "server"
	}
	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[labelPodName], labels[labelPodNamespace], labels[labelPodUID] = spec.Name, spec.Namespace, spec.UID
	var mounts []*cri.Mount
	for _, m := range spec.Mounts {
		cm, err := m.criMount()
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", spec.Namespace, spec.Name, err)
		}
		mounts = append(mounts, cm)
	}
	nsOpts := &cri.NamespaceOption{Network: cri.NamespaceMode_POD, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}
	hostname := spec.Name
	if spec.HostNetwork {
		// As the kubelet asks for a host-network pod: the node's
		// network (and so its host name: containerd keeps the UTS
		// namespace too).
		nsOpts.Network, hostname = cri.NamespaceMode_NODE, ""
	}
	if spec.HostPID {
		nsOpts.Pid = cri.NamespaceMode_NODE
	}
	secure, err := containerSecurity(spec, nsOpts)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", spec.Namespace, spec.Name, err)
	}

	sbConfig := &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{Name: spec.Name, Namespace: spec.Namespace, Uid: spec.UID},
		Hostname: hostname,
		// As the kubelet names it: /var/log/pods/NAMESPACE_NAME_UID.
		LogDirectory: filepath.Join(r.Dir, "pods", spec.Namespace+"_"+spec.Name+"_"+spec.UID),
		Labels:       labels,
		Annotations:  map[string]string{"netdiag.lab/runtime": r.Name},
		Linux: &cri.LinuxPodSandboxConfig{
			// cgroupfs layout as the kubelet's (kubepods/.../podUID)
			// under the runtime's own parent, so podns.ViaCgroup finds
			// the pod and teardown removes one tree.
			CgroupParent: "/" + r.Name + "/pod" + spec.UID,
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: nsOpts,
			},
		},
	}
	if len(spec.DNSServers) > 0 || len(spec.DNSSearches) > 0 {
		sbConfig.DnsConfig = &cri.DNSConfig{Servers: spec.DNSServers, Searches: spec.DNSSearches, Options: []string{"ndots:5"}}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sb, err := r.rs.RunPodSandbox(rctx, &cri.RunPodSandboxRequest{Config: sbConfig})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: run sandbox: %w (containerd: %s)", spec.Namespace, spec.Name, err, r.LogTail(3))
	}
	pod := &Pod{Spec: spec, SandboxID: sb.PodSandboxId}
	defer func() {
		if err != nil {
			if rerr := r.RemovePod(context.WithoutCancel(ctx), pod); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()

	var envs []*cri.KeyValue
	for k, v := range spec.Env {
		envs = append(envs, &cri.KeyValue{Key: k, Value: []byte(v)})
	}
	ctrLabels := map[string]string{labelContainer: spec.Container}
	for k, v := range labels {
		ctrLabels[k] = v
	}
	pod.LogPath = filepath.Join(sbConfig.LogDirectory, spec.Container, "0.log")
	created, err := r.rs.CreateContainer(rctx, &cri.CreateContainerRequest{
		PodSandboxId: sb.PodSandboxId,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: spec.Container},
			Image:    &cri.ImageSpec{Image: spec.Image},
			Command:  spec.Command,
			Args:     spec.Args,
			Envs:     envs,
			Labels:   ctrLabels,
			LogPath:  filepath.Join(spec.Container, "0.log"),
			Mounts:   mounts,
			Linux:    &cri.LinuxContainerConfig{SecurityContext: secure},
		},
		SandboxConfig: sbConfig,
	})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: create container: %w", spec.Namespace, spec.Name, err)
	}
	pod.ContainerID = created.ContainerId
	if _, err := r.rs.StartContainer(rctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return nil, fmt.Errorf("pod %s/%s: start container: %w (log: %s)", spec.Namespace, spec.Name, err, tail(pod.LogPath, 3))
	}
	if err := r.readSandbox(rctx, pod); err != nil {
		return nil, err
	}
	cst, err := r.rs.ContainerStatus(rctx, &cri.ContainerStatusRequest{ContainerId: pod.ContainerID, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: container status: %w", spec.Namespace, spec.Name, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(cst.GetInfo()["info"]), &info); err != nil {
		return nil, fmt.Errorf("pod %s/%s: container status info: %w", spec.Namespace, spec.Name, err)
	}
	pod.ContainerPID = info.PID
	if spec.Port > 0 {
		if err := r.waitPort(rctx, pod, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return pod, nil
}

// containerSecurity is the container's security context: the pod's
// namespaces, and the user, capabilities, root filesystem and seccomp
// profile the spec asks for.
func containerSecurity(spec PodSpec, ns *cri.NamespaceOption) (*cri.LinuxContainerSecurityContext, error) {
	sc := &cri.LinuxContainerSecurityContext{NamespaceOptions: ns, ReadonlyRootfs: spec.ReadOnlyRootfs}
	if spec.RunAsUser != nil {
		sc.RunAsUser = &cri.Int64Value{Value: *spec.RunAsUser}
	}
	if len(spec.CapAdd) > 0 || len(spec.CapDrop) > 0 {
		sc.Capabilities = &cri.Capability{AddCapabilities: spec.CapAdd, DropCapabilities: spec.CapDrop}
	}
	switch spec.Seccomp {
	case "", "Unconfined":
	case "RuntimeDefault":
		sc.Seccomp = &cri.SecurityProfile{ProfileType: cri.SecurityProfile_RuntimeDefault}
	default:
		return nil, fmt.Errorf("seccomp profile %q: accepted are Unconfined and RuntimeDefault", spec.Seccomp)
	}
	return sc, nil
}

// readSandbox fills the pod's addresses, namespace path and PID from the
// sandbox's verbose status.
func (r *Runtime) readSandbox(ctx context.Context, pod *Pod) error {
	st, err := r.rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod.SandboxID, Verbose: true})
	if err != nil {
		return fmt.Errorf("pod %s/%s: sandbox status: %w", pod.Spec.Namespace, pod.Spec.Name, err)
	}
	if pod.Spec.HostNetwork {
		// The runtime reports no address for a host-network sandbox
		// (the kubelet gives it the node's) and no namespace path (it
		// is containerd's own, the node's).
		pid, _, err := podns.ParseSandboxInfo(st.GetInfo()["info"])
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", pod.Spec.Namespace, pod.Spec.Name, err)
		}
		pod.PID, pod.NetnsPath = pid, r.node.Path()
		if pod.IPs, err = r.nodeAddrs(); err != nil {
			return fmt.Errorf("pod %s/%s: %w", pod.Spec.Namespace, pod.Spec.Name, err)
		}
		for _, a := range pod.IPs {
			if a.Is4() {
				pod.IP = a
				break
			}
		}
		return nil
	}
	net := st.GetStatus().GetNetwork()
	texts := []string{net.GetIp()}
	for _, a := range net.GetAdditionalIps() {
		texts = append(texts, a.GetIp())
	}
	for _, t := range texts {
		if a, err := netip.ParseAddr(t); err == nil {
			pod.IPs = append(pod.IPs, a)
			if a.Is4() && !pod.IP.IsValid() {
				pod.IP = a
			}
		}
	}
	if !pod.IP.IsValid() {
		return fmt.Errorf("pod %s/%s: the sandbox has no IPv4 address (status network: %v)", pod.Spec.Namespace, pod.Spec.Name, texts)
	}
	pid, path, err := podns.ParseSandboxInfo(st.GetInfo()["info"])
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Spec.Namespace, pod.Spec.Name, err)
	}
	pod.PID, pod.NetnsPath = pid, path
	return nil
}

// waitPort dials the pod's port from the node until it answers, and fails
// early with the container's log when the container has exited.
func (r *Runtime) waitPort(ctx context.Context, pod *Pod, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	addr := netip.AddrPortFrom(pod.IP, uint16(pod.Spec.Port)).String()
	var last error
	for {
		dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := r.dialNode(dctx, addr)
		dcancel()
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		st, err := r.rs.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: pod.ContainerID})
		if err == nil && st.GetStatus().GetState() == cri.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("pod %s/%s: container exited (code %d, %s) before port %d answered; log: %s",
				pod.Spec.Namespace, pod.Spec.Name, st.GetStatus().GetExitCode(), st.GetStatus().GetReason(), pod.Spec.Port, tail(pod.LogPath, 3))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s: %s does not answer from the node after %s: %v; log: %s", pod.Spec.Namespace, pod.Spec.Name, addr, limit, last, tail(pod.LogPath, 3))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ExecResult is what a command run in a container printed, and its exit
// code.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// Exec runs argv in the pod's container, as `kubectl exec` does (CRI
// ExecSync): with the container's user, capabilities, namespaces and
// mounts. It waits for the command at most timeout (0: 30 s). A command
// that ran and failed is a result with its exit code, not an error.
func (r *Runtime) Exec(ctx context.Context, pod *Pod, timeout time.Duration, argv ...string) (*ExecResult, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("pod %s/%s: exec: no command", pod.Spec.Namespace, pod.Spec.Name)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	res, err := r.rs.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: pod.ContainerID, Cmd: argv, Timeout: int64((timeout + time.Second - 1) / time.Second)})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: exec %v: %w", pod.Spec.Namespace, pod.Spec.Name, argv, err)
	}
	return &ExecResult{Stdout: res.GetStdout(), Stderr: res.GetStderr(), ExitCode: res.GetExitCode()}, nil
}

// RemovePod stops the pod's container (with a grace period, as the kubelet
// does), then stops and removes its sandbox: CNI DEL frees its address and
// veth, and containerd unmounts its namespace.
func (r *Runtime) RemovePod(ctx context.Context, pod *Pod) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var errs []error
	if pod.ContainerID != "" {
		if _, err := r.rs.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: pod.ContainerID, Timeout: 5}); err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: stop container: %w", pod.Spec.Namespace, pod.Spec.Name, err))
		}
	}
	if err := removeSandbox(ctx, r.rs, pod.SandboxID); err != nil {
		errs = append(errs, fmt.Errorf("pod %s/%s: %w", pod.Spec.Namespace, pod.Spec.Name, err))
	}
	return errors.Join(errs...)
}

// newUID makes a random UUID (version 4), the form pod UIDs take.
func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := fmt.Sprintf("%x", b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// String names the pod for logs.
func (p *Pod) String() string {
	return p.Spec.Namespace + "/" + p.Spec.Name + " (sandbox " + shortID(p.SandboxID) + ", " + p.IP.String() + ")"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
