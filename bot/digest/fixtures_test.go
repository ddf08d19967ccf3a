package digest

import (
	"fmt"
	"time"
)

// The fixed clock of the golden tests: a Monday digest at 09:00 in Berlin
// covering Friday 09:00 to Monday 09:00.
var (
	goldenTo   = time.Date(2026, 6, 1, 9, 0, 0, 0, berlin)
	goldenFrom = time.Date(2026, 5, 29, 9, 0, 0, 0, berlin)
)

// pattern is a run of like findings: n of them, spread over the period.
type pattern struct {
	class, cause, target, ns, node string
	n                              int
	conf                           float64
	source                         string
}

// spread lays out the patterns' findings over [from, to) by index
// arithmetic, so that the fixtures are the same on every run and platform.
func spread(from, to time.Time, idPrefix string, ps []pattern) []Item {
	minutes := int(to.Sub(from) / time.Minute)
	var items []Item
	seq := 0
	for j, p := range ps {
		for k := range p.n {
			off := ((j*397 + k*1009 + 11) * 53) % minutes
			seq++
			items = append(items, Item{
				At:         from.Add(time.Duration(off) * time.Minute),
				Class:      p.class,
				Cause:      p.cause,
				Target:     p.target,
				Namespace:  p.ns,
				Node:       p.node,
				Confidence: p.conf,
				ID:         fmt.Sprintf("%s%04d", idPrefix, seq),
				Source:     p.source,
			})
		}
	}
	return items
}

func busyPeriod() Period {
	now := []pattern{
		{"port-unreachable", "firewall", "pod shop/db-0", "shop", "node-b", 9, 0.9, "alertmanager"},
		{"network-unreachable", "firewall", "pod default/web-7d9f", "default", "node-a", 7, 0.85, "alertmanager"},
		{"healthy", "none", "pod default/web-7d9f", "default", "node-a", 6, 1, "slack"},
		{"dns-failure", "dns-path-broken", "pod default/client-5b2c", "default", "node-d", 5, 0.9, "alertmanager"},
		{"port-unreachable", "not-listening", "pod shop/cart-6c4d", "shop", "node-a", 4, 0.95, "slack"},
		{"network-unreachable", "route", "pod payments/api-1", "payments", "node-c", 3, 0.8, "alertmanager"},
		{"large-packet-loss", "mtu-mismatch", "pod payments/worker-2", "payments", "node-c", 3, 0.9, "alertmanager"},
		{"dns-failure", "upstream-failure", "pod kube-system/coredns-5d78c", "kube-system", "node-b", 2, 0.7, "sweep"},
		{"cni-anomaly", "overlay-misconfigured", "node node-e", "", "node-e", 2, 0.75, "sweep"},
		{"inconclusive", "agent-unreachable", "pod batch/etl-29140", "batch", "node-f", 2, 0.4, "alertmanager"},
		{"inconclusive", "insufficient-evidence", "pod shop/db-0", "shop", "node-b", 1, 0.5, "slack"},
		{"port-unreachable", "loopback-only", "pod monitoring/grafana-0", "monitoring", "node-a", 1, 0.95, "slack"},
		{"inconclusive", "target-not-found", "pod shop/old-cart", "shop", "", 1, 1, "slack"},
		{"network-unreachable", "firewall", "pod shop/db-0", "shop", "node-b", 2, 0.8, "alertmanager"},
		{"port-unreachable", "no-endpoints", "svc batch/reports", "batch", "", 2, 0.95, "slack"},
		{"inconclusive", "agent-unreachable", "pod logging/fluentd-x8", "logging", "node-f", 3, 0.4, "alertmanager"},
	}
	prev := []pattern{
		{"port-unreachable", "firewall", "pod shop/db-0", "shop", "node-b", 3, 0.9, "alertmanager"},
		{"network-unreachable", "firewall", "pod default/web-7d9f", "default", "node-a", 9, 0.85, "alertmanager"},
		{"dns-failure", "dns-path-broken", "pod default/client-5b2c", "default", "node-d", 5, 0.9, "alertmanager"},
		{"cni-anomaly", "kube-proxy-down", "node node-d", "", "node-d", 4, 0.9, "alertmanager"},
		{"healthy", "none", "pod default/web-7d9f", "default", "node-a", 2, 1, "slack"},
	}
	prevFrom := goldenFrom.Add(-goldenTo.Sub(goldenFrom))
	return Period{
		From:     goldenFrom,
		To:       goldenTo,
		Findings: spread(goldenFrom, goldenTo, "f-", now),
		Previous: spread(prevFrom, goldenFrom, "p-", prev),
		OpenAlerts: []Alert{
			{Name: "KubePodNotReady", Target: "pod shop/db-0", Since: goldenTo.Add(-50 * time.Hour), Firing: 3, Class: "port-unreachable", Cause: "firewall", Link: "https://example.slack.com/archives/C0NETOPS/p1780000000000100"},
			{Name: "BlackboxProbeFailed", Target: "svc default/web", Since: goldenTo.Add(-20 * time.Hour), Firing: 1, Class: "network-unreachable", Cause: "firewall", Link: "https://example.slack.com/archives/C0NETOPS/p1780000000000200"},
			{Name: "CoreDNSErrorsHigh", Target: "pod kube-system/coredns-5d78c", Since: goldenTo.Add(-30 * time.Hour), Firing: 2, Class: "dns-failure", Cause: "upstream-failure"},
			{Name: "KubeProxyDown", Target: "node node-d", Since: goldenTo.Add(-70 * time.Hour), Firing: 1},
			{Name: "TargetDown", Target: "pod payments/api-1", Since: goldenTo.Add(-5 * time.Hour), Firing: 4, Class: "network-unreachable", Cause: "route"},
			{Name: "HighLatency <p99>", Target: "svc payments/api", Since: goldenTo.Add(-60 * time.Hour), Firing: 1, Class: "inconclusive", Cause: "insufficient-evidence"},
		},
	}
}

