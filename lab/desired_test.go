package lab

import (
	"encoding/json"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// labRange and labRange6 are the only address spaces the lab may use, both
// reserved for benchmarking (RFC 2544 and RFC 5180).
var (
	labRange  = netip.MustParsePrefix("198.18.0.0/15")
	labRange6 = netip.MustParsePrefix("2001:2::/48")
)

var (
	ipLike = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(/\d{1,2})?\b`)
	// ip6Like is anything with two colons or more between hex digits: every
	// spelling of an IPv6 address, and a few things that are not (MACs).
	ip6Like = regexp.MustCompile(`[0-9A-Fa-f]*(?::[0-9A-Fa-f]*){2,}(?:/\d{1,3})?`)
)

// multicastExclusions are prefixes the lab's rules match but never use as an
// address: flannel's masquerade rules leave multicast alone.
var multicastExclusions = map[string]bool{"224.0.0.0/4": true, "ff00::/8": true}

// outOfRange returns a description of every IPv4 or IPv6 address or prefix
// in text that lies outside the lab's ranges, and how many IPv6 ones it saw.
func outOfRange(text string) (bad []string, seen6 int) {
	for _, m := range ipLike.FindAllString(text, -1) {
		if multicastExclusions[m] {
			continue
		}
		if strings.Contains(m, "/") {
			p, err := netip.ParsePrefix(m)
			if err != nil || p.Bits() < labRange.Bits() || !labRange.Contains(p.Addr()) {
				bad = append(bad, "prefix "+m)
			}
			continue
		}
		a, err := netip.ParseAddr(m)
		if err != nil {
			bad = append(bad, "unparsable "+m)
			continue
		}
		// 0.0.0.0 and 127.0.0.1 are the wildcard and loopback binds.
		if !a.IsUnspecified() && !a.IsLoopback() && !labRange.Contains(a) {
			bad = append(bad, "address "+m)
		}
	}
	for _, loc := range ip6Like.FindAllStringIndex(text, -1) {
		m := text[loc[0]:loc[1]]
		// Part of a longer word is not an address.
		if (loc[0] > 0 && isWordByte(text[loc[0]-1])) || (loc[1] < len(text) && isWordByte(text[loc[1]])) {
			continue
		}
		if hw, err := net.ParseMAC(m); err == nil && len(hw) == 6 {
			continue
		}
		if multicastExclusions[m] {
			continue
		}
		seen6++
		if strings.Contains(m, "/") {
			p, err := netip.ParsePrefix(m)
			if err != nil || !p.Addr().Is6() || p.Bits() < labRange6.Bits() || !labRange6.Contains(p.Addr()) {
				bad = append(bad, "prefix "+m)
			}
			continue
		}
		a, err := netip.ParseAddr(m)
		if err != nil || !a.Is6() {
			bad = append(bad, "unparsable "+m)
			continue
		}
		// [::] and ::1 are the wildcard and loopback binds.
		if !a.IsUnspecified() && !a.IsLoopback() && !labRange6.Contains(a) {
			bad = append(bad, "address "+m)
		}
	}
	return bad, seen6
}

func isWordByte(b byte) bool {
	return b == '_' || b == '.' || ('0' <= b && b <= '9') || ('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z')
}

// TestOutOfRange proves the address scan catches what it must: without it,
// TestEveryAddressInLabRange could pass by seeing nothing.
func TestOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		text  string
		bad   int
		seen6 int
	}{
		{"198.18.0.1/24 198.19.1.10", 0, 0},
		{"10.0.0.1", 1, 0},
		{"198.16.0.0/12", 1, 0},
		{"2001:2::11/64 via 2001:2:0:101:: dev flannel.1", 0, 2},
		{"-A X -s 2001:2:0:100::/56 ! -d ff00::/8 -j MASQUERADE", 0, 1},
		{"--listen [::]:8080 --name web; [::1]:53", 0, 2},
		{"2001:db8::1", 1, 1},
		{"fd00::/8 2001:2:0:101::10/64", 1, 2},
		{"2001:2::/32", 1, 1},
		{"2001:3::1", 1, 1},
		{"fe80::1", 1, 1},
		// The third group is inside the /48 only when it is 0.
		{"2001:2:1::/56 2001:2:10::10 2001:2:1:1::10", 3, 3},
		{"::ffff:10.0.0.1", 1, 0},                    // the embedded IPv4 address is what is caught
		{`"mac":"02:4e:44:00:01:01"`, 0, 0},          // a MAC, not an address
		{"2001:2:0:101:0:0:0:10 2001:0002::1", 0, 2}, // long spellings
	} {
		bad, seen6 := outOfRange(tc.text)
		if len(bad) != tc.bad || seen6 != tc.seen6 {
			t.Errorf("outOfRange(%q) = %v, %d IPv6; want %d bad, %d IPv6", tc.text, bad, seen6, tc.bad, tc.seen6)
		}
	}
}

// TestEveryAddressInLabRange renders the desired state of the healthy lab and
// of every fault and proves that every address anywhere in it (links, routes
// of both families, neighbours, FDB, iptables and ip6tables rules, nftables,
// resolv.conf, process arguments, DNS zones, the lab's description) lies in
// 198.18.0.0/15 or 2001:2::/48 and every namespace carries the instance's
// prefix.
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
			for _, r := range append(append([]RouteConfig{}, c.Routes...), c.Routes6...) {
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
			texts = append(texts, d.renderIptables(c), d.renderIp6tables(c), c.Filter.Nft)
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
		for _, content := range dnsFiles(d.Lab) {
			texts = append(texts, content)
		}
		desc, err := json.Marshal(d.Lab)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(desc))
		seen6 := 0
		for _, text := range texts {
			bad, n := outOfRange(text)
			seen6 += n
			for _, b := range bad {
				t.Errorf("%s: %s is outside %s and %s (in %q)", fault, b, labRange, labRange6, text)
			}
		}
		// Every node, pod, bridge and VTEP has one: a scan that finds
		// none is a scan that looks nowhere.
		if seen6 < 20 {
			t.Errorf("%s: only %d IPv6 addresses found in the desired state; the lab is dual-stack", fault, seen6)
		}
	}
}

// TestDualStackAddresses checks the address plan: each pod-network address
// has an IPv6 twin with the same digits, and every node, pod and outside
// host that has an IPv4 address on the cluster or outside network has an
// IPv6 one too.
func TestDualStackAddresses(t *testing.T) {
	l, err := New("unit")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v4, v6 string }{
		{"198.19.1.10", "2001:2:0:101::10"},
		{"198.19.2.53", "2001:2:0:102::53"},
		{"198.19.1.0", "2001:2:0:101::"},
		{"198.19.2.1", "2001:2:0:102::1"},
		{"198.19.1.0/24", "2001:2:0:101::/64"},
	} {
		if got := mirror6(tc.v4); got != tc.v6 {
			t.Errorf("mirror6(%s) = %s, want %s", tc.v4, got, tc.v6)
		}
	}
	cluster6 := netip.MustParsePrefix(l.ClusterCIDR6)
	inCluster := func(what, addr string) {
		t.Helper()
		a, err := netip.ParseAddr(addr)
		if err != nil || !cluster6.Contains(a) {
			t.Errorf("%s: %q is not in the IPv6 cluster CIDR %s", what, addr, cluster6)
		}
	}
	for _, n := range l.Nodes {
		pc6, err := netip.ParsePrefix(n.PodCIDR6)
		if err != nil || pc6.Bits() != 64 || !cluster6.Contains(pc6.Addr()) {
			t.Errorf("node %s: PodCIDR6 %q is not a /64 of %s", n.Name, n.PodCIDR6, cluster6)
		}
		if a, err := netip.ParseAddr(n.BridgeIP6); err != nil || !pc6.Contains(a) {
			t.Errorf("node %s: bridge IPv6 %q is not in its PodCIDR6 %s", n.Name, n.BridgeIP6, n.PodCIDR6)
		}
		inCluster("node "+n.Name+" VTEP", n.Overlay.Address6)
		if a, err := netip.ParseAddr(n.InternalIP6); err != nil || !labRange6.Contains(a) || cluster6.Contains(a) {
			t.Errorf("node %s: InternalIP6 %q must be in %s and outside the cluster CIDR", n.Name, n.InternalIP6, labRange6)
		}
	}
	for _, p := range l.Pods {
		n, _ := l.Node(p.Node)
		pc6 := netip.MustParsePrefix(n.PodCIDR6)
		if a, err := netip.ParseAddr(p.IP6); err != nil || !pc6.Contains(a) {
			t.Errorf("pod %s: IPv6 %q is not in %s's PodCIDR6 %s", p.Key(), p.IP6, n.Name, n.PodCIDR6)
		}
	}
	for _, name := range []string{"router", "ext"} {
		h, _ := l.Host(name)
		if a, err := netip.ParseAddr(h.IP6); err != nil || !labRange6.Contains(a) {
			t.Errorf("host %s: IPv6 %q is not in %s", name, h.IP6, labRange6)
		}
	}
	for _, s := range l.Services {
		if a, err := netip.ParseAddr(s.ClusterIP); err != nil || !a.Is4() {
			t.Errorf("Service %s: ClusterIP %q; Services are IPv4 single-stack", s.Key(), s.ClusterIP)
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
	// IPv6: flannel masquerades the IPv6 cluster network; kube-proxy's
	// IPv6 proxier has its chains but no Service (they are IPv4 only).
	rules6 := d.renderIp6tables(d.node("node-b"))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s 2001:2:0:100::/56 ! -d ff00::/8 .*-j MASQUERADE --random-fully$`),
		regexp.MustCompile(`(?m)^-A FLANNEL-POSTRTG -s 2001:2:0:102::/64 -d 2001:2:0:100::/56 .*-j RETURN$`),
		regexp.MustCompile(`(?m)^-A PREROUTING .*-j KUBE-SERVICES`),
	} {
		if !want.MatchString(rules6) {
			t.Errorf("node-b IPv6 rules lack %s:\n%s", want, rules6)
		}
	}
	if strings.Contains(rules6, "KUBE-SVC-") || strings.Contains(rules6, "198.") {
		t.Errorf("node-b IPv6 rules have IPv4 Service rules:\n%s", rules6)
	}
	d, _ = desiredFor(l, []string{"kube-proxy-down"})
	if strings.Contains(d.renderIptables(d.node("node-b")), "KUBE-SERVICES") {
		t.Error("kube-proxy-down: node-b still has KUBE-SERVICES")
	}
	if strings.Contains(d.renderIp6tables(d.node("node-b")), "KUBE-SERVICES") {
		t.Error("kube-proxy-down: node-b still has KUBE-SERVICES in ip6tables")
	}
	// A fault's IPv6 rule goes to ip6tables only.
	d, _ = desiredFor(l, []string{"port-reject-v6"})
	web := d.pod("default/web")
	if r := d.renderIp6tables(web); !strings.Contains(r, "--dport 8080") {
		t.Errorf("port-reject-v6: web's ip6tables lack the rule:\n%s", r)
	}
	if r := d.renderIptables(web); strings.Contains(r, "--dport 8080") {
		t.Errorf("port-reject-v6: web's iptables have the rule:\n%s", r)
	}
}

