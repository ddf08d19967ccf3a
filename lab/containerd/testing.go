package containerd

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab/labtest"
)

// StartForTest starts a runtime in the node namespace at nodeNetnsPath for
// the test (opts.NetnsPath is set from it) and stops it when the test ends,
// also when it fails: every pod, process, mount and cgroup goes with it.
// Runtimes that killed test binaries left behind are removed first. It
// needs root (it skips without, unless CI is set) and the go command (the
// pause image is built from source), and should be called after the lab is
// up, so that its cleanup runs before the lab's.
func StartForTest(t testing.TB, nodeNetnsPath string, opts Options) *Runtime {
	t.Helper()
	labtest.RequireRoot(t)
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := CleanStale(ctx, opts.Log); err != nil {
		t.Fatalf("remove runtimes left by earlier test runs: %v", err)
	}
	opts.NetnsPath = nodeNetnsPath
	r, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start containerd in %s: %v", nodeNetnsPath, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (%s): %s", r.Dir, r.LogTail(20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	t.Logf("containerd in %s: %s snapshotter, pause image built in %v, containerd ready in %v, pause imported in %v",
		nodeNetnsPath, r.Snapshotter, r.Timings.BuildPause.Round(time.Millisecond), r.Timings.Containerd.Round(time.Millisecond), r.Timings.ImportPause.Round(time.Millisecond))
	return r
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
