package rulesets

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/lab/rulesets/internal/gen"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// wantRules is what each profile is meant to hold, per table ("nft" counts
// the nftables rules). A change to the generator that moves these numbers
// must be deliberate: update them with the regenerated dumps.
var wantRules = map[string]map[string]int{
	"kube-proxy-1000": {"filter": 99, "nat": 20722},
	"calico":          {"raw": 11, "mangle": 10, "nat": 44, "filter": 1306},
	"docker":          {"nat": 53, "filter": 41},
	"netpol":          {"nat": 35, "filter": 741},
	"big":             {"raw": 11, "mangle": 10, "nat": 18530, "filter": 2322},
	"kube-proxy-nft":  {"nft": 1922},
}

// TestCommittedDumpsAreCurrent fails when testdata differs from what the
// generator produces now: run `go generate ./lab/rulesets` and commit.
func TestCommittedDumpsAreCurrent(t *testing.T) {
	l, err := lab.New("x")
	if err != nil {
		t.Fatal(err)
	}
	files, _, err := gen.Generate(l)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Name] = true
		have, err := os.ReadFile(filepath.Join("testdata", f.Name))
		if err != nil {
			t.Errorf("%s: %v (run go generate ./lab/rulesets)", f.Name, err)
			continue
		}
		if !bytes.Equal(have, f.Data) {
			t.Errorf("testdata/%s is stale: %s (run go generate ./lab/rulesets)", f.Name, firstDiff(have, f.Data))
		}
		// The embedded copy is what Load uses; it is the same file unless
		// the test binary is older than the tree.
		if emb, err := readFile(f.Name); err != nil || !bytes.Equal(emb, have) {
			t.Errorf("embedded %s differs from testdata (err %v)", f.Name, err)
		}
	}
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("testdata/%s is not produced by the generator any more: remove it (go generate does)", e.Name())
		}
	}
	// Generating twice gives the same bytes: no map order or clock leaks in.
	again, _, err := gen.Generate(l)
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if !bytes.Equal(files[i].Data, again[i].Data) {
			t.Errorf("%s: two generations differ: %s", files[i].Name, firstDiff(files[i].Data, again[i].Data))
		}
	}
	// Any instance gives the same dumps: they hold no instance-specific name.
	other, err := lab.New("otherinst")
	if err != nil {
		t.Fatal(err)
	}
	third, _, err := gen.Generate(other)
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if !bytes.Equal(files[i].Data, third[i].Data) {
			t.Errorf("%s depends on the lab instance name: %s", files[i].Name, firstDiff(files[i].Data, third[i].Data))
		}
	}
}

func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: have %.200q, generated %.200q", i+1, x, y)
		}
	}
	return "same lines, different bytes"
}

func TestProfilesAPI(t *testing.T) {
	ps := Profiles()
	if len(ps) != len(wantRules) {
		t.Fatalf("%d profiles, want %d", len(ps), len(wantRules))
	}
	for _, p := range ps {
		if _, ok := wantRules[p.Name]; !ok {
			t.Errorf("profile %s has no expected rule counts in this test", p.Name)
		}
		if p.Node != "node-b" {
			t.Errorf("%s: node %q", p.Name, p.Node)
		}
		path, err := Path(p.Name)
		if err != nil {
			t.Errorf("Path(%s): %v", p.Name, err)
			continue
		}
		onDisk, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dump, err := Read(p.Name)
		if err != nil || !bytes.Equal(dump, onDisk) {
			t.Errorf("Read(%s) differs from %s (err %v)", p.Name, path, err)
		}
		sets, err := ReadIpsets(p.Name)
		if err != nil {
			t.Errorf("ReadIpsets(%s): %v", p.Name, err)
		}
		setPath, err := IpsetPath(p.Name)
		if err != nil {
			t.Errorf("IpsetPath(%s): %v", p.Name, err)
		}
		if (p.Ipsets == "") != (sets == nil) || (p.Ipsets == "") != (setPath == "") {
			t.Errorf("%s: ipset file %q, but ReadIpsets gave %d bytes and IpsetPath %q", p.Name, p.Ipsets, len(sets), setPath)
		}
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "kube-proxy-1000") {
		t.Errorf("Lookup of an unknown profile: %v, want an error listing the profiles", err)
	}
	if err := Load(context.Background(), nil, "nope"); err == nil {
		t.Error("Load of an unknown profile succeeded")
	}
	if err := Load(context.Background(), nil, "docker"); err == nil {
		t.Error("Load into no namespace succeeded")
	}
}

