package collectors

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ResolvConf is a pod's resolver configuration, as glibc reads it.
type ResolvConf struct {
	Path        string   `json:"path"`
	Nameservers []string `json:"nameservers"`
	Search      []string `json:"search"`
	Ndots       int      `json:"ndots"`
	TimeoutSec  int      `json:"timeout_sec"`
	Attempts    int      `json:"attempts"`
	Options     []string `json:"options,omitempty"`
	// Problems are things glibc silently ignores or works around.
	Problems []string `json:"problems,omitempty"`
}

func init() {
	register(spec{name: "resolv", help: "the pod's resolv.conf: nameservers, search domains, ndots, timeout, attempts",
		scopes: []Scope{ScopeSource}, timeout: time.Second}, collectResolv)
}

// DefaultResolvConf is the resolv.conf a process in the namespace sees when
// started with `ip netns exec`: /etc/netns/NAME/resolv.conf for a namespace
// at /run/netns/NAME when that file exists, else /etc/resolv.conf.
func DefaultResolvConf(nsPath string) string {
	if filepath.Dir(nsPath) == "/run/netns" {
		p := filepath.Join("/etc/netns", filepath.Base(nsPath), "resolv.conf")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/etc/resolv.conf"
}

func collectResolv(ctx context.Context, in Input) (*ResolvConf, error) {
	path := in.ResolvConf
	if path == "" {
		path = DefaultResolvConf(in.NS.Path())
	}
	rc, err := ReadResolvConf(path)
	if err != nil {
		return nil, err
	}
	return rc, ctx.Err()
}

// MaxResolvConf bounds a resolv.conf: glibc reads at most three nameservers
// and six search domains, so anything near this size is not one.
const MaxResolvConf = 256 << 10

// ReadResolvConf reads and parses a resolv.conf: a regular file of at most
// MaxResolvConf bytes, read within a second.
func ReadResolvConf(path string) (*ResolvConf, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b, err := ReadFileLimit(ctx, path, MaxResolvConf)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	rc := ParseResolvConf(string(b))
	rc.Path = path
	return rc, nil
}

// GlibcFallbackNameserver is whom glibc asks when resolv.conf names no
// nameserver.
const GlibcFallbackNameserver = "127.0.0.1"

// Servers are the nameservers a resolver using this file asks: its own, or
// glibc's fallback when it names none.
func (rc *ResolvConf) Servers() []string {
	if len(rc.Nameservers) == 0 {
		return []string{GlibcFallbackNameserver}
	}
	return rc.Nameservers
}

// ParseResolvConf parses resolv.conf text with glibc's defaults and limits
// (ndots 1, timeout 5, attempts 2, three nameservers, last search/domain wins).
func ParseResolvConf(text string) *ResolvConf {
	rc := &ResolvConf{Ndots: 1, TimeoutSec: 5, Attempts: 2}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				continue
			}
			if _, err := netip.ParseAddr(f[1]); err != nil {
				rc.Problems = append(rc.Problems, fmt.Sprintf("nameserver %q is not an IP address: ignored", f[1]))
				continue
			}
			if len(rc.Nameservers) == 3 {
				rc.Problems = append(rc.Problems, fmt.Sprintf("nameserver %s ignored: glibc uses only the first three", f[1]))
				continue
			}
			rc.Nameservers = append(rc.Nameservers, f[1])
		case "search":
			rc.Search = append([]string(nil), f[1:]...)
		case "domain":
			if len(f) > 1 {
				rc.Search = []string{f[1]}
			}
		case "options":
			for _, o := range f[1:] {
				rc.Options = append(rc.Options, o)
				k, v, _ := strings.Cut(o, ":")
				n, err := strconv.Atoi(v)
				if err != nil && (k == "ndots" || k == "timeout" || k == "attempts") {
					rc.Problems = append(rc.Problems, fmt.Sprintf("option %q has no number: glibc ignores it", o))
					continue
				}
				switch k {
				case "ndots":
					rc.Ndots = max(0, min(n, 15))
				case "timeout":
					rc.TimeoutSec = max(1, min(n, 30))
				case "attempts":
					rc.Attempts = max(1, min(n, 5))
				}
			}
		}
	}
	if len(rc.Nameservers) == 0 {
		rc.Problems = append(rc.Problems, "no nameserver: glibc falls back to 127.0.0.1")
	}
	return rc
}

// Candidates lists the fully qualified names glibc tries for name, in order:
// a name with at least ndots dots (or a trailing dot) is tried as is first,
// then with each search domain; otherwise the search domains come first.
func (rc *ResolvConf) Candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var withSearch []string
	for _, s := range rc.Search {
		withSearch = append(withSearch, name+"."+strings.TrimSuffix(s, ".")+".")
	}
	asIs := name + "."
	if strings.Count(name, ".") >= rc.Ndots {
		return append([]string{asIs}, withSearch...)
	}
	return append(withSearch, asIs)
}
