package kubelet

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab/labtest"
)

// StartForTest runs a kubelet for the test and stops it when the test
// ends (before the node's containerd, so call it after that runtime's
// StartForTest). Without the kubelet binary it fails when CI is set and
// skips otherwise.
func StartForTest(t testing.TB, o Options) *Kubelet {
	t.Helper()
	labtest.RequireRoot(t)
	if _, err := tools.FindGoInstalled("kubelet"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	CheckSysctls(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubelet log (%s):\n%s", k.Log, k.Tail(40))
		}
		if err := k.Stop(); err != nil {
			t.Errorf("stop kubelet: %v", err)
		}
	})
	return k
}

// CheckSysctls reads the machine's sysctls a kubelet cares about now and
// checks, when the test ends, that none changed: the machine's own
// settings are not the lab's to change. Call it before starting kubelets,
// so that its check runs after their cleanup has stopped them.
func CheckSysctls(t testing.TB) {
	t.Helper()
	before, err := Sysctls()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := Sysctls()
		if err != nil {
			t.Error(err)
		}
		for name, v := range before {
			if after[name] != v {
				t.Errorf("a kubelet changed the machine's %s from %s to %s", name, v, after[name])
			}
		}
	})
}
