package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/netdiag/netdiag/internal/elfinfo"
)

// The binaries `make build` makes (as the image and a node copy them) are
// static: checked on what the Makefile's recipe produced, not on its flags.
func TestReleaseBinariesAreStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	mk, err := exec.LookPath("make")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("make is not installed")
		}
		t.Skip("no make")
	}
	bin := filepath.Join(t.TempDir(), "netdiag")
	cmd := exec.Command(mk, "-s", "-C", "../..", "build", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	for _, b := range []string{bin, bin + "-agent"} {
		if err := elfinfo.Static(b); err != nil {
			t.Error(err)
		}
	}
}
