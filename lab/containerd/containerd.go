// Package containerd runs a real container runtime on a lab node: Debian's
// containerd and runc, started inside the node's network namespace, creating
// real pod sandboxes through the CRI API with real CNI plugins (bridge on the
// node's cni0, host-local IPAM), from images built locally out of static Go
// binaries because the lab cannot pull from a registry.
//
// It exists so that the node agent and the collectors are proven against pods
// the way a kubelet makes them (a sandbox, its netns mount, its cgroup, the
// runtime's verbose status), not only against the lab's bare namespaces.
//
// A runtime belongs to its node's lab instance: for the node namespace
// ndl-INST-node-a its name is ndl-INST-node-a-containerd. That name is its
// pods' cgroup parent in every hierarchy (so `netdiag lab down` of the
// instance removes leftover cgroups with the instance's) and its CNI
// network's; everything else it creates lives under one directory,
// TMPDIR/NAME-PID-N: containerd's root, state, gRPC socket, CNI configuration
// and IPAM data, pod logs and the pods' network namespace mounts. Stop
// removes all of it, and CleanStale removes what a killed process left. What
// containerd 1.6 puts outside that directory whatever its configuration
// (shim sockets in /run/containerd/s, libcni's result cache in
// /var/lib/cni/results) is removed by name.
package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/netdiag/netdiag/internal/procfs"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nameSuffix ends a runtime's name: NODE-NETNS-containerd.
const nameSuffix = "-containerd"

// Options says where and how to run the runtime. Only NetnsPath is required:
// the rest is read from the node (its bridge's addresses and MTU) or probed.
type Options struct {
	// NetnsPath is the node's network namespace, a lab namespace
	// (/run/netns/ndl-INST-node-a). One runtime per node at a time.
	NetnsPath string
	// Bridge is the node's pod bridge; default "cni0".
	Bridge string
	// Ranges are the pod address ranges, at most one per family. Default:
	// for each family the bridge has a global address in, the upper half
	// of the bridge's IPv4 subnet (the lab's own pods take low addresses)
	// and its IPv6 twin (see DefaultRanges).
	Ranges []Range
	// MTU of the pods' interfaces; default the bridge's MTU.
	MTU int
	// Snapshotter is "overlayfs" or "native"; default: overlayfs if an
	// overlay mount works in the runtime's directory, else native.
	Snapshotter string
	// CNIBinDir holds the bridge, host-local and loopback plugins; default
	// $GOPATH/bin/cni (where scripts/install-deps builds them).
	CNIBinDir string
	// Flannel, when set, makes the node's pod network flannel's: the
	// flannel CNI plugin reads the node's lease from flanneld's subnet
	// file and delegates to the bridge plugin, which creates cni0 on the
	// first pod. Bridge, Ranges and MTU are then not used: the addresses
	// and the MTU are the lease's.
	Flannel *FlannelNetwork
	// PauseBinary is a static pause binary for the sandbox image; default:
	// built from PausePackage with the go command, from the working
	// directory (which must be inside this module).
	PauseBinary string
	// Log receives progress; default: discarded.
	Log *slog.Logger
}

// FlannelNetwork is a node's pod network as kube-flannel's CNI
// configuration makes it.
type FlannelNetwork struct {
	// SubnetFile is the node's flanneld --subnet-file (one per node: the
	// default /run/flannel/subnet.env would be shared by every node).
	SubnetFile string
}

// Range is one family's pod addresses, as host-local takes them.
type Range struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
	Start   netip.Addr
	End     netip.Addr
}

// Runtime is a containerd running in a node's network namespace.
type Runtime struct {
	// Dir holds everything the runtime writes.
	Dir string
	// Name is NODE-NETNS-containerd: the CNI network's name and the pods'
	// cgroup parent.
	Name string
	// Socket is containerd's gRPC (and CRI) socket.
	Socket string
	// Snapshotter is the one containerd unpacks images with.
	Snapshotter string
	// Ranges are the pod address ranges in use.
	Ranges []Range
	// PID is containerd's process.
	PID int
	// Timings of Start's steps, for tests and benchmarks to print.
	Timings Timings

	node   *netns.NS
	conn   *grpc.ClientConn
	rs     cri.RuntimeServiceClient
	is     cri.ImageServiceClient
	exited chan struct{}
	log    *slog.Logger

	mu      sync.Mutex
	stopped bool
}

