package tools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingToolNamedWithInstallCommand: with an empty PATH and no Go bin
// directory, every missing tool is reported by name with its install command.
func TestMissingToolNamedWithInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOBIN", "")
	t.Setenv("GOPATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	err := Require("coredns", "tcpdump", "iptables-restore")
	if err == nil {
		t.Fatal("Require found tools in an empty PATH")
	}
	for _, want := range []string{
		"coredns not found in PATH; install it with: go install github.com/coredns/coredns@v1.12.4",
		"tcpdump not found in PATH; install it with: apt-get install -y tcpdump",
		"iptables-restore not found in PATH; install it with: apt-get install -y iptables",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestFindInGoBin: a program installed with go install is found in $GOPATH/bin
// even when that is not on PATH (sudo, CI shells).
func TestFindInGoBin(t *testing.T) {
	gopath := t.TempDir()
	bin := filepath.Join(gopath, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "coredns"), []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOBIN", "")
	t.Setenv("GOPATH", gopath)
	p, err := Find("coredns")
	if err != nil || p != filepath.Join(bin, "coredns") {
		t.Fatalf("Find(coredns) = %q, %v; want %s", p, err, filepath.Join(bin, "coredns"))
	}
}
