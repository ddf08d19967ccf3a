package kubelet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors/netns"
)

// kernelTunables are the sysctls the kubelet's container manager wants
// (setupKernelTunables in pkg/kubelet/cm/container_manager_linux.go,
// v1.33): with protectKernelDefaults false it writes any that differ, with
// true it refuses to start. They are global to the machine, not to a lab
// node's namespace, so the lab must never let it write them: the kubelet
// runs with protectKernelDefaults true and reads these values from files of
// its own, bind-mounted over /proc/sys in a mount namespace of its own.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// Sysctls reads the machine's values of the sysctls the kubelet wants, so a
// test can check that running it changed none of them.
func Sysctls() (map[string]string, error) {
	out := map[string]string{}
	for name := range kernelTunables {
		b, err := os.ReadFile(filepath.Join("/proc/sys", name))
		if err != nil {
			return nil, err
		}
		out[strings.ReplaceAll(name, "/", ".")] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// startIsolated starts cmd in the node's network namespace and in a mount
// namespace of its own where /proc/sys shows the kernelTunables from files
// under dir, and hostPaths are directories under dir (hideHostPaths). dir is made a shared mount first so that what the kubelet
// mounts under it (pod volumes) reaches the machine's mount namespace,
// where containerd runs; Stop unmounts it with the rest. The thread that
// started cmd is kept until release is called: the kubelet's parent-death
// signal fires when that thread ends, not when the process does.
func startIsolated(cmd *exec.Cmd, node *netns.NS, dir string) (release func(), err error) {
	fake := filepath.Join(dir, "sysctl")
	names := make([]string, 0, len(kernelTunables))
	for name, v := range kernelTunables {
		p := filepath.Join(fake, strings.ReplaceAll(name, "/", "."))
		if err := os.MkdirAll(fake, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o444); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	sort.Strings(names)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return nil, errors.Join(fmt.Errorf("make %s shared: %w", dir, err), unix.Unmount(dir, unix.MNT_DETACH))
	}
	done, stop := make(chan error, 1), make(chan struct{})
	// The thread that unshares its mount namespace never goes back to the
	// scheduler: it stays locked and ends with this goroutine.
	offMainThread(func() {
		err := func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("new mount namespace: %w", err)
			}
			// Private first: a bind over /proc/sys must not propagate
			// to the machine's /proc.
			if err := unix.Mount("", "/proc", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make /proc private: %w", err)
			}
			for _, name := range names {
				src := filepath.Join(fake, strings.ReplaceAll(name, "/", "."))
				dst := filepath.Join("/proc/sys", name)
				if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind %s over %s: %w", src, dst, err)
				}
				if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
					return fmt.Errorf("make %s read-only: %w", dst, err)
				}
			}
			if err := hideHostPaths(dir); err != nil {
				return err
			}
			if err := unix.Setns(node.Fd(), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter the node's network namespace: %w", err)
			}
			return cmd.Start()
		}()
		done <- err
		if err == nil {
			<-stop
		}
	})
	if err := <-done; err != nil {
		return nil, errors.Join(err, unix.Unmount(dir, unix.MNT_DETACH))
	}
	var once sync.Once
	return func() { once.Do(func() { close(stop) }) }, nil
}

// offMainThread runs fn in a new goroutine locked to an OS thread that is
// not the process's main thread, and leaves it locked, so that the thread
// ends with fn. A locked goroutine that ends on the main thread does not end
// it: the runtime parks it for good, still in whatever namespace fn moved it
// to, and /proc/self (the main thread's view: mountinfo, ns/mnt) would show
// that namespace to the rest of the process.
func offMainThread(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		// Holding the main thread, a new goroutine cannot get it.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			fn()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// hostPaths are directories of the machine the kubelet writes whatever its
// flags say: the device manager's socket and checkpoint
// (pluginapi.DevicePluginPath, which it also empties at start) and the
// symlinks to its containers' logs (ContainerLogsDir). Left as they are,
// every lab kubelet would share them with any other kubelet of this
// machine and leave its files there when it stops. In the kubelet's mount
// namespace each is a directory of its own under dir, removed with it.
var hostPaths = []string{"/var/lib/kubelet/device-plugins", "/var/log/containers"}

// hideHostPaths binds, in the calling thread's mount namespace (the
// kubelet's, unshared), a directory under dir over each of hostPaths, or
// over its deepest existing ancestor so that nothing is created on the
// machine's disk: dir holds the missing part of the path. The mount
// holding each bind's target is made a slave first (only that mount, not
// its children: dir's own shared mount, through which pod volumes reach
// the machine's namespace, is left as it is), so that the bind does not
// propagate to the machine's mount namespace.
func hideHostPaths(dir string) error {
	root := filepath.Join(dir, "host")
	var targets []string
	for _, p := range hostPaths {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			return err
		}
		at := p
		for {
			if _, err := os.Stat(at); err == nil {
				break
			}
			at = filepath.Dir(at)
		}
		targets = append(targets, at)
	}
	sort.Strings(targets)
	var done []string
	for _, at := range targets {
		if slices.ContainsFunc(done, func(d string) bool { return at == d || strings.HasPrefix(at, d+"/") || d == "/" }) {
			continue // already under a bind of ours
		}
		if at == "/" {
			return fmt.Errorf("none of %s exists: refusing to bind over /", strings.Join(hostPaths, ", "))
		}
		mp, err := mountPointOf(at)
		if err != nil {
			return err
		}
		if err := unix.Mount("", mp, "", unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make %s a slave mount: %w", mp, err)
		}
		if err := unix.Mount(filepath.Join(root, at), at, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", filepath.Join(root, at), at, err)
		}
		done = append(done, at)
	}
	return nil
}

// mountPointOf is the mount point of the mount holding path, in the
// calling thread's mount namespace.
func mountPointOf(path string) (string, error) {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return "", err
	}
	best := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if (mp == "/" || path == mp || strings.HasPrefix(path, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return "", fmt.Errorf("no mount holds %s", path)
	}
	return best, nil
}
