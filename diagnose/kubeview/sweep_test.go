package kubeview

import (
	"testing"
)

// TestSweepNodes: every node with its InternalIP and a workload pod to
// probe from (never the agent, kube-proxy or a host-network pod; a ready
// one; the oldest), and none for a node that runs no workload.
func TestSweepNodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c cluster)
		want   map[string]string // node: pod probed from ("" for none)
	}{
		{"base", func(cluster) {}, map[string]string{"node-a": "default/api", "node-b": "default/client"}},
		{"a pod not ready is passed over", func(c cluster) { notReady(c.pod("default/client")) }, map[string]string{"node-a": "default/api", "node-b": "kube-system/coredns-1"}},
		{"a node with only the agent and kube-proxy", func(c cluster) {
			notReady(c.pod("default/client"))
			notReady(c.pod("kube-system/coredns-1"))
		}, map[string]string{"node-a": "default/api", "node-b": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := baseCluster()
			tc.change(c)
			v, _ := startView(t, c.objects(), Options{})
			nodes, cl, err := v.SweepNodes()
			if err != nil {
				t.Fatal(err)
			}
			if cl.DNS == nil || cl.ClusterDomain == "" {
				t.Errorf("shared facts %+v: want the DNS Service and the domain", cl)
			}
			if len(nodes) != len(tc.want) {
				t.Fatalf("%d nodes, want %d", len(nodes), len(tc.want))
			}
			for _, n := range nodes {
				got := ""
				if n.Pod != nil {
					got = n.Pod.Pod.Key()
					if !n.PodIP.IsValid() || n.Pod.Node != n.Name {
						t.Errorf("%s: pod %s without its IP or on another node", n.Name, got)
					}
				}
				if got != tc.want[n.Name] {
					t.Errorf("%s: probes from %q, want %q", n.Name, got, tc.want[n.Name])
				}
				if !n.InternalIP.Is4() || n.Facts == nil || n.Facts.Name != n.Name || n.Place.Node != n.Name || n.Place.Pod != nil {
					t.Errorf("%s: %+v", n.Name, n)
				}
			}
		})
	}
}
