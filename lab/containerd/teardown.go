package containerd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/netdiag/netdiag/internal/procfs"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Stop removes every pod (through CRI, as the kubelet would), stops
// containerd and removes everything the runtime made: leftover shims and pod
// processes, cgroups, mounts, the shim sockets and CNI cache entries it left
// outside its directory, and the directory. It is bounded by ctx and by its
// own deadlines, and a second call does nothing.
func (r *Runtime) Stop(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	r.mu.Unlock()
	err := r.teardown(ctx)
	if r.conn != nil {
		r.conn.Close()
	}
	r.node.Close()
	return err
}

func (r *Runtime) teardown(ctx context.Context) error {
	return teardownDir(ctx, r.Dir, r.log)
}

// CleanStale removes the runtimes that processes which have ended left
// behind (a test killed by its timeout runs no cleanup): their containerd,
// shims, pods, cgroups, mounts and directories. Runtimes of live processes,
// this one included, are not touched.
func CleanStale(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, dir := range allRuntimeDirs() {
		_, pid, _ := dirOwner(filepath.Base(dir))
		if pid == os.Getpid() || procfs.Alive(pid) {
			continue
		}
		log.Info("removing a runtime left by an ended process", "dir", dir, "pid", pid)
		if err := teardownDir(ctx, dir, log); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// teardownDir removes the runtime living in dir, whether or not its
// containerd still runs. Each step goes on when an earlier one failed, so
// that one stuck mount does not leave processes running.
func teardownDir(ctx context.Context, dir string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Two cleaners of one stale runtime (test binaries of several packages
	// start at once) would race; the second one leaves it to the first.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		log.Info("runtime is being removed by another process", "dir", dir)
		return nil
	}
	name, _, _ := dirOwner(filepath.Base(dir))
	socket := filepath.Join(dir, socketFile)
	config := filepath.Join(dir, configFile)
	var errs []error
	fail := func(step string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", dir, step, err))
		}
	}

	// Shim sockets and sandbox IDs are read before the pods go: their
	// bundles, which name them, go with the pods.
	sockets, ids := shimSockets(dir), sandboxIDs(dir)
	isContainerd := func(argv []string) bool { return hasArgPair(argv, "--config", config) }
	if pids := findProcs(isContainerd); len(pids) > 0 {
		got, err := removeAllPods(ctx, socket)
		fail("remove pods", err)
		for _, id := range got {
			ids[id] = true
		}
	}
	for _, pid := range findProcs(isContainerd) {
		fail("stop containerd", terminate(ctx, pid, 10*time.Second, isContainerd))
	}
	// containerd 1.6 starts shims as `containerd-shim-runc-v2 -namespace NS
	// -id ID -address SOCKET`: the address is ours, the name alone is not.
	isShim := func(argv []string) bool { return hasArgPair(argv, "-address", socket) }
	for _, pid := range findProcs(isShim) {
		log.Info("ending a shim left running", "pid", pid)
		fail("stop shim", terminate(ctx, pid, 3*time.Second, isShim))
	}
	// Pod processes left without their shim are found by their network
	// namespace and by their cgroup; the cgroup alone is not enough, as
	// `lab down` moves processes out of the instance's cgroups.
	fail("end pod processes", killInPodNetns(ctx, dir, log))
	fail("remove cgroups", removeCgroups(ctx, name, log))
	fail("remove cgroups of pods without a parent", removeIDCgroups(ids))
	fail("unmount", unmountUnder(ctx, dir))
	for _, s := range sockets {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			fail("remove shim socket", err)
		}
	}
	fail("remove CNI cache", removeCNICache(name, ids))
	removeCreatedDirs(dir)

	if left := mountsUnder(dir); len(left) > 0 {
		// Never remove a tree with something mounted in it: the removal
		// would go on into the mounted filesystem.
		fail("remove directory", fmt.Errorf("still mounted: %s; not removed", strings.Join(left, ", ")))
	} else if err := os.RemoveAll(dir); err != nil {
		fail("remove directory", err)
	}
	return errors.Join(errs...)
}

// removeAllPods stops and removes every sandbox (and with it its
// containers) and returns the sandbox IDs.
func removeAllPods(ctx context.Context, socket string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	list, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil // the CRI plugin did not load: it made no pods
	}
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var ids []string
	var errs []error
	for _, sb := range list.Items {
		ids = append(ids, sb.Id)
		errs = append(errs, removeSandbox(ctx, rs, sb.Id))
	}
	return ids, errors.Join(errs...)
}

func removeSandbox(ctx context.Context, rs cri.RuntimeServiceClient, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := retry(ctx, func() error {
		_, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id})
		return err
	}); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if err := retry(ctx, func() error {
		_, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id})
		return err
	}); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	return nil
}

