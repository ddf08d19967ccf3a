package kubeview

import (
	"slices"
	"sort"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/sweep"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// SweepNodes are the cluster's nodes for a sweep, in name order: each with
// its InternalIP, its facts, and a pod to probe from: a Running, ready pod
// off the host network, outside kube-system when there is one, the oldest
// (the least likely to be going away; then by name, so that a sweep always
// picks the same),
// the agents' own and kube-proxy's aside. It also gives the cluster's
// shared facts (the DNS Service, the domain).
func (v *View) SweepNodes() ([]sweep.Node, *diagnose.Cluster, error) {
	if err := v.ready(); err != nil {
		return nil, nil, err
	}
	names := v.nodeIdx.ListKeys()
	sort.Strings(names)
	var out []sweep.Node
	for _, name := range names {
		n, err := v.Node(name)
		if err != nil {
			continue
		}
		ip := primary(n.InternalIPs)
		if !ip.IsValid() {
			continue // a node without an InternalIP cannot be swept
		}
		sn := sweep.Node{Name: n.Name, InternalIP: ip, Place: NodePlace(n.Name), Facts: clusterNode(n)}
		pods, _ := v.PodsOnNode(n.Name)
		pods = slices.DeleteFunc(pods, func(p *Pod) bool {
			return p.HostNetwork || p.Phase != string(corev1.PodRunning) || !p.Ready || p.Terminating || len(p.IPs) == 0 || v.isRole(p)
		})
		sort.SliceStable(pods, func(i, j int) bool {
			// A workload's view first: kube-system's pods (CoreDNS, which
			// would ask its own Service) only when nothing else runs.
			if si, sj := pods[i].Namespace == "kube-system", pods[j].Namespace == "kube-system"; si != sj {
				return sj
			}
			if !pods[i].Created.Equal(pods[j].Created) {
				return pods[i].Created.Before(pods[j].Created)
			}
			return pods[i].Key() < pods[j].Key()
		})
		if len(pods) > 0 {
			p := pods[0]
			pl := End{Node: n.Name, Pod: p}.Place()
			sn.Pod, sn.PodIP = &pl, pl.Pod.IP
		}
		out = append(out, sn)
	}
	c := &diagnose.Cluster{ClusterDomain: v.opts.ClusterDomain, APIName: "kubernetes.default.svc." + v.opts.ClusterDomain}
	if dns, err := v.dnsService(); err == nil && dns != nil {
		sp := dnsPort(dns)
		bs := dns.Backends(sp)
		c.DNS = clusterService(dns, sp, bs, chooseBackend(bs, ""), primary(dns.ClusterIPs))
	}
	return out, c, nil
}

// isRole reports whether a pod is netdiag's agent or kube-proxy: a sweep
// probes from the workloads' side.
func (v *View) isRole(p *Pod) bool {
	set := labels.Set(p.Labels)
	return v.agentSel != nil && p.Namespace == v.opts.AgentNamespace && v.agentSel.Matches(set) ||
		v.kubeProxySel != nil && p.Namespace == v.opts.KubeProxyNamespace && v.kubeProxySel.Matches(set)
}