// countRules counts -A lines per table of iptables-save text, independently of
// the collector's parser.
func countRules(text string) map[string]int {
	out := map[string]int{}
	table := ""
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, "[") && strings.Contains(line, "] -A "), strings.HasPrefix(line, "-A "):
			out[table]++
		}
	}
	return out
}

// countNftRules counts the rule objects of nft JSON per table ("family name").
func countNftRules(t *testing.T, b []byte) map[string]int {
	t.Helper()
	var doc struct {
		Nftables []struct {
			Rule *struct{ Family, Table string }
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse nft JSON: %v", err)
	}
	out := map[string]int{}
	for _, o := range doc.Nftables {
		if o.Rule != nil {
			out[o.Rule.Family+" "+o.Rule.Table]++
		}
	}
	return out
}

// TestParse proves each committed dump parses with the collectors' parsers
// and holds what it is meant to.
func TestParse(t *testing.T) {
	for _, p := range Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			dump, err := Read(p.Name)
			if err != nil {
				t.Fatal(err)
			}
			if p.Format == "nft" {
				n, err := collectors.ParseNftJSON(dump)
				if err != nil {
					t.Fatalf("ParseNftJSON: %v", err)
				}
				parsed := 0
				for _, c := range n.Chains {
					parsed += len(c.Rules)
				}
				raw := countNftRules(t, dump)
				if total := raw["ip kube-proxy"] + raw["ip flannel-ipv4"]; parsed != total || parsed != wantRules[p.Name]["nft"] {
					t.Errorf("nft rules: parsed %d, in the JSON %d, want %d", parsed, total, wantRules[p.Name]["nft"])
				}
				for _, want := range []string{"ip kube-proxy", "ip flannel-ipv4"} {
					if !slices.Contains(n.Tables, want) {
						t.Errorf("tables %v lack %s", n.Tables, want)
					}
				}
				return
			}
			ipt, err := collectors.ParseIptablesSave(string(dump))
			if err != nil {
				t.Fatalf("ParseIptablesSave: %v", err)
			}
			parsed := map[string]int{}
			for name, tb := range ipt.Tables {
				for _, c := range tb.Chains {
					parsed[name] += len(c.Rules)
				}
			}
			lines := countRules(string(dump))
			want := wantRules[p.Name]
			for _, tb := range []string{"raw", "mangle", "nat", "filter"} {
				if parsed[tb] != lines[tb] || lines[tb] != want[tb] {
					t.Errorf("table %s: parsed %d rules, the dump has %d -A lines, want %d", tb, parsed[tb], lines[tb], want[tb])
				}
				if ipt.Tables[tb] == nil {
					t.Errorf("table %s missing", tb)
				}
			}
			total := 0
			for _, n := range lines {
				total += n
			}
			t.Logf("%s: %v, %d rules in all", p.Name, lines, total)
			if p.Name == "big" && total < 20000 {
				t.Errorf("big has %d rules, want at least 20,000", total)
			}
		})
	}
}