// retry tries a teardown call up to five times, about 3 s in all. Removal races with the
// runtime's own transitions: a container whose process ends while it is
// killed takes its shim with it ("ttrpc: closed"), and one still being
// started cannot be removed yet ("container is in starting state"); asked
// again a moment later, containerd finds the task gone or the container
// started.
func retry(ctx context.Context, call func() error) error {
	var err error
	for try := 0; try < 5; try++ {
		if err = call(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(try+1) * 200 * time.Millisecond):
		}
	}
	return err
}

// taskDir holds one bundle per running task (sandbox or container).
func taskDir(dir string) string {
	return filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "k8s.io")
}

// shimSockets reads the shims' socket paths from their bundles' address
// files ("unix:///run/containerd/s/HEX"): containerd 1.6 puts them there
// whatever its configuration says.
func shimSockets(dir string) []string {
	var out []string
	entries, _ := os.ReadDir(taskDir(dir))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(taskDir(dir), e.Name(), "address"))
		if err != nil {
			continue
		}
		p := strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
		if filepath.Dir(p) == "/run/containerd/s" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// sandboxIDs are the IDs the runtime knows from its directories, for the
// CNI cache entries named after them.
func sandboxIDs(dir string) map[string]bool {
	ids := map[string]bool{}
	for _, d := range []string{taskDir(dir), filepath.Join(dir, "root", "io.containerd.grpc.v1.cri", "sandboxes")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			ids[e.Name()] = true
		}
	}
	return ids
}

// removeCNICache removes libcni's cached results of the runtime's sandboxes
// (/var/lib/cni/results/NETWORK-ID-IFNAME); containerd 1.6 does not let the
// cache directory be set. A pod removed through CRI has none left.
func removeCNICache(network string, ids map[string]bool) error {
	const dir = "/var/lib/cni/results"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		ours := strings.HasPrefix(n, network+"-")
		if rest, ok := strings.CutPrefix(n, "cni-loopback-"); ok {
			id, _, _ := strings.Cut(rest, "-")
			ours = ids[id]
		}
		if ours {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// recordGlobalDirs notes which of the machine-wide directories containerd
// and libcni use this runtime must remove again: those that do not exist
// yet, and those another live runtime made (it may stop first, and then the
// last one to stop removes them).
func recordGlobalDirs(dir string) error {
	var mine []string
	shared := othersDirs(dir)
	for _, d := range globalDirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) || shared[d] {
			mine = append(mine, d)
		}
	}
	b, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, createdDir), b, 0o600); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	return nil
}

// recordedDirs reads what recordGlobalDirs wrote.
func recordedDirs(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, createdDir))
	if err != nil {
		return nil
	}
	var ds []string
	if json.Unmarshal(b, &ds) != nil {
		return nil
	}
	return ds
}

// othersDirs are the machine-wide directories that the other live runtimes
// have recorded.
func othersDirs(dir string) map[string]bool {
	out := map[string]bool{}
	for _, d := range allRuntimeDirs() {
		_, pid, _ := dirOwner(filepath.Base(d))
		if d == dir || (pid != os.Getpid() && !procfs.Alive(pid)) {
			continue
		}
		for _, g := range recordedDirs(d) {
			out[g] = true
		}
	}
	return out
}

// removeCreatedDirs removes the machine-wide directories this runtime
// recorded, deepest first, unless another live runtime recorded them too,
// and only when empty (a runtime that is not the lab's may use them).
func removeCreatedDirs(dir string) {
	ds := recordedDirs(dir)
	others := othersDirs(dir)
	slices.SortFunc(ds, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range ds {
		if slices.Contains(globalDirs, d) && !others[d] {
			os.Remove(d) // fails, as it should, when not empty
		}
	}
}

// findProcs returns the PIDs whose command line matches.
func findProcs(match func(argv []string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if argv := cmdline(pid); argv != nil && match(argv) && !procfs.Zombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func hasArgPair(argv []string, flag, value string) bool {
	for i, a := range argv {
		if (a == flag || a == "-"+flag) && i+1 < len(argv) && argv[i+1] == value {
			return true
		}
		if a == flag+"="+value || a == "-"+flag+"="+value {
			return true
		}
	}
	return false
}

// terminate sends SIGTERM, then SIGKILL after grace, and waits until the
// process is gone. It checks the command line before each signal, so a PID
// reused meanwhile is never signalled.
func terminate(ctx context.Context, pid int, grace time.Duration, still func([]string) bool) error {
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGTERM, grace}, {syscall.SIGKILL, 5 * time.Second}} {
		argv := cmdline(pid)
		if argv == nil || !still(argv) || procfs.Zombie(pid) {
			return nil
		}
		if err := syscall.Kill(pid, step.sig); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return nil
			}
			return fmt.Errorf("signal %d: %w", pid, err)
		}
		if waitGone(ctx, pid, step.wait) {
			return nil
		}
	}
	return fmt.Errorf("process %d (%s) did not end after SIGKILL", pid, strings.Join(cmdline(pid), " "))
}

func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !procfs.Alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !procfs.Alive(pid)
}

// mountPoint is a mount point and its file system type.
type mountPoint struct{ path, fstype string }

