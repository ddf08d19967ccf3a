package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func versionString() string {
	rev, dirty := "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	v := fmt.Sprintf("netdiag %s (%s, %s/%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += ", commit " + rev
		if dirty {
			v += "+changes"
		}
	}
	return v + ")"
}

func runVersion(c *cli, args []string) int {
	fs := c.newFlags("version", "Usage: netdiag version\n\nPrints the version, Go version, platform and commit.\n")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	fmt.Fprintln(c.stdout, versionString())
	return exitOK
}
