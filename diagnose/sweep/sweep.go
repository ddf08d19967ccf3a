// Package sweep is the active part of a health digest: from every node,
// through the node's agent (or in this process on the lab), the checks an
// engineer would run on a quiet morning to find what is about to hurt:
// a cluster and an outside name resolved from a pod on the node, the path
// MTU to every other node, the overlay to a pod on every other node, and
// kube-proxy on the node. The result is one row per node; a failing cell
// carries its diagnosis.
package sweep

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// Node is one node as the sweep sees it: its name and InternalIP, and a
// pod on it (not on the host network) to probe from; Pod is nil when the
// node runs none, and the pod's checks are skipped with that reason.
type Node struct {
	Name       string
	InternalIP netip.Addr
	// Place is the node's own namespace.
	Place diagnose.Place
	// Pod is a pod on the node and PodIP its address.
	Pod   *diagnose.Place
	PodIP netip.Addr
	// ResolvConf, for a pod this process opens itself (the lab).
	ResolvConf string
	// Facts are the Kubernetes view's facts about the node (kube-proxy's
	// state, the overlay device).
	Facts *diagnose.Node
}

// Options are what the sweep asks.
type Options struct {
	// ClusterName and OutsideName are resolved from each node's pod
	// (default: kubernetes.default.svc.cluster.local, example.com).
	ClusterName, OutsideName string
	// Cluster is the view's shared facts (the DNS Service, the domain).
	Cluster *diagnose.Cluster
	// Parallel bounds the diagnoses running at once (default 4).
	Parallel int
}

// Cell is one check of one node.
type Cell struct {
	Check string `json:"check"` // "dns", "kube-proxy", "mtu to node-b", "overlay to node-b"
	// Result is ok, failed or skipped.
	Result  string `json:"result"`
	Verdict string `json:"verdict,omitempty"`
	Summary string `json:"summary,omitempty"`
	// Finding is the diagnosis of a failed cell.
	Finding *diagnose.Finding `json:"finding,omitempty"`
}

// Row is a node's cells.
type Row struct {
	Node  string `json:"node"`
	Cells []Cell `json:"cells"`
}

// Failed counts the row's failed cells.
func (r Row) Failed() int {
	n := 0
	for _, c := range r.Cells {
		if c.Result == "failed" {
			n++
		}
	}
	return n
}

// Table is the sweep's result, one row per node in the nodes' order.
type Table struct {
	Rows []Row `json:"rows"`
}

// job is one cell to diagnose.
type job struct {
	row, cell int
	req       *diagnose.Request
}