var (
	ipv4RE = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(/\d{1,2})?\b`)
	ipv6RE = regexp.MustCompile(`[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}`)
	ifRE   = regexp.MustCompile(`(?:^|\s)-[io] (\S+)`)
)

// TestDumpsAreSafeAndScoped checks what the dumps may touch: addresses only in
// the benchmarking range (plus loopback and multicast in kube-proxy's and
// flannel's exclusions), and interface matches only on the other owners' own
// interfaces, never the lab's (cni0, veth*, flannel.1, eth*).
func TestDumpsAreSafeAndScoped(t *testing.T) {
	bench := netip.MustParsePrefix("198.18.0.0/15")
	bench6 := netip.MustParsePrefix("2001:2::/48")
	allowed := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("224.0.0.0/4")}
	ownIfaces := regexp.MustCompile(`^(cali[0-9a-f]*\+?|docker0|br-[0-9a-f]{12}|kube-bridge|vxlan\.calico)$`)
	for _, p := range Profiles() {
		files := []string{p.File}
		if p.Ipsets != "" {
			files = append(files, p.Ipsets)
		}
		for _, f := range files {
			b, err := readFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ipv4RE.FindAllString(string(b), -1) {
				pfx, err := netip.ParsePrefix(m)
				if err != nil {
					a, err2 := netip.ParseAddr(m)
					if err2 != nil {
						t.Errorf("%s: %q is not an address", f, m)
						continue
					}
					pfx = netip.PrefixFrom(a, 32)
				}
				ok := bench.Contains(pfx.Addr()) && pfx.Bits() >= 15
				for _, a := range allowed {
					ok = ok || pfx == a || (a.Contains(pfx.Addr()) && pfx.Bits() >= a.Bits())
				}
				if !ok {
					t.Errorf("%s: address %s outside 198.18.0.0/15", f, m)
				}
			}
			for _, m := range ipv6RE.FindAllString(string(b), -1) {
				if a, err := netip.ParseAddr(m); err == nil && a.Is6() && !bench6.Contains(a) {
					t.Errorf("%s: address %s outside 2001:2::/48", f, m)
				}
			}
			seen := map[string]bool{}
			for _, m := range ifRE.FindAllStringSubmatch(string(b), -1) {
				seen[m[1]] = true
			}
			for name := range seen {
				if !ownIfaces.MatchString(name) {
					t.Errorf("%s: matches interface %q: the other owners must use their own interfaces", f, name)
				}
			}
		}
	}
}

// TestKubeProxyNames checks the chain names against kube-proxy's own: the
// lab's kubernetes and kube-dns Services get the KUBE-SVC names every
// cluster with those Services has.
func TestKubeProxyNames(t *testing.T) {
	dump, err := Read("kube-proxy-1000")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`-d 198.18.96.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y`,
		`-d 198.18.96.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU`,
		`-d 198.18.96.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4`,
		`-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment "default/kubernetes:https -> 198.18.0.11:6443" -j KUBE-SEP-`,
		`-m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-`,
		`-j REJECT --reject-with icmp-port-unreachable`,
		`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
		`-A KUBE-EXT-`, `-A KUBE-SVL-`, `-A KUBE-FW-`, `has no local endpoints`, `health check node port`,
		`loadbalancer IP`, `external IP`, `-j KUBE-FIREWALL`, `:KUBE-KUBELET-CANARY - [0:0]`,
		`-A FLANNEL-POSTRTG -s 198.19.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
	} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("kube-proxy-1000 lacks %q", want)
		}
	}
	// 1,000 Services and 5,000 endpoints, read back from the rules: each
	// Service appears by its cluster IP comment (or its REJECT when it has
	// no endpoints); each endpoint address by the DNATs of its SEP chains.
	svcRE := regexp.MustCompile(`--comment "([^ ":]+/[^ ":]+)(?::[^ "]+)? (?:cluster IP|has no endpoints)"`)
	dnatRE := regexp.MustCompile(`-A KUBE-SEP-\S+ -p \w+ -m comment --comment "?([^ ":]+/[^ ":]+)(?::[^ "]+)?"? -m \w+ -j DNAT --to-destination ([\d.]+):\d+`)
	svcs, eps := map[string]bool{}, map[string]bool{}
	for _, m := range svcRE.FindAllStringSubmatch(string(dump), -1) {
		svcs[m[1]] = true
	}
	for _, m := range dnatRE.FindAllStringSubmatch(string(dump), -1) {
		eps[m[1]+" "+m[2]] = true
	}
	if len(svcs) != 1000 || len(eps) != 5000 {
		t.Errorf("kube-proxy-1000 has %d Services and %d endpoints, want 1000 and 5000", len(svcs), len(eps))
	}
}

