package tools

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	goEnvOnce sync.Once
	goEnvDirs []string
)

// FindGoInstalled finds a program that scripts/install-deps builds with
// `go install`: in PATH, else where `go env` says go install puts programs
// (GOBIN or GOPATH may be set with `go env -w`, which the environment does
// not show). The error is Find's when it is nowhere.
func FindGoInstalled(name string) (string, error) {
	p, err := Find(name)
	if err == nil {
		return p, nil
	}
	goEnvOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "env", "GOBIN", "GOPATH").Output()
		if err != nil {
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) > 0 && lines[0] != "" {
			goEnvDirs = append(goEnvDirs, lines[0])
		}
		if len(lines) > 1 {
			for _, d := range filepath.SplitList(lines[1]) {
				goEnvDirs = append(goEnvDirs, filepath.Join(d, "bin"))
			}
		}
	})
	for _, d := range goEnvDirs {
		path := filepath.Join(d, name)
		if st, serr := os.Stat(path); serr == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", err
}