// Run sweeps the nodes with the engine (whose runner reaches the nodes).
func Run(ctx context.Context, eng *diagnose.Engine, nodes []Node, o Options) *Table {
	if o.ClusterName == "" {
		o.ClusterName = "kubernetes.default.svc.cluster.local"
		if o.Cluster != nil && o.Cluster.APIName != "" {
			o.ClusterName = o.Cluster.APIName
		}
	}
	if o.OutsideName == "" {
		o.OutsideName = "example.com"
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	t := &Table{}
	var jobs []job
	add := func(row int, check string, req *diagnose.Request, skip string) {
		r := &t.Rows[row]
		c := Cell{Check: check}
		if skip != "" {
			c.Result, c.Summary = "skipped", skip
		}
		r.Cells = append(r.Cells, c)
		if skip == "" {
			jobs = append(jobs, job{row, len(r.Cells) - 1, req})
		}
	}
	for i, n := range nodes {
		t.Rows = append(t.Rows, Row{Node: n.Name})
		// kube-proxy is read from the cluster, not probed.
		kp := Cell{Check: "kube-proxy", Result: "ok", Summary: "Running"}
		if n.Facts != nil && n.Facts.KubeProxy != "" && n.Facts.KubeProxy != "Running" {
			kp = Cell{Check: "kube-proxy", Result: "failed", Verdict: diagnose.KubeProxyDown.String(), Summary: "kube-proxy on node " + n.Name + ": " + n.Facts.KubeProxy}
		}
		t.Rows[i].Cells = append(t.Rows[i].Cells, kp)
		noPod := fmt.Sprintf("no pod off the host network runs on node %s to probe from", n.Name)
		if n.Pod == nil {
			add(i, "dns", nil, noPod)
		} else {
			add(i, "dns", request(o, n, nil, nil, []string{o.ClusterName, o.OutsideName}), "")
		}
		for _, m := range nodes {
			if m.Name == n.Name {
				continue
			}
			// The node network: the path MTU and reachability between the
			// nodes' InternalIPs, both nodes' firewalls read.
			to := &collectors.Dest{Addr: m.InternalIP}
			add(i, "mtu to "+m.Name, request(o, n, &m, to, nil), "")
			// The overlay: a pod here to a pod there.
			switch {
			case n.Pod == nil:
				add(i, "overlay to "+m.Name, nil, noPod)
			case m.Pod == nil:
				add(i, "overlay to "+m.Name, nil, fmt.Sprintf("no pod off the host network runs on node %s to probe to", m.Name))
			default:
				add(i, "overlay to "+m.Name, request(o, n, &m, &collectors.Dest{Addr: m.PodIP}, nil), "")
			}
		}
	}
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, j := range jobs {
		wg.Go(func() {
			var cell Cell
			select {
			case sem <- struct{}{}:
				cell = diagnoseCell(ctx, eng, j.req)
				<-sem
			case <-ctx.Done():
				cell = Cell{Result: "skipped", Summary: "the sweep ran out of time: " + ctx.Err().Error()}
			}
			mu.Lock()
			cell.Check = t.Rows[j.row].Cells[j.cell].Check
			t.Rows[j.row].Cells[j.cell] = cell
			mu.Unlock()
		})
	}
	wg.Wait()
	return t
}

// request is one cell's question: from node n (its pod when probing the
// overlay or DNS, the node itself for the node network) to node m.
func request(o Options, n Node, m *Node, to *collectors.Dest, dns []string) *diagnose.Request {
	c := &diagnose.Cluster{}
	if o.Cluster != nil {
		cc := *o.Cluster
		cc.Service, cc.Checks = nil, nil
		c = &cc
	}
	c.SourceNode = n.Facts
	r := &diagnose.Request{Node: n.Place, To: to, DNS: dns, Cluster: c}
	pod := to == nil || m == nil || to.Addr == m.PodIP
	if pod && n.Pod != nil {
		r.Source, r.ResolvConf = *n.Pod, n.ResolvConf
		c.SourceName = n.Pod.String()
	} else {
		r.Source = n.Place
		c.SourceName = "node " + n.Name
	}
	if m != nil {
		c.PeerNode = m.Facts
		r.PeerNode = m.Place
		if pod && m.Pod != nil {
			r.Peer = *m.Pod
			c.PeerName = m.Pod.String()
		} else {
			r.Peer = m.Place
			c.PeerName = "node " + m.Name
		}
	}
	r.Question = c.SourceName
	if to != nil {
		r.Question += " to " + to.String()
	}
	if len(dns) > 0 {
		r.Question += fmt.Sprintf(" resolving %s", dns)
	}
	return r
}

func diagnoseCell(ctx context.Context, eng *diagnose.Engine, r *diagnose.Request) Cell {
	f, err := eng.Diagnose(ctx, r)
	if err != nil {
		return Cell{Result: "failed", Verdict: diagnose.Insufficient.String(), Summary: err.Error()}
	}
	if f.Verdict() == diagnose.Healthy {
		return Cell{Result: "ok", Verdict: f.Verdict().String()}
	}
	f.Raw = nil // the table keeps the diagnosis, not every dump
	return Cell{Result: "failed", Verdict: f.Verdict().String(), Summary: f.Summary, Finding: f}
}

// FailedNodes lists the nodes with a failed cell, in the table's order.
func (t *Table) FailedNodes() []string {
	var out []string
	for _, r := range t.Rows {
		if r.Failed() > 0 && !slices.Contains(out, r.Node) {
			out = append(out, r.Node)
		}
	}
	return out
}