// Timings are how long Start's steps took.
type Timings struct {
	BuildPause  time.Duration
	Containerd  time.Duration // start until CRI reports runtime and network ready
	ImportPause time.Duration
}

// File names inside a runtime's directory.
const (
	configFile = "config.toml"
	socketFile = "containerd.sock"
	logFile    = "containerd.log"
	createdDir = "created-dirs.json"
)

// Paths that containerd 1.6 and libcni use whatever the configuration says.
// When one does not exist before a runtime starts, the runtime removes it
// again if it is empty at the end.
var globalDirs = []string{"/run/containerd", "/run/containerd/s", "/var/lib/cni", "/var/lib/cni/results"}

// Start runs containerd in the node's namespace, waits until its CRI plugin
// reports the runtime and the network ready, and imports the pause image.
// When a step fails, everything made so far is removed.
func Start(ctx context.Context, opts Options) (_ *Runtime, err error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.NetnsPath == "" {
		return nil, errors.New("containerd: no node namespace given: set Options.NetnsPath (e.g. /run/netns/ndl-demo-node-a)")
	}
	name := filepath.Base(opts.NetnsPath) + nameSuffix
	if !strings.HasPrefix(name, lab.NamePrefix) {
		return nil, fmt.Errorf("containerd: node namespace %s: accepted are lab namespaces (/run/netns/%sINSTANCE-NODE): the CNI plugins change the namespace they run in", opts.NetnsPath, lab.NamePrefix)
	}
	bins, err := findPrograms()
	if err != nil {
		return nil, err
	}
	if opts.CNIBinDir == "" {
		opts.CNIBinDir = defaultCNIBinDir()
	}
	plugins := []string{"bridge", "host-local", "loopback"}
	if opts.Flannel != nil {
		if opts.Flannel.SubnetFile == "" {
			return nil, errors.New("containerd: Flannel.SubnetFile not set: the flannel CNI plugin needs the node's flanneld --subnet-file")
		}
		plugins = append(plugins, "flannel", "portmap")
	}
	for _, p := range plugins {
		if st, err := os.Stat(filepath.Join(opts.CNIBinDir, p)); err != nil || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("containerd: CNI plugin %s not found in %s; build it with: GOBIN=%s go install github.com/containernetworking/plugins/plugins/%s (or run scripts/install-deps)",
				p, opts.CNIBinDir, opts.CNIBinDir, cniPluginPath(p))
		}
	}
	node, err := netns.Open(opts.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("containerd: node namespace: %w", err)
	}
	defer func() {
		if err != nil {
			node.Close()
		}
	}()
	if opts.Bridge == "" {
		opts.Bridge = "cni0"
	}
	if opts.Flannel == nil {
		br, err := readBridge(node, opts.Bridge)
		if err != nil {
			return nil, err
		}
		if opts.MTU == 0 {
			opts.MTU = br.mtu
		}
		if err := pinBridgeMAC(node, opts.Bridge); err != nil {
			return nil, err
		}
		if len(opts.Ranges) == 0 {
			if opts.Ranges, err = DefaultRanges(br.addrs); err != nil {
				return nil, fmt.Errorf("containerd: bridge %s in %s: %w", opts.Bridge, opts.NetnsPath, err)
			}
		}
		if err := checkRanges(opts.Ranges); err != nil {
			return nil, err
		}
	}

	r := &Runtime{Ranges: opts.Ranges, node: node, log: log, exited: make(chan struct{})}
	// A runtime of this name whose process ended would share the cgroup
	// parent, and removing it later would kill this one's pods.
	for _, d := range allRuntimeDirs() {
		if n, pid, _ := dirOwner(filepath.Base(d)); n == name && pid != os.Getpid() && !procfs.Alive(pid) {
			if err := teardownDir(ctx, d, log); err != nil {
				return nil, fmt.Errorf("containerd: remove the runtime an ended process left on this node: %w", err)
			}
		}
	}
	if other := runtimeDirs(name); len(other) > 0 {
		return nil, fmt.Errorf("containerd: a runtime already runs on %s (%s): one per node, as its pod range and cgroup parent are the node's", opts.NetnsPath, strings.Join(other, ", "))
	}
	dir, err := os.MkdirTemp(tempBase(), fmt.Sprintf("%s-%d-", name, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("containerd: runtime directory: %w", err)
	}
	r.Dir, r.Name, r.Socket = dir, name, filepath.Join(dir, socketFile)
	defer func() {
		if err != nil {
			if r.conn != nil {
				r.conn.Close()
			}
			if terr := r.teardown(context.WithoutCancel(ctx)); terr != nil {
				err = errors.Join(err, fmt.Errorf("clean up after the failed start: %w", terr))
			}
		}
	}()
	// A unix socket path is limited to 108 bytes, and containerd also
	// listens on the socket's path + ".ttrpc".
	if len(r.Socket)+len(".ttrpc") >= 108 {
		return nil, fmt.Errorf("containerd: socket path %s is too long for a unix socket: use a shorter TMPDIR or namespace name", r.Socket)
	}
	if err := recordGlobalDirs(dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{"root", "state", "tmp", "cni/net.d", "cni/ipam", "cni/flannel", "pods", "images"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("containerd: %w", err)
		}
	}
	if opts.PauseBinary == "" {
		t0 := time.Now()
		opts.PauseBinary = filepath.Join(dir, "images", "pause")
		if err := BuildStatic(ctx, ".", PausePackage, opts.PauseBinary); err != nil {
			return nil, fmt.Errorf("containerd: pause image: %w", err)
		}
		r.Timings.BuildPause = time.Since(t0)
	}
	r.Snapshotter = opts.Snapshotter
	if r.Snapshotter == "" {
		r.Snapshotter = probeSnapshotter(dir, log)
	}
	if r.Snapshotter != "overlayfs" && r.Snapshotter != "native" {
		return nil, fmt.Errorf("containerd: snapshotter %q: accepted are overlayfs and native", r.Snapshotter)
	}
	var conflist []byte
	if opts.Flannel != nil {
		conflist, err = flannelConfig(r.Name, *opts.Flannel, filepath.Join(dir, "cni/flannel"), filepath.Join(dir, "cni/ipam"))
	} else {
		conflist, err = cniConfig(r.Name, opts.Bridge, opts.MTU, filepath.Join(dir, "cni/ipam"), opts.Ranges)
	}
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni/net.d/10-"+r.Name+".conflist"), conflist, 0o600); err != nil {
		return nil, fmt.Errorf("containerd: write CNI configuration: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, configFile), []byte(renderConfig(dir, r.Snapshotter, opts.CNIBinDir)), 0o600); err != nil {
		return nil, fmt.Errorf("containerd: write configuration: %w", err)
	}

	t0 := time.Now()
	if err := r.startProcess(bins, opts.NetnsPath); err != nil {
		return nil, err
	}
	log.Info("containerd started", "pid", r.PID, "dir", dir, "snapshotter", r.Snapshotter, "netns", opts.NetnsPath)
	r.conn, err = grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("containerd: CRI client: %w", err)
	}
	r.rs, r.is = cri.NewRuntimeServiceClient(r.conn), cri.NewImageServiceClient(r.conn)
	if err := r.waitReady(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	r.Timings.Containerd = time.Since(t0)

	t0 = time.Now()
	if err := r.ImportImage(ctx, Image{Ref: PauseRef, Binary: opts.PauseBinary}); err != nil {
		return nil, err
	}
	r.Timings.ImportPause = time.Since(t0)
	return r, nil
}

