package main

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/lab/rulesets"
)

// nodeBRouter is lab node-b's routing, for tracing dumps made for it.
var nodeBRouter = collectors.StaticRouter{Routes: map[netip.Prefix]string{
	netip.MustParsePrefix("198.19.2.0/24"): "cni0",
	netip.MustParsePrefix("198.19.1.0/24"): "flannel.1",
	netip.MustParsePrefix("198.18.0.0/24"): "eth0",
	netip.MustParsePrefix("0.0.0.0/0"):     "eth0",
}, Local: []netip.Addr{netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.19.2.1")}}

// diagnosisFlows are what a diagnosis from pod default/client traces on its
// node: to web's pod and its Service (TCP and ICMP), to the DNS Service, and
// the overlay's UDP both ways.
func diagnosisFlows() []struct {
	f    collectors.Flow
	path string
} {
	client, web := netip.MustParseAddr("198.19.2.10"), netip.MustParseAddr("198.19.1.10")
	a, b := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")
	return []struct {
		f    collectors.Flow
		path string
	}{
		{collectors.Flow{Proto: "tcp", Src: client, Dst: web, DPort: 8080}, "forward"},
		{collectors.Flow{Proto: "icmp", Src: client, Dst: web}, "forward"},
		{collectors.Flow{Proto: "tcp", Src: client, Dst: netip.MustParseAddr("198.18.96.20"), DPort: 80}, "forward"},
		{collectors.Flow{Proto: "udp", Src: client, Dst: netip.MustParseAddr("198.18.96.10"), DPort: 53}, "forward"},
		{collectors.Flow{Proto: "icmp", Src: web, Dst: client}, "forward"},
		{collectors.Flow{Proto: "udp", Src: b, Dst: a, DPort: 8472}, "output"},
		{collectors.Flow{Proto: "udp", Src: a, Dst: b, DPort: 8472}, "input"},
	}
}

// benchTracer parses and traces the rule sets of lab/rulesets: the median
// of 7 runs each, the first (cold) run apart.
func benchTracer(c *cli) error {
	flows := diagnosisFlows()
	fmt.Fprintf(c.stdout, "%d flows of a diagnosis traced through node-b's rules, median of 7 runs:\n", len(flows))
	fmt.Fprintf(c.stdout, "%-16s %8s %10s %10s %10s %12s\n", "PROFILE", "RULES", "PARSE", "TRACE", "TOTAL", "UNCERTAIN")
	for _, name := range []string{"kube-proxy-1000", "big", "kube-proxy-nft"} {
		p, err := rulesets.Lookup(name)
		if err != nil {
			return err
		}
		dump, err := rulesets.Read(name)
		if err != nil {
			return err
		}
		var parses, traces []time.Duration
		rules, uncertain := 0, 0
		for range 8 {
			start := time.Now()
			var trace func(collectors.Flow, string) collectors.FlowTrace
			if p.Format == "nft" {
				n, err := collectors.ParseNftJSON(dump)
				if err != nil {
					return err
				}
				rules = 0
				for _, ch := range n.Chains {
					rules += len(ch.Rules)
				}
				trace = func(f collectors.Flow, path string) collectors.FlowTrace { return n.Trace(f, path, nodeBRouter) }
			} else {
				ipt, err := collectors.ParseIptablesSave(string(dump))
				if err != nil {
					return err
				}
				rules = 0
				for _, t := range ipt.Tables {
					for _, ch := range t.Chains {
						rules += len(ch.Rules)
					}
				}
				trace = func(f collectors.Flow, path string) collectors.FlowTrace { return ipt.Trace(f, path, nodeBRouter) }
			}
			parsed := time.Now()
			uncertain = 0
			for _, x := range flows {
				if tr := trace(x.f, x.path); !tr.Certain {
					uncertain++
				}
			}
			parses, traces = append(parses, parsed.Sub(start)), append(traces, time.Since(parsed))
		}
		// The first run pays for the page cache and the heap's growth.
		parses, traces = parses[1:], traces[1:]
		mp, mt := median(parses), median(traces)
		fmt.Fprintf(c.stdout, "%-16s %8d %10s %10s %10s %12d\n", name, rules, mp.Round(time.Microsecond), mt.Round(time.Microsecond), (mp + mt).Round(time.Microsecond), uncertain)
	}
	fmt.Fprintln(c.stdout, "target: parse + trace of the 20,000-rule node (big) under 200 ms")
	return nil
}

// median is the middle of the measurements (the upper one of an even count).
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
