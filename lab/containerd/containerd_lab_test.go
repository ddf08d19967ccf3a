package containerd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/podns"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/vishvananda/netlink"
)

func TestMain(m *testing.M) {
	if os.Getenv(orphanEnv) != "" {
		runOrphan()
		return
	}
	labtest.Main(m)
}

// TestPodsOnLabNodes runs real pods (containerd, runc, the CNI bridge plugin
// on cni0) on both lab nodes, one runtime per node with a different
// snapshotter each, and proves they are pods of the lab: their addresses are
// in their node's PodCIDRs, lab pods and the other node's real pod reach
// their servers across the overlay in both families, and podns finds their
// namespaces through CRI and through their cgroups. Then it stops the
// runtimes and proves nothing is left.
func TestPodsOnLabNodes(t *testing.T) {
	l := labtest.Up(t, "ctrd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "server")
	t0 := time.Now()
	if err := containerd.BuildStatic(ctx, ".", containerd.ServerPackage, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("server binary built in %v", time.Since(t0).Round(time.Millisecond))

	type node struct {
		name, snapshotter, from string // from: a lab pod on the other node
		lab                     *lab.Node
		portsBefore             []string
		rt                      *containerd.Runtime
		pod                     *containerd.Pod
	}
	nodes := []*node{
		{name: "node-a", snapshotter: "", from: "default/client"},    // probed: overlayfs on this machine
		{name: "node-b", snapshotter: "native", from: "default/web"}, // the fallback, proven too
	}
	for _, n := range nodes {
		var err error
		if n.lab, err = l.Node(n.name); err != nil {
			t.Fatal(err)
		}
		n.portsBefore = bridgePorts(t, n.lab.NetnsPath, n.lab.Bridge)
		t0 := time.Now()
		n.rt = containerd.StartForTest(t, n.lab.NetnsPath, containerd.Options{Snapshotter: n.snapshotter})
		startTook := time.Since(t0)
		t0 = time.Now()
		if err := n.rt.ImportImage(ctx, containerd.Image{Ref: containerd.ServerRef, Binary: bin, Cmd: []string{"-listen", ":8080"}}); err != nil {
			t.Fatal(err)
		}
		importTook := time.Since(t0)
		t0 = time.Now()
		n.pod, err = n.rt.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "cri-" + n.name, Image: containerd.ServerRef, Port: 8080})
		if err != nil {
			t.Fatal(err)
		}
		runTook := time.Since(t0)
		t.Logf("%s: StartForTest %v (pause build %v, containerd ready %v, pause import %v), server image import %v, RunPod %v",
			n.name, startTook.Round(time.Millisecond), n.rt.Timings.BuildPause.Round(time.Millisecond), n.rt.Timings.Containerd.Round(time.Millisecond),
			n.rt.Timings.ImportPause.Round(time.Millisecond), importTook.Round(time.Millisecond), runTook.Round(time.Millisecond))
		t.Logf("%s: pod %v, addresses %v, netns %s, pause PID %d, snapshotter %s", n.name, n.pod, n.pod.IPs, n.pod.NetnsPath, n.pod.PID, n.rt.Snapshotter)
	}
	if nodes[0].rt.Snapshotter != "overlayfs" && nodes[0].rt.Snapshotter != "native" {
		t.Errorf("probed snapshotter %q", nodes[0].rt.Snapshotter)
	}

	for i, n := range nodes {
		other := nodes[1-i]
		pod := n.pod
		t.Run(n.name, func(t *testing.T) {
			t.Run("addresses in the node's PodCIDRs", func(t *testing.T) {
				cidr, cidr6 := netip.MustParsePrefix(n.lab.PodCIDR), netip.MustParsePrefix(n.lab.PodCIDR6)
				if !cidr.Contains(pod.IP) {
					t.Errorf("pod IP %s is not in %s's PodCIDR %s", pod.IP, n.name, cidr)
				}
				for _, p := range l.Pods {
					if p.IP == pod.IP.String() {
						t.Errorf("pod IP %s is the lab pod %s's", pod.IP, p.Key())
					}
				}
				if len(pod.IPs) != 2 || !cidr6.Contains(pod.IPs[1]) {
					t.Errorf("pod addresses %v: want its IPv4 one and one in %s's IPv6 PodCIDR %s", pod.IPs, n.name, cidr6)
				}
			})
			t.Run("reached from the other node across the overlay", func(t *testing.T) {
				labPod, err := l.Pod(n.from)
				if err != nil {
					t.Fatal(err)
				}
				for _, from := range []struct{ name, path string }{{n.from, labPod.NetnsPath}, {other.pod.Spec.Name, other.pod.NetnsPath}} {
					ns := labtest.OpenNS(t, from.path)
					for _, ip := range pod.IPs {
						body, err := lab.HTTPGet(ctx, ns, netip.AddrPortFrom(ip, 8080).String())
						if err != nil {
							t.Errorf("from %s to %s: %v", from.name, ip, err)
							continue
						}
						if body != pod.Spec.Name+"\n" {
							t.Errorf("from %s to %s: answer %q, want the pod's hostname", from.name, ip, body)
						}
					}
				}
			})
			t.Run("podns finds the sandbox", func(t *testing.T) {
				found, err := podns.ViaCRI(ctx, n.rt.Socket, podns.PodRef{Namespace: "default", Name: pod.Spec.Name, UID: pod.Spec.UID})
				if err != nil {
					t.Fatal(err)
				}
				if found.Path != pod.NetnsPath || !strings.HasPrefix(found.Path, n.rt.Dir+"/") {
					t.Errorf("ViaCRI found %s, want the sandbox's namespace %s under %s", found.Path, pod.NetnsPath, n.rt.Dir)
				}
				if !holds(t, found.Path, pod.IP) {
					t.Errorf("namespace %s does not hold the pod IP %s", found.Path, pod.IP)
				}
				byName, err := podns.ViaCRI(ctx, n.rt.Socket, podns.PodRef{Namespace: "default", Name: pod.Spec.Name})
				if err != nil || byName.Path != found.Path {
					t.Errorf("ViaCRI by namespace/name: %+v, %v; want %s", byName, err, found.Path)
				}
				viaCgroup, err := podns.ViaCgroup("/sys/fs/cgroup", pod.Spec.UID)
				if err != nil {
					t.Fatal(err)
				}
				if !holds(t, viaCgroup.Path, pod.IP) {
					t.Errorf("ViaCgroup found %s, which does not hold %s", viaCgroup.Path, pod.IP)
				}
			})
			t.Run("a removed pod leaves nothing on the node", func(t *testing.T) {
				short, err := n.rt.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "short", Image: containerd.ServerRef, Port: 8080})
				if err != nil {
					t.Fatal(err)
				}
				if short.IP == pod.IP {
					t.Fatalf("two pods got %s", pod.IP)
				}
				if err := n.rt.RemovePod(ctx, short); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(short.NetnsPath); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("sandbox namespace %s still there: %v", short.NetnsPath, err)
				}
				if alive(short.PID) {
					t.Errorf("pause process %d of the removed pod still runs", short.PID)
				}
				if got := bridgePorts(t, n.lab.NetnsPath, n.lab.Bridge); len(got) != len(n.portsBefore)+1 {
					t.Errorf("ports on %s: %v, want the lab's %v and the first pod's", n.lab.Bridge, got, n.portsBefore)
				}
			})
		})
	}

	t.Run("a host pod from an archive, as a DaemonSet's agent", func(t *testing.T) {
		testHostPod(t, ctx, nodes[0].rt, nodes[0].lab, bin)
	})

	t.Run("the lab stays healthy", func(t *testing.T) {
		res, err := lab.RunChecks(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res {
			if c.Status != "pass" {
				t.Errorf("lab check %s: %s: %s", c.Name, c.Status, c.Detail)
			}
		}
	})

	for _, n := range nodes {
		stopCtx, stopCancel := context.WithTimeout(ctx, 2*time.Minute)
		t0 := time.Now()
		err := n.rt.Stop(stopCtx)
		stopCancel()
		if err != nil {
			t.Fatalf("stop the runtime on %s: %v", n.name, err)
		}
		t.Logf("%s: Stop took %v", n.name, time.Since(t0).Round(time.Millisecond))
		requireGone(t, n.rt, []*containerd.Pod{n.pod})
		if after := bridgePorts(t, n.lab.NetnsPath, n.lab.Bridge); len(after) != len(n.portsBefore) {
			t.Errorf("ports of %s on %s: %v before the runtime, %v after", n.lab.Bridge, n.name, n.portsBefore, after)
		}
	}
	for _, d := range []string{"/run/containerd/s", "/var/lib/cni/results"} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			t.Logf("note: %s/%s exists after both runtimes stopped (another runtime's?)", d, e.Name())
		}
	}
}