// programs are the executables a runtime needs, by absolute path.
type programs struct{ nsenter, containerd string }

func findPrograms() (programs, error) {
	var p programs
	var missing []string
	find := func(name, install string) string {
		path, err := exec.LookPath(name)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
				if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode()&0o111 != 0 {
					return filepath.Join(dir, name)
				}
			}
			missing = append(missing, fmt.Sprintf("%s (install: %s)", name, install))
		}
		return path
	}
	p.nsenter = find("nsenter", "apt-get install -y util-linux")
	p.containerd = find("containerd", "apt-get install -y containerd")
	find("ctr", "apt-get install -y containerd")
	find("containerd-shim-runc-v2", "apt-get install -y containerd")
	find("runc", "apt-get install -y runc")
	if len(missing) > 0 {
		return p, fmt.Errorf("containerd: missing programs: %s", strings.Join(missing, ", "))
	}
	return p, nil
}

// defaultCNIBinDir is $GOPATH/bin/cni, as `go env GOPATH` would say it,
// without needing the go command.
func defaultCNIBinDir() string {
	if gp := os.Getenv("GOPATH"); gp != "" {
		return filepath.Join(filepath.SplitList(gp)[0], "bin", "cni")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, "go", "bin", "cni")
}

// cniPluginPath is the plugin's package and version in
// containernetworking/plugins, as install-deps builds it: flannel's is the
// last release that had it.
func cniPluginPath(name string) string {
	switch name {
	case "host-local":
		return "ipam/host-local@v1.9.1"
	case "portmap":
		return "meta/portmap@v1.9.1"
	case "flannel":
		return "meta/flannel@v0.9.1"
	}
	return "main/" + name + "@v1.9.1"
}

