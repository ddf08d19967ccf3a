package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
)

// state is what a lab instance remembers between commands.
type state struct {
	Phase   string               `json:"phase"` // "building" or "up"
	Since   time.Time            `json:"since"`
	Faults  []string             `json:"faults"`
	Procs   map[string]procState `json:"procs"`
	Version int                  `json:"version"`
	// Shape is the lab's shape; empty in state files written before
	// shapes existed, which were all emulated.
	Shape string `json:"shape,omitempty"`
}

// newFromState is the description of an instance in the shape its state
// records.
func newFromState(instance string, st *state) (*Lab, error) {
	shape := ShapeEmulated
	if st != nil && st.Shape != "" {
		shape = st.Shape
	}
	return NewShape(instance, shape)
}

func statePath(l *Lab) string { return filepath.Join(l.StateDir, "state.json") }

func loadState(l *Lab) (*state, error) {
	b, err := os.ReadFile(statePath(l))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", statePath(l), err)
	}
	return &st, nil
}

func saveState(l *Lab, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(l) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(l))
}

// lock serialises commands on one instance (two `lab fault` at once would
// otherwise interleave their applies).
func lock(instance string) (func(), error) {
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(StateRoot, "."+instance+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// AlreadyUpError reports an instance that exists (fully or in part).
type AlreadyUpError struct {
	Instance   string
	Namespaces []string
}

func (e *AlreadyUpError) Error() string {
	return fmt.Sprintf("lab %q is already up (%d namespaces named %s%s-*); use `netdiag lab status --instance %s`, or `netdiag lab down --instance %s` to remove it first",
		e.Instance, len(e.Namespaces), NamePrefix, e.Instance, e.Instance, e.Instance)
}

// NotUpError reports a command that needs a running lab.
type NotUpError struct{ Instance string }

func (e *NotUpError) Error() string {
	return fmt.Sprintf("lab %q is not up; start it with `netdiag lab up --instance %s`", e.Instance, e.Instance)
}

func existingNamespaces(l *Lab) []string {
	names, _ := netns.ListNamed()
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, l.Prefix) {
			out = append(out, n)
		}
	}
	return out
}

// RequiredTools are the programs the lab runs.
var RequiredTools = []string{"ip", "iptables-restore", "ip6tables-restore", "nft", "coredns"}

// Up builds the lab instance in the emulated shape. It refuses to build
// over an existing one, and removes what it built if a step fails, so there
// is never half a lab.
func Up(ctx context.Context, instance string, log *slog.Logger) (*Lab, error) {
	return UpShape(ctx, instance, ShapeEmulated, log)
}

