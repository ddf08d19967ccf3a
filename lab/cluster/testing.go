package cluster

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab"
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
	if _, err := findPrograms(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cluster: %v (CI is set, so this is not skipped)", err)
		}
		t.Skipf("cluster: %v", err)
	}
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