// startProcess runs containerd through nsenter, which enters only the node's
// network namespace: `ip netns exec` would also give it a mount namespace with
// a fresh /sys, in which runc finds no cgroup mounts.
func (r *Runtime) startProcess(p programs, netnsPath string) error {
	logf, err := os.OpenFile(filepath.Join(r.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("containerd: log file: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.nsenter, "--net="+netnsPath, "--", p.containerd, "--config", filepath.Join(r.Dir, configFile), "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv()
	cmd.Dir = r.Dir
	// Its own session: a Ctrl-C in the terminal must not kill containerd
	// before the pods are removed; CleanStale handles a killed caller.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("containerd: start %s: %w", p.containerd, err)
	}
	r.PID = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(r.exited)
	}()
	return nil
}

// childEnv is this process's environment with the lab's process markers
// removed (lab down must not take containerd for a lab process and kill it
// before its pods are removed) and the sbin directories on PATH, where
// Debian puts runc.
func childEnv() []string {
	var env []string
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "NETDIAG_LAB_"):
		case k == "PATH":
			path = v + ":" + path
		default:
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+path)
}

// waitReady polls the CRI status until the runtime and the network (the CNI
// configuration is loaded) are ready.
func (r *Runtime) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := r.rs.Status(cctx, &cri.StatusRequest{})
		ccancel()
		if err == nil {
			last = nil
			for _, c := range st.GetStatus().GetConditions() {
				if !c.Status {
					last = errors.Join(last, fmt.Errorf("%s: %s %s", c.Type, c.Reason, c.Message))
				}
			}
			if last == nil && len(st.GetStatus().GetConditions()) > 0 {
				return nil
			}
		} else {
			last = err
			// The server answers only once every plugin has loaded: a
			// missing CRI service will not appear later.
			if status.Code(err) == codes.Unimplemented {
				return fmt.Errorf("containerd runs without its CRI plugin (it failed to load): %v; log: %s", err, r.LogTail(5))
			}
		}
		select {
		case <-r.exited:
			return fmt.Errorf("containerd exited during start: %s (log: %s)", r.LogTail(5), filepath.Join(r.Dir, logFile))
		case <-ctx.Done():
			return fmt.Errorf("containerd not ready after %s: %v; log: %s", limit, last, r.LogTail(5))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogTail returns containerd's last log lines joined by " | ", for errors.
func (r *Runtime) LogTail(lines int) string {
	return tail(filepath.Join(r.Dir, logFile), lines)
}

func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return "no log"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "no log"
	}
	off := max(st.Size()-64<<10, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, 64<<10))
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	if out := strings.Join(ls, " | "); out != "" {
		return out
	}
	return "log empty"
}

// ImportImage writes img as an OCI layout, imports it into the k8s.io
// namespace (unpacked for the runtime's snapshotter) and waits until the CRI
// plugin lists it: the plugin learns of imports through events, and a
// sandbox created before it has would make it try to pull.
func (r *Runtime) ImportImage(ctx context.Context, img Image) error {
	repo, _, err := splitRef(img.Ref)
	if err != nil {
		return err
	}
	file := filepath.Join(r.Dir, "images", strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".tar")
	f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("import %s: %w", img.Ref, err)
	}
	_, werr := WriteImage(f, img)
	if err := errors.Join(werr, f.Close()); err != nil {
		return err
	}
	defer os.Remove(file)
	return r.ctrImport(ctx, img.Ref, file, time.Minute, "--base-name", repo)
}