// UpShape is Up for a lab of the given shape (ShapeEmulated or
// ShapeCluster).
func UpShape(ctx context.Context, instance, shape string, log *slog.Logger) (*Lab, error) {
	log = orDiscard(log)
	l, err := NewShape(instance, shape)
	if err != nil {
		return nil, err
	}
	if err := tools.Require(RequiredTools...); err != nil {
		return nil, err
	}
	if err := checkIptablesBackend(ctx); err != nil {
		return nil, err
	}
	unlock, err := lock(instance)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if ex := existingNamespaces(l); len(ex) > 0 {
		return nil, &AlreadyUpError{Instance: instance, Namespaces: ex}
	}
	if _, err := os.Stat(statePath(l)); err == nil {
		return nil, &AlreadyUpError{Instance: instance}
	}
	built := false
	defer func() {
		if !built {
			removeInstance(l, log)
		}
	}()
	if err := os.MkdirAll(filepath.Join(l.StateDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	st := &state{Phase: "building", Since: time.Now().UTC(), Procs: map[string]procState{}, Version: 1, Shape: shape}
	if err := saveState(l, st); err != nil {
		return nil, err
	}
	for _, name := range l.Namespaces() {
		ns, err := netns.CreateNamed(name)
		if err != nil {
			return nil, fmt.Errorf("create namespace %s: %w", name, err)
		}
		ns.Close()
	}
	d, err := desiredFor(l, nil)
	if err != nil {
		return nil, err
	}
	if err := apply(ctx, d, st, log); err != nil {
		saveState(l, st) // remember the processes so the cleanup finds them
		return nil, fmt.Errorf("build lab %q: %w (the partial lab was removed)", instance, err)
	}
	st.Phase = "up"
	if err := saveState(l, st); err != nil {
		return nil, err
	}
	built = true
	return d.Lab, nil
}

// checkIptablesBackend refuses the legacy backend, whose tables `nft flush
// ruleset` would not remove. iptables and ip6tables are separate alternatives,
// so each is checked.
func checkIptablesBackend(ctx context.Context) error {
	for _, prog := range []string{"iptables", "ip6tables"} {
		restore, err := tools.Find(prog + "-restore")
		if err != nil {
			return err
		}
		out, _ := osexec.CommandContext(ctx, restore, "--version").CombinedOutput()
		if strings.Contains(string(out), "legacy") {
			return fmt.Errorf("the lab needs %s with the nf_tables backend (Debian's default), found legacy: run `update-alternatives --set %s /usr/sbin/%s-nft`", prog, prog, prog)
		}
	}
	return nil
}

// Removed says what Down took away.
type Removed struct {
	Instance   string   `json:"instance"`
	Namespaces []string `json:"namespaces"`
	Processes  []int    `json:"processes"`
	Files      []string `json:"files"`
}

// Down removes a lab instance: its processes (by PID, only those carrying the
// instance's marker), its namespaces, its /etc/netns entries and its state. It
// works from names and markers, not from the state file, so it also cleans up
// after a crash. Removing an instance that does not exist is not an error.
func Down(ctx context.Context, instance string, log *slog.Logger) (*Removed, error) {
	log = orDiscard(log)
	l, err := New(instance)
	if err != nil {
		return nil, err
	}
	unlock, err := lock(instance)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r := removeInstance(l, log)
	os.Remove(filepath.Join(StateRoot, "."+instance+".lock"))
	return r, nil
}

func removeInstance(l *Lab, log *slog.Logger) *Removed {
	r := &Removed{Instance: l.Instance}
	pids := labPIDs(l.Instance)
	if st, err := loadState(l); err == nil {
		for name, p := range st.Procs {
			if ownedBy(p.PID, l.Instance, name) && !slices.Contains(pids, p.PID) {
				pids = append(pids, p.PID)
			}
		}
	}
	sort.Ints(pids)
	var wg sync.WaitGroup
	for _, pid := range pids {
		wg.Add(1)
		go func() { defer wg.Done(); stopPID(pid) }()
	}
	wg.Wait()
	r.Processes = pids
	for _, name := range existingNamespaces(l) {
		if err := netns.DeleteNamed(name); err != nil {
			log.Warn("could not remove namespace", "netns", name, "err", err)
			continue
		}
		r.Namespaces = append(r.Namespaces, name)
	}
	if entries, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), l.Prefix) {
				p := filepath.Join("/etc/netns", e.Name())
				if err := os.RemoveAll(p); err == nil {
					r.Files = append(r.Files, p)
				}
			}
		}
	}
	if _, err := os.Stat(l.StateDir); err == nil {
		if err := os.RemoveAll(l.StateDir); err == nil {
			r.Files = append(r.Files, l.StateDir)
		}
	}
	r.Files = append(r.Files, removeCgroups(l.Prefix, log)...)
	return r
}

// removeCgroups removes cgroup trees named with the lab's prefix (tests of
// the pod finder build kubelet-like cgroups), bottom-up, first moving any
// process left in them back to the hierarchy's root.
func removeCgroups(prefix string, log *slog.Logger) []string {
	var tops []string
	for _, pat := range []string{"/sys/fs/cgroup/" + prefix + "*", "/sys/fs/cgroup/*/" + prefix + "*"} {
		m, _ := filepath.Glob(pat)
		tops = append(tops, m...)
	}
	var removed []string
	for _, top := range tops {
		root := filepath.Dir(top)
		var dirs []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if b, err := os.ReadFile(filepath.Join(dirs[i], "cgroup.procs")); err == nil {
				for _, pid := range strings.Fields(string(b)) {
					os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0o644)
				}
			}
			if err := os.Remove(dirs[i]); err != nil {
				log.Warn("could not remove cgroup", "path", dirs[i], "err", err)
			}
		}
		removed = append(removed, top)
	}
	return removed
}

