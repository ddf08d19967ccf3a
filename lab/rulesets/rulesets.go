// Package rulesets holds anonymised node firewalls shaped like real ones, for
// proving the iptables and nftables collectors and their tracers on rule sets
// of realistic size and variety, and loads them into lab namespaces.
//
// Each profile is a dump in the exact text of `iptables-save -c` (or the JSON
// of `nft -j list ruleset`) of a node that runs kube-proxy, Calico, Docker or
// a NetworkPolicy controller, with ipset files where its rules need sets. The
// dumps are generated (see internal/gen, `go generate ./lab/rulesets`) from
// the lab's exported description, and every one also carries the lab's own
// rules for the node it is made for (kube-proxy's chains for the lab's
// Services, flannel's masquerade and forward rules), so that a dump can
// replace that node's tables and the lab keeps working. The other owners'
// rules are scoped to their own interfaces (cali*, docker0, br-*,
// kube-bridge, vxlan.calico), never the lab's veth*/cni0/flannel.1: some of
// them DROP what they match, so a tracer that does not evaluate interfaces
// gets the lab's healthy traffic wrong, and one that does gets it right.
//
// All addresses are in 198.18.0.0/15; the dumps hold no IPv6 rules (the lab
// is IPv4 only).
package rulesets

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab/rulesets/internal/gen"
)

//go:generate go run ./internal/generate

// The dumps are embedded so that Load works from any test binary, wherever
// the source tree is.
//
//go:embed testdata/*.iptables testdata/*.ipset testdata/*.nft.json
var dumps embed.FS

// Profile describes one dump.
type Profile struct {
	// Name is what Load, Path and Read take: "kube-proxy-1000", "calico",
	// "docker", "netpol", "big", "kube-proxy-nft".
	Name string
	// Node is the lab node the dump is made for (its PodCIDR, InternalIP
	// and local Service endpoints are in it).
	Node string
	// Format is "iptables" (iptables-save -c text) or "nft" (nft -j list
	// ruleset JSON).
	Format string
	// File is the dump's file name under testdata; Ipsets the `ipset save`
	// file it needs, or "".
	File, Ipsets string
	Summary      string
}

// Profiles lists every profile in a stable order.
func Profiles() []Profile {
	var out []Profile
	for _, p := range gen.Profiles() {
		out = append(out, Profile{Name: p.Name, Node: p.Node, Format: p.Format, File: p.File, Ipsets: p.Ipsets, Summary: p.Summary})
	}
	return out
}

// Lookup returns the named profile.
func Lookup(name string) (Profile, error) {
	var names []string
	for _, p := range Profiles() {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Profile{}, fmt.Errorf("no rule-set profile %q (profiles: %s)", name, strings.Join(names, ", "))
}

// Read returns a profile's dump as committed.
func Read(profile string) ([]byte, error) {
	p, err := Lookup(profile)
	if err != nil {
		return nil, err
	}
	return readFile(p.File)
}

// ReadIpsets returns the `ipset save` text a profile needs, or nil when it
// needs none.
func ReadIpsets(profile string) ([]byte, error) {
	p, err := Lookup(profile)
	if err != nil {
		return nil, err
	}
	if p.Ipsets == "" {
		return nil, nil
	}
	return readFile(p.Ipsets)
}

func readFile(name string) ([]byte, error) {
	b, err := dumps.ReadFile("testdata/" + name)
	if err != nil {
		return nil, fmt.Errorf("read rule-set dump %s: %w", name, err)
	}
	return b, nil
}

// Path returns the path of a profile's dump in the source tree, for tools and
// benchmarks that want the raw file. It needs the source tree where this
// package was built from; Read works without it.
func Path(profile string) (string, error) {
	p, err := Lookup(profile)
	if err != nil {
		return "", err
	}
	return sourcePath(p.File)
}

// IpsetPath is Path for the profile's ipset file; "" when it needs none.
func IpsetPath(profile string) (string, error) {
	p, err := Lookup(profile)
	if err != nil || p.Ipsets == "" {
		return "", err
	}
	return sourcePath(p.Ipsets)
}

func sourcePath(name string) (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("rulesets: cannot locate the package source")
	}
	path := filepath.Join(filepath.Dir(self), "testdata", name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("rule-set dump %s is not on disk (built with -trimpath or away from the source tree? use rulesets.Read): %w", name, err)
	}
	return path, nil
}

