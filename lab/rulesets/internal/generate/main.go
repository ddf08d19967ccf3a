// Command generate writes the rule-set dumps of lab/rulesets into its
// testdata directory. Run it with `go generate ./lab/rulesets`.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/rulesets/internal/gen"
)

func main() {
	if err := run("testdata"); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	// Any instance name gives the same addresses; "x" is the documented one.
	l, err := lab.New("x")
	if err != nil {
		return err
	}
	files, stats, err := gen.Generate(l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, f := range files {
		keep[f.Name] = true
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
	}
	// A profile that was renamed or dropped must not leave its old dump
	// behind, or the staleness test would miss it.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if !keep[n] && (strings.HasSuffix(n, ".iptables") || strings.HasSuffix(n, ".ipset") || strings.HasSuffix(n, ".nft.json")) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	for _, p := range gen.Profiles() {
		st := stats[p.Name]
		fmt.Printf("%-16s %v services=%d endpoints=%d ipsets=%d members=%d\n", p.Name, st.Rules, st.Services, st.Endpoints, st.Ipsets, st.Members)
	}
	return nil
}