// Instances lists lab instances present on the machine, found by namespace
// name and by state directory.
func Instances() []string {
	set := map[string]bool{}
	add := func(name string) {
		if rest, ok := strings.CutPrefix(name, NamePrefix); ok {
			if inst, _, ok := strings.Cut(rest, "-"); ok && ValidateInstance(inst) == nil {
				set[inst] = true
			}
		}
	}
	names, _ := netns.ListNamed()
	for _, n := range names {
		add(n)
	}
	if entries, err := os.ReadDir(StateRoot); err == nil {
		for _, e := range entries {
			if e.IsDir() && ValidateInstance(e.Name()) == nil {
				set[e.Name()] = true
			}
		}
	}
	if entries, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range entries {
			add(e.Name())
		}
	}
	for _, pat := range []string{"/sys/fs/cgroup/" + NamePrefix + "*", "/sys/fs/cgroup/*/" + NamePrefix + "*"} {
		m, _ := filepath.Glob(pat)
		for _, p := range m {
			add(filepath.Base(p))
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Status is the lab as `netdiag lab status` shows it.
type Status struct {
	*Lab
	Phase     string       `json:"phase"` // "up", "building", "broken" or "down"
	Since     time.Time    `json:"since,omitzero"`
	Faults    []string     `json:"faults"`
	Processes []ProcStatus `json:"processes"`
	Missing   []string     `json:"missing_namespaces,omitempty"`
}

// ProcStatus is one lab process.
type ProcStatus struct {
	Name    string `json:"name"`
	Netns   string `json:"netns"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
}

// GetStatus describes an instance as it is now.
func GetStatus(instance string) (*Status, error) {
	l, err := New(instance)
	if err != nil {
		return nil, err
	}
	st, err := loadState(l)
	present := existingNamespaces(l)
	if err != nil {
		if len(present) == 0 {
			return &Status{Lab: l, Phase: "down", Faults: []string{}}, nil
		}
		return &Status{Lab: l, Phase: "broken", Faults: []string{}, Missing: nil}, nil
	}
	if l, err = newFromState(instance, st); err != nil {
		return nil, err
	}
	d, err := desiredFor(l, st.Faults)
	if err != nil {
		return nil, err
	}
	s := &Status{Lab: d.Lab, Phase: st.Phase, Since: st.Since, Faults: append([]string{}, st.Faults...)}
	for _, name := range l.Namespaces() {
		if !slices.Contains(present, name) {
			s.Missing = append(s.Missing, name)
		}
	}
	if len(s.Missing) > 0 {
		s.Phase = "broken"
	}
	for _, name := range slices.Sorted(maps.Keys(st.Procs)) {
		p := st.Procs[name]
		ns := ""
		if spec, ok := d.Procs[name]; ok {
			ns = spec.Netns
		}
		s.Processes = append(s.Processes, ProcStatus{Name: name, Netns: ns, PID: p.PID, Running: ownedBy(p.PID, instance, name)})
	}
	return s, nil
}

// Load returns the lab's description with the current Kubernetes view
// (readiness, kube-proxy) for a running instance.
func Load(instance string) (*Lab, error) {
	s, err := GetStatus(instance)
	if err != nil {
		return nil, err
	}
	if s.Phase != "up" {
		return nil, &NotUpError{Instance: instance}
	}
	return s.Lab, nil
}

// InjectFault adds a fault to a running lab. Faults stack; Clear removes all.
func InjectFault(ctx context.Context, instance, name string, log *slog.Logger) (*Fault, error) {
	log = orDiscard(log)
	f, err := FaultByName(name)
	if err != nil {
		return nil, err
	}
	return f, change(ctx, instance, log, func(st *state) error {
		if slices.Contains(st.Faults, name) {
			return fmt.Errorf("fault %s is already active in lab %q", name, instance)
		}
		st.Faults = append(st.Faults, name)
		return nil
	})
}

// Clear heals the lab: it applies the healthy baseline, which undoes every
// fault and any hand-made change to what the lab manages.
func Clear(ctx context.Context, instance string, log *slog.Logger) ([]string, error) {
	log = orDiscard(log)
	var cleared []string
	err := change(ctx, instance, log, func(st *state) error {
		cleared, st.Faults = st.Faults, nil
		return nil
	})
	return cleared, err
}

func change(ctx context.Context, instance string, log *slog.Logger, mutate func(*state) error) error {
	l, err := New(instance)
	if err != nil {
		return err
	}
	unlock, err := lock(instance)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(l)
	if err != nil || st.Phase != "up" {
		return &NotUpError{Instance: instance}
	}
	if st.Shape == ShapeCluster {
		// Applying would flush the firewall, routes and links that
		// kube-proxy, flannel and the CNI plugins wrote.
		return fmt.Errorf("lab %q runs a real cluster (shape %q): its faults are made on the cluster, not by rewriting the nodes; `netdiag lab down --instance %s` ends it", instance, st.Shape, instance)
	}
	if l, err = newFromState(instance, st); err != nil {
		return err
	}
	if err := mutate(st); err != nil {
		return err
	}
	d, err := desiredFor(l, st.Faults)
	if err != nil {
		return err
	}
	aerr := apply(ctx, d, st, log)
	if err := saveState(l, st); err != nil {
		return errors.Join(aerr, err)
	}
	return aerr
}

// orDiscard lets callers pass a nil logger.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