// mountInfo lists the mount points of /proc/self/mountinfo in mount order.

func mountInfo() []mountPoint {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountPoint
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mountPoint{path: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return out
}

// unescapeMount decodes the octal escapes (\040 for a space) mountinfo
// writes for blanks and backslashes in paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// mountsUnder lists the mount points at or below dir, deepest and newest
// first (the order to unmount them in).
func mountsUnder(dir string) []string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var out []string
	all := mountInfo()
	for i := len(all) - 1; i >= 0; i-- {
		if under(all[i].path, dir) {
			out = append(out, all[i].path)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

// unmountUnder unmounts everything at or below dir: the sandboxes' netns
// and /dev/shm mounts, the containers' root filesystems. A busy mount is
// detached, which is enough here: its users are the processes just ended.
func unmountUnder(ctx context.Context, dir string) error {
	for round := 0; round < 20 && ctx.Err() == nil; round++ {
		ms := mountsUnder(dir)
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			err := unix.Unmount(m, 0)
			if errors.Is(err, unix.EBUSY) {
				err = unix.Unmount(m, unix.MNT_DETACH)
			}
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	if ms := mountsUnder(dir); len(ms) > 0 {
		return fmt.Errorf("still mounted after repeated unmounts: %s", strings.Join(ms, ", "))
	}
	return nil
}

// cgroupRoots are the runtime's cgroup parents, one per mounted hierarchy
// (cgroup v1 has one per controller, and hybrid machines a v2 one beside).
func cgroupRoots(name string) []string {
	var out []string
	for _, m := range mountInfo() {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		p := filepath.Join(m.path, name)
		if st, err := os.Stat(p); err == nil && st.IsDir() && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// removeCgroups kills every process still in the runtime's cgroups (they
// can only be its pods' processes, orphaned when a shim was killed) and
// removes the cgroups, deepest first.
func removeCgroups(ctx context.Context, name string, log *slog.Logger) error {
	roots := cgroupRoots(name)
	if len(roots) == 0 {
		return nil
	}
	var dirs []string
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	slices.SortStableFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pids []int
		for _, d := range dirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("processes %v still in cgroup %s", pids, name)
		}
		for _, pid := range pids {
			log.Info("killing a pod process left in the runtime's cgroup", "pid", pid, "cmd", strings.Join(cmdline(pid), " "))
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var errs []error
	for _, d := range dirs {
		var err error
		for try := 0; try < 50; try++ {
			// The kernel frees a cgroup a moment after its last process
			// is reaped; until then rmdir says EBUSY.
			if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// removeIDCgroups removes the cgroups containerd makes for a container
// given no cgroup parent (a kubelet without QoS cgroups gives none):
// k8s.io/ID in each hierarchy, only for this runtime's IDs, then k8s.io
// itself when that leaves it empty (another runtime's entries keep it).
func removeIDCgroups(ids map[string]bool) error {
	var errs []error
	for _, m := range mountInfo() {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		base := filepath.Join(m.path, "k8s.io")
		if _, err := os.Stat(base); err != nil {
			continue
		}
		for id := range ids {
			dir := filepath.Join(base, id)
			// A container caught in its creation when the runtime stopped
			// ("runc init", orphaned) stays in its cgroup: it is ours by
			// the cgroup's name, the container's ID.
			for try := 0; try < 50; try++ {
				b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				pids := strings.Fields(string(b))
				if err != nil || len(pids) == 0 {
					break
				}
				for _, f := range pids {
					if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			var err error
			for try := 0; try < 50; try++ {
				if err = unix.Rmdir(dir); err == nil || !errors.Is(err, unix.EBUSY) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			}
		}
		unix.Rmdir(base) // not empty: not only ours
	}
	return errors.Join(errs...)
}

// killInPodNetns kills every process in one of the runtime's pod network
// namespaces, the ones mounted under its state directory: all containers of
// a pod share its sandbox's namespace, and only the runtime made them.
func killInPodNetns(ctx context.Context, dir string, log *slog.Logger) error {
	type nsID struct{ dev, ino uint64 }
	ours := map[nsID]bool{}
	mounts, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.grpc.v1.cri", "netns", "*"))
	for _, m := range mounts {
		var st unix.Stat_t
		var fs unix.Statfs_t
		// Only a mounted namespace (nsfs), not the empty file under it.
		if unix.Statfs(m, &fs) == nil && fs.Type == unix.NSFS_MAGIC && unix.Stat(m, &st) == nil {
			ours[nsID{st.Dev, st.Ino}] = true
		}
	}
	if len(ours) == 0 {
		return nil
	}
	inPods := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			var st unix.Stat_t
			if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && ours[nsID{st.Dev, st.Ino}] && !procfs.Zombie(pid) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := inPods()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("processes %v in the pods' network namespaces did not end", pids)
		}
		for _, pid := range pids {
			log.Info("killing a pod process left running", "pid", pid, "cmd", strings.Join(cmdline(pid), " "))
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
