package elfinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A static Go build passes; the same program built with cgo's loader and a
// system binary linked against libc do not, and the error names them.
func TestStatic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	// os/user with cgo links libc; without cgo it is pure Go.
	prog := "package main\nimport (\"fmt\"; \"os/user\")\nfunc main() { u, _ := user.Current(); fmt.Println(u) }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(cgo, out string) string {
		t.Helper()
		bin := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-o", bin, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build (CGO_ENABLED=%s): %v\n%s", cgo, err, b)
		}
		return bin
	}
	if err := Static(build("0", "static")); err != nil {
		t.Errorf("CGO_ENABLED=0 build: %v", err)
	}
	if _, err := exec.LookPath("gcc"); err == nil {
		err := Static(build("1", "dynamic"))
		if err == nil || !strings.Contains(err.Error(), "libc") {
			t.Errorf("cgo build: %v, want an error naming libc", err)
		}
	}
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	if err := Static(ls); err == nil || !strings.Contains(err.Error(), "loader") {
		t.Errorf("%s: %v, want an error naming the loader", ls, err)
	}
	if err := Static(src); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("a Go source file: %v", err)
	}
}
