package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestLabUpCluster runs `netdiag lab up --cluster` as a user does: the real
// cluster comes up healthy, its kubeconfig works from this machine's own
// namespace (through the loopback forwarder), and Ctrl-C takes everything
// down. Then a second run is killed outright, as a crash would end it, and
// `netdiag lab down` removes what it left: nothing of either run remains.
func TestLabUpCluster(t *testing.T) {
	labtest.RequireRoot(t)
	var absent []string
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "flanneld", "containerd", "etcd", "coredns"} {
		if _, err := tools.FindGoInstalled(name); err != nil {
			absent = append(absent, name)
		}
	}
	if len(absent) > 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("not installed: %v (CI is set, so this is not skipped): run scripts/install-deps", absent)
		}
		t.Skipf("not installed: %v: run scripts/install-deps", absent)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	inst := labtest.Instance("clu")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lab.Down(ctx, inst, nil)
	})

	start := func(t *testing.T) (*exec.Cmd, *bufio.Reader, *syncBuffer) {
		cmd := exec.Command(self, "lab", "up", "--cluster", "--instance", inst, "--module", "../..", "-o", "json")
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		errs := &syncBuffer{}
		cmd.Stderr = errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		return cmd, bufio.NewReader(stdout), errs
	}
	// readUp reads the JSON document the command prints once the cluster
	// is up.
	readUp := func(t *testing.T, r *bufio.Reader, errs *syncBuffer) map[string]any {
		type result struct {
			doc map[string]any
			err error
		}
		ch := make(chan result, 1)
		go func() {
			var doc map[string]any
			err := json.NewDecoder(r).Decode(&doc)
			ch <- result{doc, err}
		}()
		select {
		case res := <-ch:
			if res.err != nil {
				t.Fatalf("lab up --cluster printed no JSON: %v\nstderr:\n%s", res.err, errs.String())
			}
			return res.doc
		case <-time.After(4 * time.Minute):
			t.Fatalf("lab up --cluster not up after 4 minutes\nstderr:\n%s", errs.String())
		}
		return nil
	}

	t.Run("up, used, interrupted", func(t *testing.T) {
		cmd, stdout, errs := start(t)
		doc := readUp(t, stdout, errs)
		t.Logf("up in %v ms (lab %v, control plane %v, nodes %v, workloads %v ms)", doc["up_ms"], doc["lab_ms"], doc["control_plane_ms"], doc["nodes_ms"], doc["workloads_ms"])
		if doc["healthy"] != true {
			t.Errorf("not healthy: %v", doc["health"])
		}
		checks, _ := doc["health"].([]any)
		if len(checks) < 6 {
			t.Errorf("%d health checks, want at least 6: %v", len(checks), doc["health"])
		}
		for _, c := range checks {
			t.Logf("health: %v", c)
		}

		// The kubeconfig works from this machine's namespace.
		kc, _ := doc["kubeconfig"].(string)
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(cfg.Host, "https://127.0.0.1:") {
			t.Errorf("kubeconfig server %s, want this machine's loopback", cfg.Host)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list nodes through %s: %v", kc, err)
		}
		var names []string
		for _, n := range nodes.Items {
			names = append(names, n.Name)
		}
		if strings.Join(names, ",") != "node-a,node-b" {
			t.Errorf("nodes %v, want node-a and node-b", names)
		}
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("through %s: nodes %v, %d pods", cfg.Host, names, len(pods.Items))

		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("lab up --cluster after Ctrl-C: %v\nstderr:\n%s", err, errs.String())
		}
		if !strings.Contains(errs.String(), "is down") {
			t.Errorf("no down line after Ctrl-C:\n%s", errs.String())
		}
		t.Logf("after Ctrl-C: %s", lastLine(errs.String()))
		checkNothingLeft(t, inst)
	})

	t.Run("killed, then lab down", func(t *testing.T) {
		cmd, stdout, errs := start(t)
		readUp(t, stdout, errs)
		cmd.Process.Kill()
		cmd.Wait()
		code, out, stderr := runMain(t, "lab", "down", "--instance", inst)
		if code != 0 {
			t.Fatalf("lab down: exit %d: %s", code, stderr)
		}
		t.Logf("lab down: %s", strings.TrimSpace(out))
		checkNothingLeft(t, inst)
	})
}

// runMain runs netdiag as a process of its own (this test binary) and
// returns its exit code and output.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	var out, errs strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errs
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errs.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errs.String()
}

// checkNothingLeft: no namespace, process, runtime directory, state or
// cgroup of the instance remains.
func checkNothingLeft(t *testing.T, inst string) {
	t.Helper()
	prefix := lab.NamePrefix + inst + "-"
	// The runtimes' shims and pods end shortly after their containerd.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		names, _ := netns.ListNamed()
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				left = append(left, "namespace "+n)
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err == nil && strings.Contains(string(b), prefix) {
				left = append(left, filepath.Dir(p)+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		for _, pattern := range []string{filepath.Join(os.TempDir(), prefix+"*"), filepath.Join(lab.StateRoot, inst), "/sys/fs/cgroup/*/" + prefix + "*"} {
			m, _ := filepath.Glob(pattern)
			left = append(left, m...)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left behind: %s", strings.Join(left, "\n  "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
