// Package tools finds the external programs netdiag relies on and, when one is
// missing, says which package or command installs it. Every caller goes through
// Find so that a missing tool is always reported the same way: by name, with the
// command that fixes it.
package tools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// Install maps each external program to the command that installs it on the
// Debian machines netdiag is developed and tested on.
var Install = map[string]string{
	"ip":                "apt-get install -y iproute2",
	"iptables":          "apt-get install -y iptables",
	"iptables-save":     "apt-get install -y iptables",
	"iptables-restore":  "apt-get install -y iptables",
	"ip6tables-save":    "apt-get install -y iptables",
	"ip6tables-restore": "apt-get install -y iptables",
	"ipset":             "apt-get install -y ipset",
	"nft":               "apt-get install -y nftables",
	"ipvsadm":           "apt-get install -y ipvsadm",
	"conntrack":         "apt-get install -y conntrack",
	"tcpdump":           "apt-get install -y tcpdump",
	"dig":               "apt-get install -y dnsutils",
	"ping":              "apt-get install -y iputils-ping",
	"coredns":           "go install github.com/coredns/coredns@v1.12.4",
}

// MissingError reports a program that is not installed.
type MissingError struct {
	Name    string
	Install string
}

func (e *MissingError) Error() string {
	if e.Install == "" {
		return fmt.Sprintf("%s not found in PATH", e.Name)
	}
	return fmt.Sprintf("%s not found in PATH; install it with: %s", e.Name, e.Install)
}

// Find returns the absolute path of the named program. Programs installed with
// `go install` are also looked for in $GOBIN and $GOPATH/bin (default ~/go/bin),
// because sudo and CI shells often do not have those in PATH.
func Find(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &MissingError{Name: name, Install: Install[name]}
}

// Require checks several programs at once and reports every missing one, so
// that a fresh machine learns everything it needs in one run.
func Require(names ...string) error {
	var missing []string
	for _, n := range names {
		if _, err := Find(n); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	msg := "missing tools:"
	for _, m := range missing {
		msg += "\n  " + m
	}
	return fmt.Errorf("%s", msg)
}

func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		for _, p := range filepath.SplitList(d) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}