// testHostPod imports an image from an OCI archive under a name of its own
// and runs it as a node agent's DaemonSet runs its pod: in the node's
// network and the machine's PID namespace, as another user, with every
// capability dropped but two, the runtime's seccomp profile, a read-only
// root, a file and /run/netns mounted from the host (the latter so that
// namespaces made later appear in it), and proves each of those from
// outside the container, then runs a command in it.
func testHostPod(t *testing.T, ctx context.Context, rt *containerd.Runtime, node *lab.Node, server string) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "server.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := containerd.WriteImage(f, containerd.Image{Ref: "netdiag.lab/archived:7", Binary: server})
	if err := errors.Join(werr, f.Close()); err != nil {
		t.Fatal(err)
	}
	const ref = "netdiag.lab/hostserver:1"
	t0 := time.Now()
	if err := rt.ImportArchive(ctx, archive, ref); err != nil {
		t.Fatal(err)
	}
	t.Logf("archive imported as %s in %v", ref, time.Since(t0).Round(time.Millisecond))
	for _, bad := range []struct{ path, ref, want string }{
		{archive, "hostserver:1", "domain"},
		{filepath.Join(dir, "missing.tar"), ref, "no such file"},
		{dir, ref, "not a file"},
	} {
		if err := rt.ImportArchive(ctx, bad.path, bad.ref); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ImportArchive(%s, %s): %v, want an error saying %q", bad.path, bad.ref, err, bad.want)
		}
	}

	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	user := int64(4321)
	pod, err := rt.RunPod(ctx, containerd.PodSpec{
		Namespace: "kube-system", Name: "host-agent", Image: ref, Args: []string{"-listen", ":18080"}, Port: 18080,
		HostNetwork: true, HostPID: true, RunAsUser: &user,
		CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN", "NET_RAW"},
		ReadOnlyRootfs: true, Seccomp: "RuntimeDefault",
		Mounts: []containerd.Mount{
			{HostPath: token, ContainerPath: "/etc/netdiag/token", ReadOnly: true},
			{HostPath: "/run/netns", ContainerPath: "/run/netns", ReadOnly: true, Propagation: "HostToContainer"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rt.RemovePod(context.WithoutCancel(ctx), pod); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("pod %v, container PID %d", pod, pod.ContainerPID)
	if pod.IP.String() != node.InternalIP || pod.NetnsPath != node.NetnsPath {
		t.Errorf("host-network pod: IP %s in %s, want the node's %s in %s", pod.IP, pod.NetnsPath, node.InternalIP, node.NetnsPath)
	}
	proc := "/proc/" + strconv.Itoa(pod.ContainerPID)
	for _, ns := range []struct{ name, want string }{{"net", node.NetnsPath}, {"pid", "/proc/self/ns/pid"}} {
		if got, want := inode(t, proc+"/ns/"+ns.name), inode(t, ns.want); got != want {
			t.Errorf("the container's %s namespace is %d, want %d (%s)", ns.name, got, want, ns.want)
		}
	}
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		t.Fatal(err)
	}
	const netAdmin, netRaw = 12, 13
	for key, want := range map[string]string{"Uid": "4321\t4321\t4321\t4321", "CapBnd": fmt.Sprintf("%016x", 1<<netAdmin|1<<netRaw), "CapEff": fmt.Sprintf("%016x", 0),
		"Seccomp": "2"} { // 2: a filter, the runtime's default profile
		if got := statusField(string(status), key); got != want {
			t.Errorf("container process %s: %q, want %q", key, got, want)
		}
	}
	if b, err := os.ReadFile(proc + "/root/etc/netdiag/token"); err != nil || string(b) != "secret\n" {
		t.Errorf("the mounted file seen through the container's root: %q, %v", b, err)
	}
	for _, p := range []string{"/etc/netdiag/token", "/"} {
		if !mountedReadOnly(t, proc, p) {
			t.Errorf("%s is not mounted read-only in the container", p)
		}
	}
	late := labtest.NewBare(t, "ctrp", "late")
	if _, err := os.Stat(proc + "/root" + late.Path("late")); err != nil {
		t.Errorf("a namespace made after the pod started is not in its /run/netns (HostToContainer): %v", err)
	}

	res, err := rt.Exec(ctx, pod, 10*time.Second, "/server", "-listen", "no-such-address")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 1 || !strings.Contains(string(res.Stderr), "server: ") {
		t.Errorf("exec /server with a bad address: exit %d, stdout %q, stderr %q; want exit 1 and the server's error", res.ExitCode, res.Stdout, res.Stderr)
	}
	if _, err := rt.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "bad-mount", Image: ref,
		Mounts: []containerd.Mount{{HostPath: "relative", ContainerPath: "/x"}}}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("a relative host path: %v, want a refusal", err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// statusField is a field of /proc/PID/status.
func statusField(status, key string) string {
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mountedReadOnly says whether path is a read-only mount in the process's
// mount namespace.
func mountedReadOnly(t *testing.T, proc, path string) bool {
	t.Helper()
	b, err := os.ReadFile(proc + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path {
			return strings.HasPrefix(f[5], "ro")
		}
	}
	return false
}

// TestFailedStartCleansUp makes Start fail after containerd is running (the
// pause binary does not exist, so the import fails) and proves that the
// failed start left nothing behind.
func TestFailedStartCleansUp(t *testing.T) {
	b := labtest.NewBare(t, "ctrf", "node")
	h, err := b.NS("node").Handle()
	if err != nil {
		t.Fatal(err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0", MTU: 1450}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.19.3.1/24")
	if err := h.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := filepath.Base(b.Path("node")) + "-containerd-"
	r, err := containerd.Start(ctx, containerd.Options{NetnsPath: b.Path("node"), PauseBinary: "/nonexistent/pause"})
	if err == nil {
		r.Stop(ctx)
		t.Fatal("Start succeeded with a missing pause binary")
	}
	t.Logf("Start failed as it should: %v", err)
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), name+"*")); len(left) > 0 {
		t.Errorf("runtime directories left: %v", left)
	}
	if pids := procsMentioning(name); len(pids) > 0 {
		t.Errorf("processes of the failed runtime still run: %v", pids)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + name + "*"); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
}

func TestStartRefusesNonLabNamespace(t *testing.T) {
	_, err := containerd.Start(context.Background(), containerd.Options{NetnsPath: "/proc/self/ns/net"})
	if err == nil || !strings.Contains(err.Error(), "lab namespaces") {
		t.Fatalf("Start in the machine's own namespace: %v, want a refusal", err)
	}
}

// orphanEnv makes the test binary play a test that is killed while its
// runtime runs a pod (see TestCleanStale).
const orphanEnv = "NDL_CTRD_ORPHAN"

type orphanReport struct {
	Dir, Socket, Name string
	PID               int
	Pod               *containerd.Pod
}

// runOrphan starts a runtime with a pod in the namespace orphanEnv names,
// prints where they are, and waits to be killed.
func runOrphan() {
	var args struct{ Netns, Pause, Server string }
	if err := json.Unmarshal([]byte(os.Getenv(orphanEnv)), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := containerd.Start(ctx, containerd.Options{NetnsPath: args.Netns, PauseBinary: args.Pause})
	if err == nil {
		err = r.ImportImage(ctx, containerd.Image{Ref: containerd.ServerRef, Binary: args.Server, Cmd: []string{"-listen", ":8080"}})
	}
	var pod *containerd.Pod
	if err == nil {
		pod, err = r.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "orphan", Image: containerd.ServerRef, Port: 8080})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if r != nil {
			r.Stop(ctx)
		}
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(orphanReport{Dir: r.Dir, Socket: r.Socket, Name: r.Name, PID: r.PID, Pod: pod})
	<-ctx.Done() // killed before this
	r.Stop(context.Background())
	os.Exit(1)
}

// TestCleanStale kills a process while its runtime runs a pod, as a test
// timeout does (no cleanup runs), and proves that CleanStale removes all of
// it: with containerd still running (it has its own session and survives),
// and with containerd killed too, when only the shims, the pod processes,
// the cgroups and the mounts are left to find.
func TestCleanStale(t *testing.T) {
	b := labtest.NewBare(t, "ctrs", "node")
	h, err := b.NS("node").Handle()
	if err != nil {
		t.Fatal(err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0", MTU: 1450}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.19.4.1/24")
	if err := h.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	pause, server := filepath.Join(dir, "pause"), filepath.Join(dir, "server")
	for pkg, out := range map[string]string{containerd.PausePackage: pause, containerd.ServerPackage: server} {
		if err := containerd.BuildStatic(ctx, ".", pkg, out); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(map[string]string{"Netns": b.Path("node"), "Pause": pause, "Server": server})

	for _, tc := range []struct {
		name           string
		killContainerd bool
		// labDown removes the node's lab instance first, as labtest
		// does for a killed test's lab: it moves the pod processes out
		// of the instance's cgroups and deletes the node's name.
		labDown bool
	}{
		{"containerd still running", false, false},
		{"containerd killed too", true, false},
		{"lab down first, containerd killed", true, true}, // last: it removes the node's name
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, self, "-test.run=^$")
			cmd.Env = append(os.Environ(), orphanEnv+"="+string(args))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var rep orphanReport
			decErr := json.NewDecoder(out).Decode(&rep)
			cmd.Process.Kill()
			cmd.Wait()
			if decErr != nil {
				t.Fatalf("the orphaned runtime did not start: %v", decErr)
			}
			t.Logf("killed %d; its runtime %s (containerd %d) runs pod %v", cmd.Process.Pid, rep.Dir, rep.PID, rep.Pod)
			if tc.killContainerd {
				syscall.Kill(rep.PID, syscall.SIGKILL)
				deadline := time.Now().Add(5 * time.Second)
				for alive(rep.PID) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if tc.labDown {
				if _, err := lab.Down(ctx, b.Instance, nil); err != nil {
					t.Fatal(err)
				}
				if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + rep.Name); len(cg) > 0 {
					t.Fatalf("lab down left the runtime's cgroups %v: this case proves nothing", cg)
				}
			}
			if !alive(rep.Pod.PID) {
				t.Fatalf("the pod's pause process %d is gone before the cleanup: nothing to prove", rep.Pod.PID)
			}
			t0 := time.Now()
			if err := containerd.CleanStale(ctx, slog.New(slog.NewTextHandler(tlog{t}, nil))); err != nil {
				t.Fatalf("CleanStale: %v", err)
			}
			t.Logf("CleanStale took %v", time.Since(t0).Round(time.Millisecond))
			requireGone(t, &containerd.Runtime{Dir: rep.Dir, Name: rep.Name, PID: rep.PID}, []*containerd.Pod{rep.Pod})
			h, err := b.NS("node").Handle()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			links, _ := h.LinkList()
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Attrs().Index {
					t.Errorf("port %s of the orphaned pod is still on the bridge", l.Attrs().Name)
				}
			}
		})
	}
}