// ImportArchive imports an OCI image archive (an OCI layout in a tar, as
// `buildah push IMAGE oci-archive:PATH:NAME` or `skopeo copy` write it)
// into the k8s.io namespace under ref ("DOMAIN/PATH:TAG", as ImportImage
// takes it), unpacked for the runtime's snapshotter, and waits until the
// CRI plugin lists it. Whatever the archive names its manifests, ref names
// its index (ctr's --index-name), from which the runtime takes the machine's
// platform. Names in the OCI ref.name annotation (buildah's and skopeo's,
// e.g. "netdiag/netdiag:dev") are dropped unless they are bare tags, which
// become tags of ref's repository (--base-name); a name in containerd's own
// io.containerd.image.name annotation is kept as it is. Importing again
// replaces the image of that name.
func (r *Runtime) ImportArchive(ctx context.Context, path, ref string) error {
	repo, _, err := splitRef(ref)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("import %s: %s is not a file (an OCI archive is a tar)", ref, path)
	}
	// A large image takes a while to unpack: a minute per 500 MB, at
	// least two.
	limit := max(2*time.Minute, time.Duration(st.Size()/(500<<20)+1)*time.Minute)
	return r.ctrImport(ctx, ref, path, limit, "--base-name", repo, "--index-name", ref)
}

// ctrImport runs `ctr images import` of an OCI layout tar with the given
// naming flags and waits until the CRI plugin lists ref.
func (r *Runtime) ctrImport(ctx context.Context, ref, file string, limit time.Duration, naming ...string) error {
	ctrBin, err := exec.LookPath("ctr")
	if err != nil {
		return fmt.Errorf("import %s: ctr not found (apt-get install -y containerd): %w", ref, err)
	}
	ictx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	args := append([]string{"--address", r.Socket, "--namespace", "k8s.io", "images", "import"}, naming...)
	args = append(args, "--snapshotter", r.Snapshotter, "--platform", "linux/"+runtime.GOARCH, file)
	cmd := exec.CommandContext(ictx, ctrBin, args...)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("import %s (ctr images import): %w: %s", ref, err, strings.TrimSpace(out.String()))
	}
	for {
		cctx, ccancel := context.WithTimeout(ictx, 2*time.Second)
		st, err := r.is.ImageStatus(cctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: ref}})
		ccancel()
		if err == nil && st.GetImage() != nil {
			r.log.Debug("image imported", "ref", ref, "id", st.GetImage().GetId())
			return nil
		}
		select {
		case <-ictx.Done():
			return fmt.Errorf("import %s: ctr imported it (%s) but the CRI plugin does not list it: %v", ref, strings.TrimSpace(out.String()), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialNode connects from the node's namespace: the pods' addresses are
// reached from there, as the kubelet's probes reach them.
func (r *Runtime) dialNode(ctx context.Context, addr string) (net.Conn, error) {
	return r.node.Dial(ctx, "tcp", addr)
}

// tempBase is where runtime directories go: TMPDIR unless it is too long to
// leave room for the socket path.
func tempBase() string {
	if base := os.TempDir(); len(base) <= 40 {
		return base
	}
	return "/tmp"
}

// dirOwner parses a runtime directory's base name, NAME-PID-N, into the
// runtime's name and the PID of the process that made it.
func dirOwner(base string) (name string, pid int, ok bool) {
	i := strings.LastIndexByte(base, '-')
	if i < 0 {
		return "", 0, false
	}
	j := strings.LastIndexByte(base[:i], '-')
	if j < 0 {
		return "", 0, false
	}
	pid, err := strconv.Atoi(base[j+1 : i])
	if _, nerr := strconv.Atoi(base[i+1:]); err != nil || nerr != nil || pid <= 0 {
		return "", 0, false
	}
	name = base[:j]
	if !strings.HasPrefix(name, lab.NamePrefix) || !strings.HasSuffix(name, nameSuffix) {
		return "", 0, false
	}
	return name, pid, true
}

// allRuntimeDirs lists the runtime directories on the machine.
func allRuntimeDirs() []string {
	var out []string
	for _, base := range []string{tempBase(), os.TempDir(), "/tmp"} {
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			p := filepath.Join(base, e.Name())
			if _, _, ok := dirOwner(e.Name()); ok && e.IsDir() && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// runtimeDirs lists the directories of live runtimes with this name.
func runtimeDirs(name string) []string {
	var out []string
	for _, d := range allRuntimeDirs() {
		if n, pid, _ := dirOwner(filepath.Base(d)); n == name && (pid == os.Getpid() || procfs.Alive(pid)) {
			out = append(out, d)
		}
	}
	return out
}
