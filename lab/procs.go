package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/netdiag/netdiag/internal/procfs"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"golang.org/x/net/dns/dnsmessage"
)

// procMarker is set in the environment of every process the lab starts, as
// NETDIAG_LAB_PROC=INSTANCE/NAME. The lab signals a process only when its
// environment carries the marker: a reused PID, or a person's shell opened
// inside a lab namespace, is never touched.
const procMarker = "NETDIAG_LAB_PROC"

// procState is what the state file remembers of a running process.
type procState struct {
	PID int    `json:"pid"`
	Sig string `json:"sig"` // hash of namespace and argv: a change means restart
}

func (p *ProcSpec) signature(argv []string) string {
	h := sha256.Sum256([]byte(p.Netns + "\x00" + strings.Join(argv, "\x00")))
	return hex.EncodeToString(h[:8])
}

func (p *ProcSpec) argv() ([]string, error) {
	if p.Helper != "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own executable for helper %s: %w", p.Helper, err)
		}
		return append([]string{exe, p.Helper}, p.Args...), nil
	}
	path, err := tools.Find("coredns")
	if err != nil {
		return nil, err
	}
	return append([]string{path}, p.Args...), nil
}

// reconcileProcs stops processes that are not wanted (or are wanted with other
// arguments) and starts the missing ones, then waits until each is serving.
func reconcileProcs(ctx context.Context, d *Desired, st *state, o openSet, log *slog.Logger) error {
	if st.Procs == nil {
		st.Procs = map[string]procState{}
	}
	argvs := map[string][]string{}
	for name, spec := range d.Procs {
		argv, err := spec.argv()
		if err != nil {
			return err
		}
		argvs[name] = argv
	}
	for _, name := range slices.Sorted(maps.Keys(st.Procs)) {
		ps := st.Procs[name]
		spec, wanted := d.Procs[name]
		alive := ownedBy(ps.PID, d.Lab.Instance, name)
		if wanted && alive && spec.signature(argvs[name]) == ps.Sig {
			continue
		}
		if alive {
			log.Debug("stopping lab process", "name", name, "pid", ps.PID)
			stopPID(ps.PID)
		}
		delete(st.Procs, name)
	}
	var started []string
	logStart := map[string]int64{}
	for _, name := range slices.Sorted(maps.Keys(d.Procs)) {
		if _, ok := st.Procs[name]; ok {
			continue
		}
		spec := d.Procs[name]
		pid, off, err := startProc(d.Lab, spec, argvs[name], o[spec.Netns].ns)
		logStart[name] = off
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		log.Debug("started lab process", "name", name, "pid", pid, "netns", spec.Netns)
		st.Procs[name] = procState{PID: pid, Sig: spec.signature(argvs[name])}
		started = append(started, name)
	}
	for _, name := range started {
		spec := d.Procs[name]
		if err := waitReady(ctx, d.Lab, spec, st.Procs[name].PID, o[spec.Netns].ns, logStart[name]); err != nil {
			return err
		}
	}
	return nil
}

// startProc starts one lab process and returns its PID and where its output
// starts in its log, which keeps the output of earlier runs.
func startProc(l *Lab, spec *ProcSpec, argv []string, ns *netns.NS) (int, int64, error) {
	logDir := filepath.Join(l.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return 0, 0, err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	var off int64
	if fi, err := logf.Stat(); err == nil {
		off = fi.Size()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = l.StateDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(), fmt.Sprintf("%s=%s/%s", procMarker, l.Instance, spec.Name))
	if spec.Helper != "" {
		cmd.Env = append(cmd.Env, helperEnv+"=1")
	}
	// Its own session: the server outlives `netdiag lab up` and a Ctrl-C in
	// the terminal that started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.Start(cmd); err != nil {
		return 0, 0, err
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while this process lives (tests keep running).
	go cmd.Wait()
	return pid, off, nil
}

// cleanEnv is the environment without lab markers, so a lab process started
// from another never inherits the wrong identity.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, procMarker+"=") || strings.HasPrefix(kv, helperEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func waitReady(ctx context.Context, l *Lab, spec *ProcSpec, pid int, ns *netns.NS, logStart int64) error {
	if spec.Ready == "" {
		return nil
	}
	kind, addr, _ := strings.Cut(spec.Ready, ":")
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		// Not ownedBy: right after exec the kernel may not have set up the
		// new environment yet, and this PID is the child just started.
		if procfs.Zombie(pid) {
			logPath := filepath.Join(l.StateDir, "logs", spec.Name+".log")
			return fmt.Errorf("%s exited right after start: %s (log: %s)", spec.Name, logTail(logPath, logStart), logPath)
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		switch kind {
		case "tcp":
			var c net.Conn
			if c, last = ns.Dial(cctx, "tcp", addr); last == nil {
				c.Close()
			}
		case "dns":
			last = dnsPing(cctx, ns, addr)
		case "log":
			last = logContains(filepath.Join(l.StateDir, "logs", spec.Name+".log"), logStart, addr)
		}
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready (%s) after 10s: %v; see %s", spec.Name, spec.Ready, last, filepath.Join(l.StateDir, "logs", spec.Name+".log"))
}

// logTail returns the last lines a process wrote after offset, for errors.
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "no output"
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	if out := strings.Join(lines, " | "); out != "" {
		return out
	}
	return "no output"
}

// logContains reports whether a process's log holds text after offset: a
// helper that has no port to probe says it is ready by printing.
func logContains(path string, offset int64, text string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), text) {
		return fmt.Errorf("has not printed %q yet", text)
	}
	return nil
}

// dnsPing asks a DNS server for the root SOA over UDP; any reply means it is
// serving.
func dnsPing(ctx context.Context, ns *netns.NS, addr string) error {
	c, err := ns.Dial(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x4e44}, Questions: []dnsmessage.Question{{
		Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET}}}
	b, err := msg.Pack()
	if err != nil {
		return err
	}
	if _, err := c.Write(b); err != nil {
		return err
	}
	buf := make([]byte, 512)
	_, err = c.Read(buf)
	return err
}

// ownedBy reports whether pid is alive and is the lab process instance/name.
func ownedBy(pid int, instance, name string) bool {
	if pid <= 0 {
		return false
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	if procfs.Zombie(pid) {
		return false
	}
	prefix := procMarker + "=" + instance + "/"
	for _, kv := range strings.Split(string(env), "\x00") {
		if (name == "" && strings.HasPrefix(kv, prefix)) || kv == prefix+name {
			return true
		}
	}
	return false
}

// stopPID ends a lab process: SIGTERM, then SIGKILL after a second.
func stopPID(pid int) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return
	}
	for i := 0; i < 50; i++ {
		if procfs.Zombie(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Signal(syscall.SIGKILL)
	for i := 0; i < 50 && !procfs.Zombie(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// labPIDs finds every live process carrying the instance's marker, whether or
// not the state file remembers it (after a crash it may not).
func labPIDs(instance string) []int {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ownedBy(pid, instance, "") {
			pids = append(pids, pid)
		}
	}
	return pids
}