var sweepChecks = []string{"dns", "mtu", "overlay", "svc-rules", "kube-proxy"}

func sweepPeriod() Period {
	p := Period{
		From: goldenFrom,
		To:   goldenTo,
		Findings: spread(goldenFrom, goldenTo, "f-", []pattern{
			{"large-packet-loss", "mtu-mismatch", "node node-c", "", "node-c", 2, 0.9, "sweep"},
			{"cni-anomaly", "overlay-misconfigured", "node node-c", "", "node-c", 1, 0.8, "sweep"},
			{"dns-failure", "dns-service-down", "node node-e", "", "node-e", 1, 0.85, "sweep"},
			{"healthy", "none", "node node-a", "", "node-a", 3, 1, "sweep"},
		}),
		Previous: spread(goldenFrom.Add(-72*time.Hour), goldenFrom, "p-", []pattern{
			{"healthy", "none", "node node-a", "", "node-a", 3, 1, "sweep"},
		}),
	}
	table := &SweepTable{At: goldenTo.Add(-5 * time.Minute), Checks: sweepChecks}
	for _, node := range []string{"node-f", "node-a", "node-e", "node-b", "node-c", "node-d"} {
		row := SweepRow{Node: node, Cells: map[string]Cell{}}
		for _, c := range sweepChecks {
			row.Cells[c] = Cell{OK: true}
		}
		switch node {
		case "node-c":
			row.Cells["mtu"] = Cell{Class: "large-packet-loss", Cause: "mtu-mismatch", Note: "path MTU 1400 < flannel.1 MTU 1450"}
			row.Cells["overlay"] = Cell{Class: "cni-anomaly", Cause: "overlay-misconfigured", Note: "VXLAN local 10.0.0.13 is not the node's InternalIP 10.0.1.13"}
		case "node-e":
			row.Cells["dns"] = Cell{Class: "dns-failure", Cause: "dns-service-down", Note: "SERVFAIL for kubernetes.default"}
		case "node-f":
			// kube-proxy not checked: the node runs a kube-proxy replacement.
			delete(row.Cells, "kube-proxy")
			row.Cells["svc-rules"] = Cell{Class: "cni-anomaly", Cause: "service-rules-missing", Note: "no DNAT rule for 10.96.0.10:53"}
		}
		table.Rows = append(table.Rows, row)
	}
	p.Sweep = table
	return p
}

