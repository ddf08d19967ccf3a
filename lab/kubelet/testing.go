package kubelet

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab/labtest"
)

// StartForTest runs a kubelet for the test and stops it when the test
// ends (before the node's containerd, so call it after that runtime's
// StartForTest). Without the kubelet binary it fails when CI is set and
// skips otherwise.
func StartForTest(t testing.TB, o Options) *Kubelet {
	t.Helper()
	labtest.RequireRoot(t)
	if _, err := find("kubelet"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	before, err := Sysctls()
	if err != nil {
		t.Fatal(err)
	}
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
		// The machine's own sysctls are not the lab's to change.
		after, err := Sysctls()
		if err != nil {
			t.Error(err)
		}
		for k, v := range before {
			if after[k] != v {
				t.Errorf("the kubelet changed the machine's %s from %s to %s", k, v, after[k])
			}
		}
	})
	return k
}
