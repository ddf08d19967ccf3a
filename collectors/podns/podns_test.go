package podns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// sameNS reports whether a found path is the expected namespace.
func sameNS(t *testing.T, f *Found, want *netns.NS) {
	t.Helper()
	got, err := netns.Open(f.Path)
	if err != nil {
		t.Fatalf("open found %s: %v", f.Path, err)
	}
	defer got.Close()
	if got.Inode() != want.Inode() {
		t.Errorf("found %s (net:[%d]), want net:[%d]", f.Path, got.Inode(), want.Inode())
	}
}

// podProcess starts a process inside the pod's namespace, as a pod's pause
// container is, and ends it when the test ends.
func podProcess(t *testing.T, ns *netns.NS) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func TestFindOnLab(t *testing.T) {
	l := labtest.Up(t, "tpodns")
	web, _ := l.Pod("default/web")
	ns, err := netns.Open(web.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	// Several labs may run on this machine at once, all with the same pod
	// IPs; an address only this test's web pod holds makes the scan's
	// answer unique.
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	unique := netip.AddrFrom4([4]byte{198, 19, 250, byte(1 + os.Getpid()%250)})
	lo, _ := h.LinkByName("lo")
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: unique.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	uid := fmt.Sprintf("5e1f0c2a-%04d-4b7e-9d3c-%012d", os.Getpid()%10000, os.Getpid())

	t.Run("scan", func(t *testing.T) {
		f, err := ViaScan(unique)
		if err != nil {
			t.Fatal(err)
		}
		sameNS(t, f, ns)
		all, _ := ScanAll(netip.MustParseAddr(web.IP))
		if len(all) == 0 {
			t.Errorf("no namespace holds web's IP %s", web.IP)
		}
		if _, err := ViaScan(netip.MustParseAddr("198.19.251.250")); err == nil || !strings.Contains(err.Error(), "no namespace on this node holds 198.19.251.250") {
			t.Errorf("absent IP: %v", err)
		}
	})

	// Real cgroup trees, in the two layouts kubelet uses, with a real
	// process of the pod moved into them.
	for _, layout := range []struct {
		name, root string
		dirs       []string
	}{
		{"cgroupfs-v1", "/sys/fs/cgroup/pids", []string{"ndl-" + l.Instance + "-kubepods", "burstable", "pod" + uid, "0123abcd"}},
		{"systemd-v2", "/sys/fs/cgroup/unified", []string{"ndl-" + l.Instance + "-kubepods.slice", "kubepods-burstable.slice",
			"kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice", "cri-containerd-0123abcd.scope"}},
	} {
		t.Run(layout.name, func(t *testing.T) {
			labtest.RequireRoot(t)
			if _, err := os.Stat(filepath.Join(layout.root, "cgroup.procs")); err != nil {
				t.Skipf("%s is not a cgroup hierarchy on this machine", layout.root)
			}
			leaf := filepath.Join(append([]string{layout.root}, layout.dirs...)...)
			if err := os.MkdirAll(leaf, 0o755); err != nil {
				t.Fatal(err)
			}
			pid := podProcess(t, ns)
			t.Cleanup(func() {
				// Back to the root cgroup, then remove the tree bottom-up.
				os.WriteFile(filepath.Join(layout.root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
				for d := leaf; d != layout.root; d = filepath.Dir(d) {
					os.Remove(d)
				}
			})
			if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := ViaCgroup(filepath.Join(layout.root, layout.dirs[0]), uid)
			if err != nil {
				t.Fatal(err)
			}
			if f.PID != pid {
				t.Errorf("found pid %d, want %d", f.PID, pid)
			}
			sameNS(t, f, ns)
		})
	}

	t.Run("cri", func(t *testing.T) {
		pid := podProcess(t, ns)
		sock := filepath.Join(t.TempDir(), "cri.sock")
		srv := startRuntime(t, sock, map[string]string{"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.uid": uid},
			fmt.Sprintf(`{"pid": %d, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": %q}]}}}`, pid, web.NetnsPath))
		defer srv.Stop()
		f, err := ViaCRI(context.Background(), sock, PodRef{Namespace: "default", Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if f.Path != web.NetnsPath || f.Via != "cri" {
			t.Errorf("found %+v", f)
		}
		sameNS(t, f, ns)
		if _, err := ViaCRI(context.Background(), sock, PodRef{Namespace: "default", Name: "nosuch"}); err == nil || !strings.Contains(err.Error(), "no ready sandbox") {
			t.Errorf("absent pod: %v", err)
		}
		// A runtime that reports only the PID (no namespace path).
		sock2 := filepath.Join(t.TempDir(), "cri2.sock")
		srv2 := startRuntime(t, sock2, map[string]string{"io.kubernetes.pod.uid": uid}, fmt.Sprintf(`{"pid": %d}`, pid))
		defer srv2.Stop()
		f, err = Find(context.Background(), PodRef{UID: uid, IP: unique}, []string{"/nonexistent.sock", sock2}, "/nonexistent")
		if err != nil {
			t.Fatal(err)
		}
		if f.PID != pid {
			t.Errorf("pid-only runtime: %+v", f)
		}
		sameNS(t, f, ns)
	})

	t.Run("find-falls-back-to-scan", func(t *testing.T) {
		f, err := Find(context.Background(), PodRef{Namespace: "default", Name: "web", UID: "00000000-0000-0000-0000-000000000000", IP: unique},
			[]string{"/nonexistent.sock"}, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if f.Via != "scan" {
			t.Errorf("via %s", f.Via)
		}
		sameNS(t, f, ns)
	})
}

// runtime is a CRI RuntimeService that knows one ready sandbox, answering
// over a unix socket the way containerd and CRI-O do.
type runtime struct {
	cri.UnimplementedRuntimeServiceServer
	labels map[string]string
	info   string
}

func (r *runtime) ListPodSandbox(_ context.Context, req *cri.ListPodSandboxRequest) (*cri.ListPodSandboxResponse, error) {
	for k, v := range req.GetFilter().GetLabelSelector() {
		if r.labels[k] != v {
			return &cri.ListPodSandboxResponse{}, nil
		}
	}
	return &cri.ListPodSandboxResponse{Items: []*cri.PodSandbox{{Id: "sb1", Labels: r.labels, State: cri.PodSandboxState_SANDBOX_READY, CreatedAt: 1}}}, nil
}

func (r *runtime) PodSandboxStatus(_ context.Context, req *cri.PodSandboxStatusRequest) (*cri.PodSandboxStatusResponse, error) {
	resp := &cri.PodSandboxStatusResponse{Status: &cri.PodSandboxStatus{Id: req.PodSandboxId, State: cri.PodSandboxState_SANDBOX_READY}}
	if req.Verbose {
		resp.Info = map[string]string{"info": r.info}
	}
	return resp, nil
}

func startRuntime(t *testing.T, sock string, labels map[string]string, info string) *grpc.Server {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	cri.RegisterRuntimeServiceServer(s, &runtime{labels: labels, info: info})
	go s.Serve(lis)
	return s
}

// TestSandboxInfoPath: the runtime's namespace path is taken only when it
// is a network namespace where the caller looks; else the sandbox's
// process leads there, as for an agent in a container that sees an empty
// file where the runtime bind-mounted the namespace after the container
// started.
func TestSandboxInfoPath(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "cni-plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	info := func(pid int, path string) string {
		return fmt.Sprintf(`{"pid": %d, "runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": %q}]}}}`, pid, path)
	}
	for _, tc := range []struct {
		name, info, want, wantErr string
	}{
		{"a namespace", info(self, "/proc/self/ns/net"), "/proc/self/ns/net", ""},
		{"a plain file, a PID", info(self, plain), fmt.Sprintf("/proc/%d/ns/net", self), ""},
		{"missing, a PID", info(self, filepath.Join(dir, "gone")), fmt.Sprintf("/proc/%d/ns/net", self), ""},
		{"a plain file, no PID", info(0, plain), "", "cannot be opened here"},
		{"a directory, no PID", info(0, dir), "", "cannot be opened here"},
		{"nothing", `{"pid": 0}`, "", "neither a network namespace nor a PID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := fromSandboxInfo(tc.info)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("found %+v, err %v; want an error saying %q", f, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Path != tc.want {
				t.Errorf("path %s, want %s", f.Path, tc.want)
			}
		})
	}
}