// TestOwnerFeatures spot-checks that each profile carries the shapes it
// promises.
func TestOwnerFeatures(t *testing.T) {
	want := map[string][]string{
		"calico": {
			"-A cali-FORWARD -i cali+ -m comment --comment \"cali:", "-j cali-from-wl-dispatch",
			"-A cali-FORWARD -o cali+", "-g cali-fw-cali", "-g cali-tw-cali", "\"Unknown interface\" -j DROP",
			":cali-pi-_", ":cali-po-_", ":cali-pri-kns.", "-m set --match-set cali40s:", "dst,dst",
			"-m mark --mark 0x10000/0x10000", "-m rpfilter --validmark --invert -j DROP", "-A cali-nat-outgoing",
			"-o vxlan.calico", "\"Drop if no profiles matched\" -j DROP", "-A FLANNEL-FWD",
		},
		"docker": {
			":FORWARD DROP [", "-A FORWARD -j DOCKER-USER", "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
			"-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP", "-j DNAT --to-destination 198.18.224.2:80",
			"-A FLANNEL-FWD -s 198.19.0.0/16", "-A FLANNEL-FWD -d 198.19.0.0/16",
		},
		"netpol": {
			"-j KUBE-ROUTER-FORWARD", "-j KUBE-ROUTER-INPUT", "-j KUBE-ROUTER-OUTPUT", "-m physdev --physdev-is-bridged",
			"-j KUBE-NWPLCY-", "-m set --match-set KUBE-SRC-", "-m mark ! --mark 0x10000/0x10000 -j DROP",
			"-i kube-bridge", "-o kube-bridge",
		},
		"big": {"-A cali-FORWARD", "-A DOCKER-ISOLATION-STAGE-2", "-A KUBE-SVC-", ":FORWARD DROP ["},
		"kube-proxy-nft": {
			`"name": "service-ips"`, `"map": "verdict"`, `"numgen"`, `"dnat"`, `"masquerade"`,
			`service-`, `endpoint-`, `"name": "flannel-ipv4"`, `"fib"`,
		},
	}
	for name, subs := range want {
		dump, err := Read(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			if !strings.Contains(string(dump), s) {
				t.Errorf("%s lacks %q", name, s)
			}
		}
	}
}

