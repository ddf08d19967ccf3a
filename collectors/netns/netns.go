// Package netns opens network namespaces and does work inside them without
// ever leaving an OS thread of the process in a foreign namespace.
//
// Three ways in, as the design asks:
//   - netlink handles bound to the namespace (Handle), no thread switching;
//   - sockets created on a thread locked inside the namespace (Socket, Listen,
//     Dial); a socket keeps its namespace for life, so it is then used from any
//     goroutine;
//   - programs started from a thread locked inside the namespace (Start, Output);
//     the child inherits the namespace.
//
// Do is the one place that switches a thread. It locks the goroutine to its
// thread, enters the namespace, runs the function and switches back; when the
// switch back fails the thread stays locked, and the Go runtime destroys a
// locked thread when its goroutine ends, so a thread in a foreign namespace is
// never handed back to the scheduler.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where iproute2 keeps named namespaces (`ip netns add NAME`).
const RunDir = "/run/netns"

// NS is an open network namespace. It holds a file descriptor, so the namespace
// stays alive while the NS is open even if its name is removed.
type NS struct {
	path  string
	f     *os.File
	inode uint64
}

// Open opens a network namespace by path: /run/netns/NAME, /proc/PID/ns/net,
// or any bind mount of a namespace. A bare name without a slash is taken as
// /run/netns/NAME, as `ip netns` does.
func Open(path string) (*NS, error) {
	if path == "" {
		return nil, errors.New("empty namespace path: give /run/netns/NAME, /proc/PID/ns/net or a namespace name")
	}
	if !strings.Contains(path, "/") {
		path = filepath.Join(RunDir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network namespace %s does not exist (accepted: /run/netns/NAME, /proc/PID/ns/net, or a name listed by `ip netns list`)", path)
		}
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat namespace %s: %w", path, err)
	}
	// A bind-mounted namespace lives on nsfs; anything else (a plain file, a
	// directory) would make setns fail later with a confusing EINVAL.
	if st.Type != unix.NSFS_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a network namespace (not on nsfs; was the namespace deleted and the file left behind?)", path)
	}
	var s unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &s); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat namespace %s: %w", path, err)
	}
	ns := &NS{path: path, f: f, inode: s.Ino}
	// Check the namespace type: setns with CLONE_NEWNET on a mount or pid
	// namespace file fails, and we want that failure here, with the path.
	if kind, err := nsKind(f); err == nil && kind != "net" {
		f.Close()
		return nil, fmt.Errorf("%s is a %s namespace, not a network namespace", path, kind)
	}
	return ns, nil
}

// OpenPID opens the network namespace of a process.
func OpenPID(pid int) (*NS, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid PID %d: must be a positive process ID", pid)
	}
	p := fmt.Sprintf("/proc/%d/ns/net", pid)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return nil, fmt.Errorf("process %d does not exist (has it exited?)", pid)
	}
	return Open(p)
}

var (
	originOnce sync.Once
	origin     *NS
	originErr  error
)

// Origin returns the namespace the process started in. It is opened once, from
// the thread-group leader, which netns never moves.
func Origin() (*NS, error) {
	originOnce.Do(func() { origin, originErr = Open("/proc/self/ns/net") })
	return origin, originErr
}

// Path is the path the namespace was opened with.
func (n *NS) Path() string { return n.path }

// Inode identifies the namespace: two paths name the same namespace when their
// inodes are equal. It is the number `ls -L -i` and `/proc/PID/ns/net` show.
func (n *NS) Inode() uint64 { return n.inode }

// Fd is the namespace's file descriptor, valid until Close.
func (n *NS) Fd() int { return int(n.f.Fd()) }

// Close releases the namespace.
func (n *NS) Close() error { return n.f.Close() }

func (n *NS) String() string { return fmt.Sprintf("%s (net:[%d])", n.path, n.inode) }

// Handle returns a netlink handle whose requests act in the namespace. The
// caller closes it.
func (n *NS) Handle() (*netlink.Handle, error) {
	// Every netlink family the project uses must be listed: for a family
	// without a socket here, the library silently opens one in the
	// caller's namespace (sock_diag would list the host's sockets).
	h, err := netlink.NewHandleAt(vnetns.NsHandle(n.Fd()), unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.path, err)
	}
	return h, nil
}

// ErrThreadLost reports that a thread could not return to the origin namespace.
// The thread is retired, not reused, so the process stays safe; the error is
// still reported because something is badly wrong with the host.
var ErrThreadLost = errors.New("could not return the thread to its namespace; thread retired")

// Do runs fn on an OS thread that is inside the namespace. fn must not start
// goroutines that expect to be in the namespace: only the calling goroutine is.
func (n *NS) Do(fn func() error) error {
	type result struct{ err error }
	done := make(chan result, 1)
	// A fresh goroutine: if the switch back fails, it ends while still locked
	// and the runtime kills its thread; the caller's goroutine is unaffected.
	go func() {
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{fmt.Errorf("open current thread namespace: %w", err)}
			return
		}
		defer back.Close()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{fmt.Errorf("enter network namespace %s: %w", n.path, err)}
			return
		}
		ferr := fn()
		if err := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread dies with this goroutine.
			done <- result{errors.Join(ferr, ErrThreadLost, err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{ferr}
	}()
	return (<-done).err
}

