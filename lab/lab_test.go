package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func runChecks(t *testing.T, l *lab.Lab) map[string]lab.CheckResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := lab.RunChecks(ctx, l)
	if err != nil {
		t.Fatalf("run checks: %v", err)
	}
	out := map[string]lab.CheckResult{}
	for _, r := range res {
		out[r.Name] = r
	}
	return out
}

// requireHealthy wants every check to pass within a few seconds. A cleared
// fault may need a moment to converge, as a real network does (IPv6
// neighbour entries that failed while a link was down are resolved again
// only when traffic asks for them); a lab that stays broken fails.
func requireHealthy(t *testing.T, l *lab.Lab, when string) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		var failing []lab.CheckResult
		for _, r := range runChecks(t, l) {
			if r.Status != "pass" {
				failing = append(failing, r)
			}
		}
		if len(failing) == 0 {
			if d := time.Since(start); d > time.Second {
				t.Logf("%s: healthy after %s", when, d.Round(100*time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			for _, r := range failing {
				t.Errorf("%s: check %s is %s: %s", when, r.Name, r.Status, r.Detail)
			}
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestLab builds one lab and proves it: healthy, then each fault breaks exactly
// the checks it declares and nothing else, and clear restores health. One lab
// serves every subtest because building one per fault would multiply the run
// time for no extra coverage: clear is itself under test.
func TestLab(t *testing.T) {
	l := labtest.Up(t, "tlab")
	ctx := context.Background()

	t.Run("healthy", func(t *testing.T) {
		requireHealthy(t, l, "healthy lab")
	})

	// IPv6 is on but quiet: no namespace has ever sent a router
	// solicitation (the IPv6 sysctls are in place before the first link
	// exists), and none sends MLD reports or router advertisements while
	// nothing changes, so captures show only the traffic under test.
	t.Run("ipv6-quiet", func(t *testing.T) {
		before := icmp6Out(t, l)
		time.Sleep(1500 * time.Millisecond)
		after := icmp6Out(t, l)
		for ns, a := range after {
			if n := a["Icmp6OutRouterSolicits"]; n != 0 {
				t.Errorf("%s sent %d router solicitations", ns, n)
			}
			for _, k := range []string{"Icmp6OutMLDv2Reports", "Icmp6OutGroupMembResponses", "Icmp6OutRouterAdvertisements"} {
				if d := a[k] - before[ns][k]; d != 0 {
					t.Errorf("%s: %s rose by %d in an idle lab", ns, k, d)
				}
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		st, err := lab.GetStatus(l.Instance)
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != "up" || len(st.Nodes) != 2 || len(st.Pods) < 3 || len(st.Services) < 3 {
			t.Fatalf("status: phase %q, %d nodes, %d pods, %d services", st.Phase, len(st.Nodes), len(st.Pods), len(st.Services))
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"netns_path"`, `"cluster_ip":"198.18.96.20"`, `"dns_service"`,
			`"cluster_cidr6":"2001:2:0:100::/56"`, `"ip6":"2001:2:0:101::10"`, `"internal_ip6":"2001:2::11"`,
			`"pod_cidr6":"2001:2:0:102::/64"`, `"bridge_ip6":"2001:2:0:101::1"`, `"address6":"2001:2:0:102::"`, `"ip6":"2001:2:0:10::10"`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("status JSON lacks %s: %s", want, b)
			}
		}
		for _, p := range st.Pods {
			if _, err := os.Stat(p.NetnsPath); err != nil {
				t.Errorf("pod %s: namespace path: %v", p.Key(), err)
			}
		}
		for _, pr := range st.Processes {
			if !pr.Running {
				t.Errorf("process %s is not running", pr.Name)
			}
		}
	})

	t.Run("up-twice-refused", func(t *testing.T) {
		_, err := lab.Up(ctx, l.Instance, quiet())
		var already *lab.AlreadyUpError
		if !errors.As(err, &already) {
			t.Fatalf("second lab up: got %v, want AlreadyUpError", err)
		}
		requireHealthy(t, l, "after refused second up")
	})

	for _, f := range lab.Faults {
		t.Run("fault/"+f.Name, func(t *testing.T) {
			if _, err := lab.InjectFault(ctx, l.Instance, f.Name, quiet()); err != nil {
				t.Fatalf("inject: %v", err)
			}
			t.Cleanup(func() {
				if _, err := lab.Clear(ctx, l.Instance, quiet()); err != nil {
					t.Errorf("clear: %v", err)
				}
			})
			got := runChecks(t, l)
			for name, r := range got {
				want := "pass"
				switch {
				case slices.Contains(f.Breaks, name):
					want = "fail"
				case slices.Contains(f.Partial, name):
					want = "partial"
				}
				if r.Status != want {
					t.Errorf("check %s: %s, want %s (%s)", name, r.Status, want, r.Detail)
				}
			}
			if _, err := lab.Clear(ctx, l.Instance, quiet()); err != nil {
				t.Fatalf("clear: %v", err)
			}
			requireHealthy(t, l, "after clear")
		})
	}
}

// icmp6Out reads the ICMPv6 output counters of every namespace of the lab.
func icmp6Out(t *testing.T, l *lab.Lab) map[string]map[string]int {
	t.Helper()
	const snmp6 = "/proc/thread-self/net/snmp6"
	out := map[string]map[string]int{}
	for _, name := range l.Namespaces() {
		ns := labtest.OpenNS(t, filepath.Join("/run/netns", name))
		files, errs, err := ns.ReadFiles([]string{snmp6})
		if err != nil || errs[snmp6] != nil {
			t.Fatalf("read %s in %s: %v %v", snmp6, name, err, errs[snmp6])
		}
		counters := map[string]int{}
		for _, line := range strings.Split(string(files[snmp6]), "\n") {
			if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "Icmp6Out") {
				counters[f[0]], _ = strconv.Atoi(f[1])
			}
		}
		if len(counters) == 0 {
			t.Fatalf("%s: no Icmp6Out counters in %s", name, snmp6)
		}
		out[name] = counters
	}
	return out
}

// TestDownRemovesEverything proves lab down removes every namespace, process
// and file of an instance, also when the state file is gone (as after a crash).
func TestDownRemovesEverything(t *testing.T) {
	l := labtest.Up(t, "tdown")
	ctx := context.Background()
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: the state file that lists the processes is lost.
	if err := os.Remove(filepath.Join(l.StateDir, "state.json")); err != nil {
		t.Fatal(err)
	}
	r, err := lab.Down(ctx, l.Instance, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Namespaces) != len(l.Namespaces()) {
		t.Errorf("removed namespaces %v, want all of %v", r.Namespaces, l.Namespaces())
	}
	for _, p := range st.Processes {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(p.PID))); err == nil {
			if b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "environ")); strings.Contains(string(b), "NETDIAG_LAB_PROC="+l.Instance+"/") {
				t.Errorf("process %s (pid %d) survived lab down", p.Name, p.PID)
			}
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.Prefix) {
			t.Errorf("namespace %s survived lab down", e.Name())
		}
	}
	etc, _ := filepath.Glob("/etc/netns/" + l.Prefix + "*")
	if len(etc) > 0 {
		t.Errorf("files survived lab down: %v", etc)
	}
	if _, err := os.Stat(l.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s survived lab down", l.StateDir)
	}
}
