package collectors

import (
	"net/netip"
	"strings"
	"testing"
)

// rules builds an iptables-save dump of the filter table (and the nat
// table when given) from rule lines.
func rules(t *testing.T, filter, nat []string) *Iptables {
	t.Helper()
	var b strings.Builder
	table := func(name string, chains []string, lines []string) {
		b.WriteString("*" + name + "\n")
		for _, c := range chains {
			b.WriteString(":" + c + " ACCEPT [0:0]\n")
		}
		seen := map[string]bool{}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 1 && !seen[f[1]] && !strings.Contains(" INPUT FORWARD OUTPUT PREROUTING POSTROUTING ", " "+f[1]+" ") {
				seen[f[1]] = true
				b.WriteString(":" + f[1] + " - [0:0]\n")
			}
		}
		for _, l := range lines {
			b.WriteString("[3:180] " + l + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	table("filter", []string{"INPUT", "FORWARD", "OUTPUT"}, filter)
	if nat != nil {
		table("nat", []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}, nat)
	}
	ipt, err := ParseIptablesSave(b.String())
	if err != nil {
		t.Fatal(err)
	}
	return ipt
}

var (
	pod     = netip.MustParseAddr("198.19.2.10")
	web     = netip.MustParseAddr("198.19.1.10")
	pod6    = netip.MustParseAddr("2001:2:1:2::10")
	web6    = netip.MustParseAddr("2001:2:1:1::10")
	nodeRtr = StaticRouter{Routes: map[netip.Prefix]string{
		netip.MustParsePrefix("198.19.2.0/24"):   "cni0",
		netip.MustParsePrefix("198.19.1.0/24"):   "flannel.1",
		netip.MustParsePrefix("0.0.0.0/0"):       "eth0",
		netip.MustParsePrefix("2001:2:1:2::/64"): "cni0",
		netip.MustParsePrefix("2001:2:1:1::/64"): "flannel.1",
	}, Local: []netip.Addr{netip.MustParseAddr("198.18.0.12")}}
	podRtr = StaticRouter{Routes: map[netip.Prefix]string{netip.MustParsePrefix("0.0.0.0/0"): "eth0", netip.MustParsePrefix("::/0"): "eth0"},
		Local: []netip.Addr{web, web6}}
)

func TestTraceInterfaces(t *testing.T) {
	tcp := Flow{Proto: "tcp", Src: pod, Dst: web, DPort: 8080}
	for _, tc := range []struct {
		name    string
		filter  []string
		path    string
		rt      Router
		verdict string
		certain bool
	}{
		{"docker isolation is for another interface", []string{
			"-A INPUT -j DOCKER-ISOLATION",
			"-A DOCKER-ISOLATION -o docker0 -j DROP",
			"-A DOCKER-ISOLATION -i docker0 ! -o docker0 -j DROP",
		}, "input", podRtr, "ACCEPT", true},
		{"lo accept does not hide the drop", []string{
			"-A INPUT -i lo -j ACCEPT",
			"-A INPUT -p tcp -m tcp --dport 8080 -j DROP",
		}, "input", podRtr, "DROP", true},
		{"forward out of the overlay", []string{
			"-A FORWARD -o docker0 -j DROP",
			"-A FORWARD -i cali+ -j DROP",
			"-A FORWARD -i cni0 -o flannel.1 -p tcp -j REJECT --reject-with icmp-host-prohibited",
		}, "forward", nodeRtr, "REJECT", true},
		{"negated interface", []string{
			"-A FORWARD ! -o flannel.1 -j DROP",
		}, "forward", nodeRtr, "ACCEPT", true},
		{"unknown interfaces are not taken for granted", []string{
			"-A FORWARD -o docker0 -j DROP",
		}, "forward", nil, "DROP", false},
		{"an unevaluated accept before a drop", []string{
			"-A INPUT -m set --match-set allowed src -j ACCEPT",
			"-A INPUT -p tcp -j DROP",
		}, "input", podRtr, "DROP", false},
		{"an unevaluated drop", []string{
			"-A INPUT -m set --match-set blocked src -j DROP",
		}, "input", podRtr, "DROP", false},
		{"an unevaluated log changes nothing", []string{
			"-A INPUT -m limit --limit 5/min -j LOG --log-prefix \"in: \"",
		}, "input", podRtr, "ACCEPT", true},
		{"goto returns past its caller", []string{
			"-A INPUT -g CHECK",
			"-A INPUT -j DROP",
			"-A CHECK -s 198.19.0.0/16 -j RETURN",
		}, "input", podRtr, "ACCEPT", true},
		{"jump returns to its caller", []string{
			"-A INPUT -j CHECK",
			"-A INPUT -j DROP",
			"-A CHECK -s 198.19.0.0/16 -j RETURN",
		}, "input", podRtr, "DROP", true},
		{"syn and new", []string{
			"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP",
		}, "input", podRtr, "DROP", true},
		{"established only", []string{
			"-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j DROP",
		}, "input", podRtr, "ACCEPT", true},
		{"rpfilter passes on the reverse path", []string{
			"-A INPUT -m rpfilter --invert -j DROP",
		}, "input", podRtr, "ACCEPT", true},
	} {
		ipt := rules(t, tc.filter, nil)
		tr := ipt.Trace(tcp, tc.path, tc.rt)
		if tr.Verdict != tc.verdict || tr.Certain != tc.certain {
			t.Errorf("%s: %s certain=%v, want %s certain=%v (by %q, assumes %v, uncertain %v)", tc.name, tr.Verdict, tr.Certain, tc.verdict, tc.certain, tr.VerdictBy, tr.Assumes, tr.Uncertain)
		}
		if !tc.certain && tr.Verdict == "DROP" && (len(tr.Assumes) == 0 || len(tr.Otherwise) == 0 || tr.Otherwise[0].Verdict != "ACCEPT") {
			t.Errorf("%s: an uncertain drop must say what it assumes and what happens otherwise: %+v", tc.name, tr)
		}
	}
}

func TestTraceDNATToLocalIsInput(t *testing.T) {
	ipt := rules(t, []string{
		"-A FORWARD -j DROP",
		"-A INPUT -p tcp -m tcp --dport 30080 -j REJECT --reject-with tcp-reset",
	}, []string{"-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.18.0.12:30080"})
	tr := ipt.Trace(Flow{Proto: "tcp", Src: pod, Dst: netip.MustParseAddr("198.18.96.20"), DPort: 80}, "forward", nodeRtr)
	if tr.Verdict != "REJECT" || tr.Path != "input" || tr.RejectWith != "tcp-reset" {
		t.Errorf("DNAT to a local address: %+v", tr)
	}
}

func TestTraceIPv6(t *testing.T) {
	text := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP
-A INPUT -s 2001:2:1::/56 -p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset
COMMIT
`
	v6, err := ParseIptablesSave(text)
	if err != nil {
		t.Fatal(err)
	}
	ipt := rules(t, nil, nil)
	ipt.Tables6 = v6.Tables
	for _, tc := range []struct {
		f       Flow
		verdict string
	}{
		{Flow{Proto: "icmp6", Src: pod6, Dst: web6}, "DROP"},
		{Flow{Proto: "tcp", Src: pod6, Dst: web6, DPort: 8080}, "REJECT"},
		{Flow{Proto: "tcp", Src: pod6, Dst: web6, DPort: 9090}, "ACCEPT"},
		// IPv4 flows meet the IPv4 tables only.
		{Flow{Proto: "icmp", Src: pod, Dst: web}, "ACCEPT"},
		{Flow{Proto: "tcp", Src: pod, Dst: web, DPort: 8080}, "ACCEPT"},
	} {
		if tr := ipt.Trace(tc.f, "input", podRtr); tr.Verdict != tc.verdict || !tr.Certain {
			t.Errorf("%s: %s (certain %v), want %s", tc.f, tr.Verdict, tr.Certain, tc.verdict)
		}
	}
}

func TestNftTraceInterfacesAndFamilies(t *testing.T) {
	js := `{"nftables": [
{"table": {"family": "inet", "name": "fw", "handle": 1}},
{"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
{"set": {"family": "inet", "table": "fw", "name": "blocked6", "type": "ipv6_addr", "handle": 2, "elem": ["2001:2:1:2::10"]}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker0"}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "@blocked6"}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 9090}}, {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, {"drop": null}]}}
]}`
	n, err := ParseNftJSON([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f       Flow
		verdict string
		certain bool
	}{
		{Flow{Proto: "tcp", Src: pod, Dst: web, DPort: 8080}, "ACCEPT", true},
		{Flow{Proto: "tcp", Src: pod6, Dst: web6, DPort: 8080}, "DROP", true},
		{Flow{Proto: "tcp", Src: pod, Dst: web, DPort: 9090}, "DROP", false},
	} {
		tr := n.Trace(tc.f, "input", podRtr)
		if tr.Verdict != tc.verdict || tr.Certain != tc.certain {
			t.Errorf("%s: %s certain=%v, want %s certain=%v (%+v)", tc.f, tr.Verdict, tr.Certain, tc.verdict, tc.certain, tr)
		}
	}
}

func TestExploreBound(t *testing.T) {
	// Forty unevaluated accepts before a drop: more ways than the tracer
	// follows. The drop is still found, and the trace says it is unsure.
	var filter []string
	for i := range 40 {
		filter = append(filter, "-A INPUT -m set --match-set s"+strings.Repeat("x", i)+" src -j ACCEPT")
	}
	filter = append(filter, "-A INPUT -j DROP")
	tr := rules(t, filter, nil).Trace(Flow{Proto: "tcp", Src: pod, Dst: web, DPort: 80}, "input", podRtr)
	if tr.Verdict != "DROP" || tr.Certain {
		t.Errorf("bounded exploration: %s certain=%v", tr.Verdict, tr.Certain)
	}
}