// TestFaultFamilies checks each fault's declared family against the checks
// it breaks, and that it names only checks that exist.
func TestFaultFamilies(t *testing.T) {
	family := map[string]string{}
	for _, c := range Checks() {
		if c.Family != familyV4 && c.Family != familyV6 {
			t.Errorf("check %s: family %q", c.Name, c.Family)
		}
		family[c.Name] = c.Family
	}
	for _, f := range Faults {
		broken := map[string]int{}
		for _, name := range append(append([]string{}, f.Breaks...), f.Partial...) {
			fam, ok := family[name]
			if !ok {
				t.Errorf("fault %s: breaks %q, which is no check", f.Name, name)
			}
			broken[fam]++
		}
		switch f.Family {
		case familyV4, familyV6:
			if broken[f.Family] == 0 {
				t.Errorf("fault %s is about %s but breaks no %s check", f.Name, f.Family, f.Family)
			}
		case "":
			if broken[familyV4] == 0 || broken[familyV6] == 0 {
				t.Errorf("fault %s declares no family, so it must break both; it breaks %v", f.Name, broken)
			}
		default:
			t.Errorf("fault %s: family %q (want ipv4, ipv6 or empty)", f.Name, f.Family)
		}
	}
}

func TestSysctlInterface(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"ipv4.ip_forward", ""},
		{"ipv6.conf.all.forwarding", ""},
		{"ipv6.conf.default.accept_dad", ""},
		{"bridge.bridge-nf-call-ip6tables", ""},
		{"ipv4.conf.eth0.rp_filter", "eth0"},
		{"ipv6.neigh.cni0.base_reachable_time_ms", "cni0"},
		{"net.ipv6.conf.eth0.accept_ra", "eth0"},
		{"ipv4/conf/flannel.1/rp_filter", "flannel.1"},
		{"net/ipv6/conf/all/disable_ipv6", ""},
	} {
		if got := sysctlInterface(tc.key); got != tc.want {
			t.Errorf("sysctlInterface(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestListenNetwork(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"0.0.0.0:8080", "tcp4"}, // IPv4 only, as a C program binding 0.0.0.0
		{"127.0.0.1:8080", "tcp4"},
		{"198.18.0.11:6443", "tcp4"},
		{"[::]:8080", "tcp"}, // dual-stack
		{":80", "tcp"},
		{"[::1]:8080", "tcp"},
	} {
		if got := listenNetwork(tc.addr); got != tc.want {
			t.Errorf("listenNetwork(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestClusterShape: a lab of the cluster shape builds the machines and the
// wires and nothing a real cluster's programs own (bridges, VXLAN devices,
// routes to pod ranges, pods, firewall rules, CoreDNS), and says so in its
// description; its shape is a choice of two.
func TestClusterShape(t *testing.T) {
	l, err := NewShape("shape", ShapeCluster)
	if err != nil {
		t.Fatal(err)
	}
	d, err := desiredFor(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Pods) != 0 {
		t.Errorf("pods %v, want none: the cluster makes its own", l.Pods)
	}
	for _, s := range l.Services {
		if len(s.Endpoints) != 0 {
			t.Errorf("Service %s has endpoints %v: the cluster's come from its API", s.Key(), s.Endpoints)
		}
	}
	if _, err := l.Service(l.DNSService); err != nil {
		t.Errorf("no %s: the kubelets' clusterDNS is its ClusterIP: %v", l.DNSService, err)
	}
	for _, n := range l.Nodes {
		c := d.NS[n.Netns]
		if c == nil {
			t.Fatalf("node %s not built", n.Name)
		}
		var links []string
		for _, lc := range c.Links {
			links = append(links, lc.Name+"/"+lc.Kind)
			if lc.Kind == "bridge" || lc.Kind == "vxlan" || lc.Master != "" {
				t.Errorf("node %s gets %s (%s): flannel and the CNI plugins make those", n.Name, lc.Name, lc.Kind)
			}
		}
		if c.Link(n.NIC) == nil {
			t.Errorf("node %s has no %s (links %v)", n.Name, n.NIC, links)
		}
		for _, r := range append(slices.Clone(c.Routes), c.Routes6...) {
			if r.Dst != "default" {
				t.Errorf("node %s gets a route to %s: pod routes are flannel's", n.Name, r.Dst)
			}
		}
		if c.Route("default") == nil || c.Route6("default") == nil {
			t.Errorf("node %s lacks a default route of each family", n.Name)
		}
		if c.Filter.Node != "" || d.renderIptables(c) != d.renderIptables(&NSConfig{}) {
			t.Errorf("node %s gets the lab's kube-proxy and flannel rules: kube-proxy and flannel write their own", n.Name)
		}
		if c.Sysctls["ipv4.ip_forward"] != "1" || c.Sysctls["bridge.bridge-nf-call-iptables"] != "1" {
			t.Errorf("node %s: forwarding and bridge netfilter are the node's, set by the lab: %v", n.Name, c.Sysctls)
		}
	}
	for name := range d.Procs {
		if name != "ext-http" && name != "upstream-dns" {
			t.Errorf("process %s: only the outside host's servers run; the cluster runs the rest", name)
		}
	}
	if _, err := NewShape("shape", "kind"); err == nil || !strings.Contains(err.Error(), `"emulated" and "cluster"`) {
		t.Errorf("shape kind: %v, want an error naming the accepted shapes", err)
	}
}
