package cluster

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/kubelet"
	"github.com/netdiag/netdiag/lab/labtest"
)

// StartForTest starts the control plane for the test's lab and stops it
// when the test ends (before the lab goes: call it after labtest.Up). It
// needs root; without root or the programs it skips, or fails when CI is
// set. When the test fails, the end of every log is written to the test
// log before the files are removed.
func StartForTest(t testing.TB, l *lab.Lab, opts Options) *ControlPlane {
	t.Helper()
	labtest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, l, opts)
	if err != nil {
		var m *MissingError
		if errors.As(err, &m) && os.Getenv("CI") == "" {
			t.Skipf("cluster: %v", err)
		}
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			cp.DumpLogs(t.Logf)
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("cluster: %v", err)
		}
	})
	return cp
}

// JoinNodesForTest joins the lab's nodes to the control plane for the test
// (cp from StartForTest) and stops their kubelets and runtimes when the
// test ends, before the control plane goes. Without the kubelet, containerd
// or runc it skips, or fails when CI is set. As kubelet.StartForTest does,
// it checks when the test ends that the kubelets changed none of the
// machine's sysctls they care about.
func JoinNodesForTest(t testing.TB, cp *ControlPlane, opts NodeOptions) *Nodes {
	t.Helper()
	labtest.RequireRoot(t)
	var absent []string
	for _, name := range []string{"kubelet", "containerd", "runc"} {
		if _, err := tools.FindGoInstalled(name); err != nil {
			absent = append(absent, name)
		}
	}
	if len(absent) > 0 {
		err := &MissingError{Names: absent}
		if os.Getenv("CI") != "" {
			t.Fatalf("cluster nodes: %v (CI is set, so this is not skipped)", err)
		}
		t.Skipf("cluster nodes: %v", err)
	}
	kubelet.CheckSysctls(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns, err := cp.JoinNodes(ctx, opts)
	if err != nil {
		t.Fatalf("cluster nodes: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ns.DumpLogs(t.Logf)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := ns.Stop(ctx); err != nil {
			t.Errorf("cluster nodes: %v", err)
		}
	})
	return ns
}
