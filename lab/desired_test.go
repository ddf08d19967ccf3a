package lab

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// labRange is the only address space the lab may use (RFC 2544 benchmarking).
var labRange = netip.MustParsePrefix("198.18.0.0/15")

var ipLike = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(/\d{1,2})?\b`)

// TestEveryAddressInLabRange renders the desired state of the healthy lab and
// of every fault and proves that every address anywhere in it (links, routes,
// neighbours, FDB, firewall rules, resolv.conf, process arguments) lies in
// 198.18.0.0/15 and every namespace carries the instance's prefix.
func TestEveryAddressInLabRange(t *testing.T) {
	cases := append([]string{""}, FaultNames()...)
	for _, fault := range cases {
		l, err := New("unit")
		if err != nil {
			t.Fatal(err)
		}
		var faults []string
		if fault != "" {
			faults = []string{fault}
		}
		d, err := desiredFor(l, faults)
		if err != nil {
			t.Fatalf("%s: %v", fault, err)
		}
		var texts []string
		for name, c := range d.NS {
			if !strings.HasPrefix(name, l.Prefix) {
				t.Errorf("%s: namespace %q lacks prefix %q", fault, name, l.Prefix)
			}
			for _, lc := range c.Links {
				texts = append(texts, lc.Addrs...)
				if lc.PeerNS != "" && !strings.HasPrefix(lc.PeerNS, l.Prefix) {
					t.Errorf("%s: veth peer namespace %q lacks prefix", fault, lc.PeerNS)
				}
				if lc.VXLAN != nil {
					texts = append(texts, lc.VXLAN.Local)
				}
			}
			for _, r := range c.Routes {
				texts = append(texts, r.Dst, r.Via)
				for _, nh := range r.Nexthops {
					texts = append(texts, nh.Via)
				}
			}
			for _, n := range c.Neighs {
				texts = append(texts, n.IP)
			}
			for _, f := range c.FDB {
				texts = append(texts, f.Dst)
			}
			texts = append(texts, d.renderIptables(c), c.Filter.Nft)
		}
		for path, content := range d.Resolv {
			if !strings.HasPrefix(path, "/etc/netns/"+l.Prefix) {
				t.Errorf("%s: resolv.conf path %s is outside /etc/netns/%s*", fault, path, l.Prefix)
			}
			texts = append(texts, content)
		}
		for _, p := range d.Procs {
			texts = append(texts, strings.Join(p.Args, " "), p.Ready)
		}
		for _, text := range texts {
			for _, m := range ipLike.FindAllString(text, -1) {
				addr := m
				if i := strings.IndexByte(m, '/'); i >= 0 {
					p, err := netip.ParsePrefix(m)
					if err != nil {
						t.Errorf("%s: bad prefix %q", fault, m)
						continue
					}
					// flannel's masquerade rule excludes multicast: a match,
					// not an address the lab uses.
					if m == "224.0.0.0/4" {
						continue
					}
					if p.Bits() < labRange.Bits() || !labRange.Contains(p.Addr()) {
						t.Errorf("%s: prefix %s is not inside %s", fault, m, labRange)
					}
					continue
				}
				a, err := netip.ParseAddr(addr)
				if err != nil {
					t.Errorf("%s: bad address %q", fault, addr)
					continue
				}
				// 0.0.0.0 and 127.0.0.1 are the wildcard and loopback binds.
				if a.IsUnspecified() || a.IsLoopback() {
					continue
				}
				if !labRange.Contains(a) {
					t.Errorf("%s: address %s is outside %s (in %q)", fault, a, labRange, text)
				}
			}
		}
	}
}

// TestTaxonomyCovered proves every cause of the taxonomy has a fault or a
// stated reason why it cannot have one, and every seed case has a fault.
func TestTaxonomyCovered(t *testing.T) {
	causes := map[string][]string{
		"network-unreachable": {"firewall", "route", "overload", "link-down"},
		"port-unreachable":    {"firewall", "not-listening", "loopback-only", "port-exhaustion", "no-endpoints"},
		"dns-failure":         {"pod-dns-config", "dns-service-down", "dns-path-broken", "upstream-failure"},
		"large-packet-loss":   {"mtu-mismatch"},
		"cni-anomaly":         {"kube-proxy-down", "service-rules-missing", "podcidr-exhausted", "overlay-misconfigured"},
		"inconclusive":        {"target-not-found", "agent-unreachable", "insufficient-evidence"},
	}
	byVerdict := FaultsByVerdict()
	for class, list := range causes {
		for _, cause := range list {
			k := class + "/" + cause
			if len(byVerdict[k]) > 0 {
				continue
			}
			if !slices.ContainsFunc(Uninjectable, func(u struct{ Class, Cause, Reason string }) bool {
				return u.Class == class && u.Cause == cause
			}) {
				t.Errorf("%s has neither a fault nor a reason in Uninjectable", k)
			}
		}
	}
	seeds := map[string]string{
		seedWrongSource: "cni-anomaly/overlay-misconfigured",
		seedMTU:         "large-packet-loss/mtu-mismatch",
		seedKubeProxy:   "dns-failure/dns-path-broken",
		seedMaster:      "cni-anomaly/overlay-misconfigured",
		seedDualDefault: "network-unreachable/route",
		seedLoopback:    "port-unreachable/loopback-only",
	}
	for seed, verdict := range seeds {
		found := false
		for _, f := range Faults {
			if f.Seed == seed {
				found = true
				if got := f.Class + "/" + f.Cause; got != verdict {
					t.Errorf("seed %q: fault %s gives %s, want %s", seed, f.Name, got, verdict)
				}
			}
		}
		if !found {
			t.Errorf("seed %q has no fault", seed)
		}
	}
	for _, f := range Faults {
		if len(f.Breaks)+len(f.Partial) == 0 {
			t.Errorf("fault %s declares nothing it breaks", f.Name)
		}
		if len(f.Diagnose) == 0 {
			t.Errorf("fault %s has no diagnose arguments", f.Name)
		}
	}
}

func TestInstanceNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"demo", true}, {"t1", true}, {"abcdefghijklmnop", true},
		{"", false}, {"Demo", false}, {"a-b", false}, {"abcdefghijklmnopq", false}, {"../x", false},
	} {
		_, err := New(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err=%v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "a-z0-9") && !strings.Contains(err.Error(), "letters") {
			t.Errorf("New(%q): error %q does not say what is accepted", tc.name, err)
		}
	}
}

// TestKubeProxyRules checks the rendered rules have kube-proxy's shape: the
// Service chain jumps, DNAT to the endpoint, and the masquerade mark.
func TestKubeProxyRules(t *testing.T) {
	l, _ := New("unit")
	d, err := desiredFor(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	rules := d.renderIptables(d.node("node-b"))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^-A KUBE-SERVICES -d 198\.18\.96\.20/32 -p tcp .*--dport 80 -j KUBE-SVC-[A-Z2-7]{16}$`),
		regexp.MustCompile(`(?m)^-A KUBE-SEP-[A-Z2-7]{16} -p tcp .*-j DNAT --to-destination 198\.19\.1\.10:8080$`),
		regexp.MustCompile(`(?m)^-A KUBE-POSTROUTING .*-j MASQUERADE`),
		regexp.MustCompile(`(?m)^-A PREROUTING .*-j KUBE-SERVICES`),
	} {
		if !want.MatchString(rules) {
			t.Errorf("node-b rules lack %s:\n%s", want, rules)
		}
	}
	d, _ = desiredFor(l, []string{"kube-proxy-down"})
	if strings.Contains(d.renderIptables(d.node("node-b")), "KUBE-SERVICES") {
		t.Error("kube-proxy-down: node-b still has KUBE-SERVICES")
	}
}