// Load makes the IPv4 firewall of the namespace exactly the profile: it
// deletes every nftables table of the ip family (iptables-nft's filter, nat,
// mangle and raw, and native ones such as a loaded kube-proxy-nft profile),
// recreates the profile's ipsets, then restores the dump with its counters
// (iptables-restore --counters) or loads the nft JSON. Tables of other
// families (ip6, inet, bridge) are left alone, so a dual-stack lab node keeps
// its IPv6 rules; ipsets of other names too. Everything runs inside ns with
// argument lists (no shell). To heal a lab node afterwards, use lab.Clear,
// which re-applies the lab's own rules.
func Load(ctx context.Context, ns *netns.NS, profile string) error {
	p, err := Lookup(profile)
	if err != nil {
		return err
	}
	if ns == nil {
		return fmt.Errorf("load %s: no namespace", profile)
	}
	dump, err := readFile(p.File)
	if err != nil {
		return err
	}
	var sets []byte
	if p.Ipsets != "" {
		if sets, err = readFile(p.Ipsets); err != nil {
			return err
		}
	}
	// Every tool is found before anything changes, so a missing one cannot
	// leave the namespace with its IPv4 tables deleted.
	need := []string{"nft"}
	if p.Format == "iptables" {
		need = append(need, "iptables-restore")
	}
	if sets != nil {
		need = append(need, "ipset")
	}
	if err := tools.Require(need...); err != nil {
		return fmt.Errorf("load %s: %w", profile, err)
	}
	nft, _ := tools.Find("nft")
	if err := deleteIPTables(ctx, ns, nft); err != nil {
		return fmt.Errorf("load %s: %w", profile, err)
	}
	if sets != nil {
		if err := loadIpsets(ctx, ns, sets); err != nil {
			return fmt.Errorf("load %s: %w", profile, err)
		}
	}
	switch p.Format {
	case "iptables":
		restore, _ := tools.Find("iptables-restore")
		if _, err := ns.Run(ctx, dump, restore, "--counters", "-w", "5"); err != nil {
			return fmt.Errorf("load %s: %w", profile, err)
		}
	case "nft":
		in, err := nftLoadOrder(dump)
		if err != nil {
			return fmt.Errorf("load %s: %w", profile, err)
		}
		if _, err := ns.Run(ctx, in, nft, "-j", "-f", "-"); err != nil {
			return fmt.Errorf("load %s: %w", profile, err)
		}
	default:
		return fmt.Errorf("load %s: unknown format %q", profile, p.Format)
	}
	return nil
}

// deleteIPTables deletes every table of the ip family in one transaction.
// iptables-restore alone would only flush the tables its input names, and
// nft flush ruleset would take the IPv6 rules with it.
func deleteIPTables(ctx context.Context, ns *netns.NS, nft string) error {
	out, err := ns.Output(ctx, nft, "-j", "list", "tables", "ip")
	if err != nil {
		return fmt.Errorf("list ip tables: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Table *struct{ Family, Name string }
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return fmt.Errorf("parse nft table list: %w", err)
	}
	type table struct {
		Family string `json:"family"`
		Name   string `json:"name"`
	}
	type del struct {
		Delete struct {
			Table table `json:"table"`
		} `json:"delete"`
	}
	var cmds []del
	for _, o := range doc.Nftables {
		if o.Table != nil && o.Table.Family == "ip" {
			var d del
			d.Delete.Table = table{Family: "ip", Name: o.Table.Name}
			cmds = append(cmds, d)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	in, err := json.Marshal(map[string]any{"nftables": cmds})
	if err != nil {
		return err
	}
	if _, err := ns.Run(ctx, in, nft, "-j", "-f", "-"); err != nil {
		return fmt.Errorf("delete ip tables: %w", err)
	}
	return nil
}

// loadIpsets replaces the sets named in an `ipset save` text. A set cannot be
// created over one of the same name, and restoring into a kept set would
// keep stale members, so the profile's sets are destroyed first; nothing
// references them once the ruleset is flushed.
func loadIpsets(ctx context.Context, ns *netns.NS, save []byte) error {
	ipset, err := tools.Find("ipset")
	if err != nil {
		return err
	}
	out, err := ns.Output(ctx, ipset, "list", "-n")
	if err != nil {
		return fmt.Errorf("list ipsets: %w", err)
	}
	have := strings.Fields(string(out))
	for _, line := range strings.Split(string(save), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "create" && slices.Contains(have, f[1]) {
			if _, err := ns.Output(ctx, ipset, "destroy", f[1]); err != nil {
				return fmt.Errorf("replace ipset %s: %w", f[1], err)
			}
		}
	}
	if _, err := ns.Run(ctx, save, ipset, "restore"); err != nil {
		return fmt.Errorf("restore ipsets: %w", err)
	}
	return nil
}

// nftLoadOrder turns `nft -j list ruleset` output into input nft accepts.
// The listing puts a table's sets before its chains, but a verdict map's
// elements name chains (goto service-...), which must exist first; so:
// tables, then chains, then sets and maps, then rules.
func nftLoadOrder(listing []byte) ([]byte, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &doc); err != nil {
		return nil, fmt.Errorf("parse nft JSON: %w", err)
	}
	rank := map[string]int{"metainfo": 0, "table": 1, "chain": 2, "set": 3, "map": 3, "rule": 4}
	kind := func(o map[string]json.RawMessage) string {
		for k := range o {
			return k
		}
		return ""
	}
	for _, o := range doc.Nftables {
		if _, ok := rank[kind(o)]; !ok || len(o) != 1 {
			return nil, fmt.Errorf("nft JSON object %v: only tables, chains, sets, maps and rules can be loaded", slices.Sorted(maps.Keys(o)))
		}
	}
	slices.SortStableFunc(doc.Nftables, func(a, b map[string]json.RawMessage) int {
		return rank[kind(a)] - rank[kind(b)]
	})
	return json.Marshal(doc)
}