func inconclusiveOnlyPeriod() Period {
	return Period{
		From: goldenFrom,
		To:   goldenTo,
		Findings: spread(goldenFrom, goldenTo, "f-", []pattern{
			{"inconclusive", "agent-unreachable", "pod batch/etl-29140", "batch", "node-f", 2, 0.4, "alertmanager"},
			{"inconclusive", "insufficient-evidence", "pod shop/db-0", "shop", "node-b", 1, 0.5, "slack"},
			{"inconclusive", "target-not-found", "pod shop/old-cart", "shop", "", 1, 1, "slack"},
		}),
		Previous: spread(goldenFrom.Add(-72*time.Hour), goldenFrom, "p-", []pattern{
			{"port-unreachable", "firewall", "pod shop/db-0", "shop", "node-b", 2, 0.9, "alertmanager"},
		}),
	}
}

func emptyPeriod() Period {
	return Period{
		From: goldenFrom,
		To:   goldenTo,
		Previous: spread(goldenFrom.Add(-72*time.Hour), goldenFrom, "p-", []pattern{
			{"port-unreachable", "firewall", "pod shop/db-0", "shop", "node-b", 4, 0.9, "alertmanager"},
		}),
	}
}

// benchPeriod is the benchmark's input: a busy week in a big cluster, 5,000
// findings over the period and as many in the period before, 12 open alert
// threads and a sweep of 20 nodes.
func benchPeriod(n int) Period {
	to := goldenTo
	from := to.AddDate(0, 0, -7)
	var ps []pattern
	// 22 verdicts x 60 namespaces x 40 nodes, by index arithmetic.
	const nsCount, nodeCount = 60, 40
	for i := range 500 {
		v := i % 22
		class, cause := taxonomyAt(v)
		ns := fmt.Sprintf("team-%02d", (i*7)%nsCount)
		ps = append(ps, pattern{
			class: class, cause: cause,
			target: fmt.Sprintf("pod %s/app-%03d", ns, (i*13)%250),
			ns:     ns,
			node:   fmt.Sprintf("node-%02d", (i*11)%nodeCount),
			n:      n / 500,
			conf:   0.5 + float64(i%5)/10,
			source: []string{"alertmanager", "slack", "sweep"}[i%3],
		})
	}
	p := Period{
		From:     from,
		To:       to,
		Findings: spread(from, to, "f-", ps),
		Previous: spread(from.AddDate(0, 0, -7), from, "p-", ps),
	}
	for i := range 12 {
		p.OpenAlerts = append(p.OpenAlerts, Alert{
			Name: fmt.Sprintf("Alert%02d", i), Target: fmt.Sprintf("pod team-%02d/app-%03d", i, i),
			Since: to.Add(-time.Duration(i+1) * time.Hour), Firing: i%4 + 1, Class: "port-unreachable", Cause: "firewall",
		})
	}
	table := &SweepTable{At: to.Add(-5 * time.Minute), Checks: sweepChecks}
	for i := range 20 {
		row := SweepRow{Node: fmt.Sprintf("node-%02d", i), Cells: map[string]Cell{}}
		for _, c := range sweepChecks {
			row.Cells[c] = Cell{OK: true}
		}
		if i%7 == 3 {
			row.Cells["mtu"] = Cell{Class: "large-packet-loss", Cause: "mtu-mismatch", Note: "path MTU 1400 < 1450"}
		}
		table.Rows = append(table.Rows, row)
	}
	p.Sweep = table
	return p
}