// Socket creates a socket inside the namespace. The descriptor is close-on-exec.
func (n *NS) Socket(domain, typ, proto int) (int, error) {
	var fd int
	err := n.Do(func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("socket in %s: %w", n.path, err)
	}
	return fd, nil
}

// Listen opens a listening socket inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (UDP, ICMP) inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace. The connect runs on the locked
// thread, so it is bounded by the context's deadline.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Start starts cmd inside the namespace: the fork happens on a thread locked
// in it, and the child inherits the namespace.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Output runs a program inside the namespace and returns its standard output.
// The context bounds it; on failure the error carries the program's stderr.
func (n *NS) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	return n.Run(ctx, nil, name, args...)
}

// OutputLimit is Output that fails, rather than grow without end, when the
// program prints more than max bytes.
func (n *NS) OutputLimit(ctx context.Context, max int, name string, args ...string) ([]byte, error) {
	return n.run(ctx, nil, max, name, args...)
}

// DefaultOutputLimit bounds what any program run in a namespace may print.
const DefaultOutputLimit = 64 << 20

// ErrOutputTooLarge is returned when a program prints more than allowed.
var ErrOutputTooLarge = errors.New("output larger than allowed")

// Run is Output with standard input (for iptables-restore, nft -f -).
func (n *NS) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	return n.run(ctx, stdin, DefaultOutputLimit, name, args...)
}

// limitedBuffer keeps at most max bytes and remembers that it overflowed.
type limitedBuffer struct {
	strings.Builder
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.over = true
		return 0, ErrOutputTooLarge
	}
	return b.Builder.Write(p)
}

func (n *NS) run(ctx context.Context, stdin []byte, max int, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	stdout := &limitedBuffer{max: max}
	stderr := &limitedBuffer{max: 64 << 10}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = time.Second
	if err := n.Start(cmd); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, n.path, err)
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if stdout.over {
			return nil, fmt.Errorf("%s in %s: %w (%d bytes)", name, n.path, ErrOutputTooLarge, max)
		}
		if ctx.Err() != nil {
			return []byte(stdout.String()), fmt.Errorf("%s in %s: %w", name, n.path, ctx.Err())
		}
		if msg != "" {
			return []byte(stdout.String()), fmt.Errorf("%s in %s: %w: %s", name, n.path, err, msg)
		}
		return []byte(stdout.String()), fmt.Errorf("%s in %s: %w", name, n.path, err)
	}
	return []byte(stdout.String()), nil
}

// ReadSysctl reads a value under /proc/sys/net as seen from inside the
// namespace, e.g. "ipv4/ip_forward". /proc/sys/net shows the namespace of the
// thread that opens the file, so the open happens inside Do.
func (n *NS) ReadSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var out []byte
	err = n.Do(func() error {
		var err error
		out, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in %s: %w", key, n.path, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ReadFiles reads files as seen from a thread inside the namespace, in one
// switch: /proc/sys/net and /proc/thread-self/net show the reader's namespace.
// A file that cannot be read is left out, its error in errs.
func (n *NS) ReadFiles(paths []string) (files map[string][]byte, errs map[string]error, err error) {
	files, errs = map[string][]byte{}, map[string]error{}
	err = n.Do(func() error {
		for _, p := range paths {
			b, err := readProcFile(p)
			if err != nil {
				errs[p] = err
				continue
			}
			files[p] = b
		}
		return nil
	})
	return files, errs, err
}

// maxProcFile bounds one /proc or /sys file: the largest the collectors read
// (/proc/net/netstat) is a few kilobytes.
const maxProcFile = 4 << 20

func readProcFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProcFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxProcFile {
		return nil, fmt.Errorf("%s: %w (%d bytes)", p, ErrOutputTooLarge, maxProcFile)
	}
	return b, nil
}

// WriteSysctl writes a value under /proc/sys/net inside the namespace.
func (n *NS) WriteSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	err = n.Do(func() error { return os.WriteFile(p, []byte(value), 0o644) })
	if err != nil {
		return fmt.Errorf("write sysctl %s=%s in %s: %w", key, value, n.path, err)
	}
	return nil
}

func sysctlPath(key string) (string, error) {
	// Dotted form (ipv4.ip_forward) unless it already has slashes: interface
	// names such as flannel.1 contain dots.
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	key = strings.TrimPrefix(key, "net/")
	if key == "" || strings.Contains(key, "..") {
		return "", fmt.Errorf("invalid sysctl key %q (expected e.g. ipv4.ip_forward)", key)
	}
	return filepath.Join("/proc/sys/net", key), nil
}

// nsKind reads the namespace type from the symlink text the kernel gives a
// namespace file ("net:[4026531840]") when it is reached through /proc.
func nsKind(f *os.File) (string, error) {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return "", err
	}
	if i := strings.IndexByte(target, ':'); i > 0 && strings.HasSuffix(target, "]") {
		return target[:i], nil
	}
	return "", fmt.Errorf("not a namespace link: %s", target)
}

// ThreadNamespaces returns, for every OS thread of this process, the inode of
// the network namespace it is in. Tests use it to prove no thread was left in a
// foreign namespace.
func ThreadNamespaces() (map[int]uint64, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	out := make(map[int]uint64, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var s unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", tid), &s); err != nil {
			continue // the thread exited meanwhile
		}
		out[tid] = s.Ino
	}
	return out, nil
}