// requireGone checks, independently of the package's own teardown code,
// that a stopped runtime left no process, mount, cgroup, namespace, CNI
// cache entry or directory.
func requireGone(t *testing.T, r *containerd.Runtime, pods []*containerd.Pod) {
	t.Helper()
	if pids := procsMentioning(r.Dir); len(pids) > 0 {
		t.Errorf("processes naming %s still run: %v", r.Dir, pids)
	}
	if alive(r.PID) {
		t.Errorf("containerd (%d) still runs", r.PID)
	}
	for _, p := range pods {
		if alive(p.PID) {
			t.Errorf("pause process %d still runs", p.PID)
		}
		if _, err := os.Stat(p.NetnsPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("sandbox namespace %s still there (%v)", p.NetnsPath, err)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, r.Dir) {
			t.Errorf("still mounted: %s", line)
		}
	}
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + r.Name)
	if len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	if _, err := os.Stat(r.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runtime directory %s still there (%v)", r.Dir, err)
	}
	cache, _ := filepath.Glob("/var/lib/cni/results/*")
	for _, c := range cache {
		base := filepath.Base(c)
		if strings.HasPrefix(base, r.Name) {
			t.Errorf("CNI cache entry left: %s", c)
		}
		for _, p := range pods {
			if strings.Contains(base, p.SandboxID) {
				t.Errorf("CNI cache entry left: %s", c)
			}
		}
	}
}

func holds(t *testing.T, path string, ip netip.Addr) bool {
	t.Helper()
	n := labtest.OpenNS(t, path)
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

func bridgePorts(t *testing.T, nsPath, bridge string) []string {
	t.Helper()
	n := labtest.OpenNS(t, nsPath)
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// procsMentioning lists live processes whose command line contains s.
func procsMentioning(s string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) && alive(pid) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// tlog makes a test's log a slog destination.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
