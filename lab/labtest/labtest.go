// Package labtest gives tests in any package a lab of their own: a unique
// instance that is built for the test and removed when it ends, also when it
// fails. Tests that need a lab need root; they skip on a laptop without it, but
// never when CI is set, because CI is where they must run.
package labtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab"
)

// Main must be called from TestMain of a package that brings a lab up: the lab
// starts its servers by re-executing the running binary, which for a test is
// the test binary.
func Main(m *testing.M) {
	lab.MaybeRunHelper()
	os.Exit(m.Run())
}

// RequireRoot skips the test when it does not run as root, unless CI is set, in
// which case it fails: root-only tests must never be skipped silently in CI.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root and CI is set: run the tests as root")
	}
	t.Skip("needs root (network namespaces); CI runs it as root")
}

// Instance returns an instance name unique to this process and prefix, so that
// test packages running in parallel never share a lab.
func Instance(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, os.Getpid()%1000000)
}

// Up builds a lab for the test and removes it in t.Cleanup. prefix should be
// short and name the package (letters and digits).
func Up(t testing.TB, prefix string) *lab.Lab {
	t.Helper()
	return UpShape(t, prefix, lab.ShapeEmulated)
}

// UpShape is Up for a lab of the given shape.
func UpShape(t testing.TB, prefix, shape string) *lab.Lab {
	t.Helper()
	RequireRoot(t)
	inst := Instance(prefix)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A test binary killed by its timeout runs no cleanup.
	removeStale(t, prefix)
	l, err := lab.UpShape(ctx, inst, shape, log)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := lab.Down(ctx, inst, log); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// OpenNS opens a namespace for the test and closes it when the test ends.
func OpenNS(t testing.TB, path string) *netns.NS {
	t.Helper()
	n, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