func TestNftLoadOrder(t *testing.T) {
	in := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "t"}}, {"map": {"name": "m"}}, {"chain": {"name": "c"}}, {"rule": {"chain": "c"}}, {"set": {"name": "s"}}]}`)
	out, err := nftLoadOrder(in)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Nftables []map[string]json.RawMessage }
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range doc.Nftables {
		for k := range o {
			kinds = append(kinds, k)
		}
	}
	if got := strings.Join(kinds, " "); got != "metainfo table chain map set rule" {
		t.Errorf("load order %q, want chains before the maps that name them", got)
	}
	if _, err := nftLoadOrder([]byte(`{"nftables": [{"flush": {"ruleset": null}}]}`)); err == nil {
		t.Error("a command in the listing was accepted")
	}
}

// normNft makes an nft listing comparable with what was loaded: table handles
// depend on what the namespace held before, nft 1.0.6 drops set and map
// comments when it reads JSON, and set elements come back in hash order.
func normNft(t *testing.T, b []byte) []string {
	t.Helper()
	var doc struct{ Nftables []map[string]map[string]any }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse nft JSON: %v", err)
	}
	var out []string
	for _, o := range doc.Nftables {
		for k, v := range o {
			switch k {
			case "metainfo":
				continue
			case "table":
				delete(v, "handle")
			case "set", "map":
				delete(v, "comment")
				if el, ok := v["elem"].([]any); ok {
					var s []string
					for _, e := range el {
						j, _ := json.Marshal(e)
						s = append(s, string(j))
					}
					sort.Strings(s)
					v["elem"] = s
				}
			}
			j, _ := json.Marshal(v)
			out = append(out, k+" "+string(j))
		}
	}
	return out
}

func withoutComments(text string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func sortedLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// TestLoadIntoLab loads every profile twice: into a scratch namespace, where
// what the kernel holds afterwards must read back exactly as the dump (so the
// dumps are in iptables-save's own text, counters included), and into lab
// node-b, where the same number of rules must be in place and every lab check
// must still pass (so the profiles keep a healthy lab healthy). lab.Clear
// heals node-b between profiles; the lab's cleanup removes everything, the
// scratch namespace included, also on failure.
func TestLoadIntoLab(t *testing.T) {
	l := labtest.Up(t, "trules")
	ctx := context.Background()
	for _, tool := range []string{"ipset", "iptables-save", "nft"} {
		if _, err := tools.Find(tool); err != nil {
			t.Fatal(err)
		}
	}
	save, _ := tools.Find("iptables-save")
	ipset, _ := tools.Find("ipset")
	nft, _ := tools.Find("nft")

	// Named with the instance's prefix, so lab down (and the cleanup of a
	// crashed run's leftovers) removes it with the lab.
	scratchName := l.Prefix + "scratch"
	scratch, err := netns.CreateNamed(scratchName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		scratch.Close()
		if err := netns.DeleteNamed(scratchName); err != nil {
			t.Errorf("remove %s: %v", scratchName, err)
		}
	})
	node, err := l.Node(gen.Node)
	if err != nil {
		t.Fatal(err)
	}
	nodeNS := labtest.OpenNS(t, node.NetnsPath)

	for _, p := range Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			defer cancel()
			dump, err := Read(p.Name)
			if err != nil {
				t.Fatal(err)
			}

			// Exact round trip in the scratch namespace.
			if err := Load(ctx, scratch, p.Name); err != nil {
				t.Fatalf("load into scratch namespace: %v", err)
			}
			if p.Format == "iptables" {
				got, err := scratch.Output(ctx, save, "-c")
				if err != nil {
					t.Fatal(err)
				}
				if g, w := withoutComments(string(got)), withoutComments(string(dump)); g != w {
					t.Errorf("iptables-save -c after loading differs from the dump: %s", firstDiff([]byte(g), []byte(w)))
				}
			} else {
				got, err := scratch.Output(ctx, nft, "-j", "list", "ruleset")
				if err != nil {
					t.Fatal(err)
				}
				g, w := normNft(t, got), normNft(t, dump)
				if !slices.Equal(g, w) {
					for i := range min(len(g), len(w)) {
						if g[i] != w[i] {
							t.Errorf("nft -j list ruleset after loading differs at object %d:\n got %.300s\nwant %.300s", i, g[i], w[i])
							break
						}
					}
					t.Errorf("nft listing after loading: %d objects, the dump %d", len(g), len(w))
				}
			}
			if p.Ipsets != "" {
				got, err := scratch.Output(ctx, ipset, "save")
				if err != nil {
					t.Fatal(err)
				}
				sets, _ := ReadIpsets(p.Name)
				w := sortedLines(sets)
				names := map[string]bool{}
				for _, line := range w {
					names[strings.Fields(line)[1]] = true
				}
				// Sets of earlier profiles stay (Load replaces only the
				// profile's own names); compare the profile's.
				var g []string
				for _, line := range sortedLines(got) {
					if f := strings.Fields(line); len(f) > 1 && names[f[1]] {
						g = append(g, line)
					}
				}
				if !slices.Equal(g, w) {
					t.Errorf("ipset save after loading: %d lines of the profile's sets, its file has %d", len(g), len(w))
				}
			}

			// The lab node.
			t.Cleanup(func() {
				if _, err := lab.Clear(context.Background(), l.Instance, nil); err != nil {
					t.Errorf("clear: %v", err)
				}
			})
			start := time.Now()
			if err := Load(ctx, nodeNS, p.Name); err != nil {
				t.Fatalf("load into %s: %v", node.Name, err)
			}
			t.Logf("loaded %s into %s in %v", p.Name, node.Name, time.Since(start).Round(time.Millisecond))
			if p.Format == "iptables" {
				got, err := nodeNS.Output(ctx, save, "-c")
				if err != nil {
					t.Fatal(err)
				}
				if g, w := countRules(string(got)), countRules(string(dump)); !mapsEqual(g, w) {
					t.Errorf("rules per table on %s after loading: %v, the dump has %v", node.Name, g, w)
				}
			} else {
				got, err := nodeNS.Output(ctx, nft, "-j", "list", "ruleset")
				if err != nil {
					t.Fatal(err)
				}
				g, w := countNftRules(t, got), countNftRules(t, dump)
				for table, n := range w {
					if g[table] != n {
						t.Errorf("%s: %d rules on %s after loading, the dump has %d", table, g[table], node.Name, n)
					}
				}
				if g["ip filter"]+g["ip nat"] != 0 {
					t.Errorf("the lab's iptables rules survived loading the nft profile: %v", g)
				}
			}
			res, err := lab.RunChecks(ctx, l)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Status != "pass" {
					t.Errorf("with %s loaded on %s, check %s is %s: %s", p.Name, node.Name, r.Name, r.Status, r.Detail)
				}
			}
		})
	}

	t.Run("healthy-after-clear", func(t *testing.T) {
		res, err := lab.RunChecks(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Status != "pass" {
				t.Errorf("after clear, check %s is %s: %s", r.Name, r.Status, r.Detail)
			}
		}
	})
}

func mapsEqual(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
