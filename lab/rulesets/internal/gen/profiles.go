// Package gen generates the rule-set dumps of lab/rulesets: anonymised node
// firewalls shaped like real ones (kube-proxy, Calico, Docker, a NetworkPolicy
// controller), each carrying the lab's own rules for the node it is meant
// for, so that loading one into a lab node keeps the lab working.
package gen

import (
	"fmt"
	"hash/fnv"

	"github.com/netdiag/netdiag/lab"
)

// Profile describes one dump.
type Profile struct {
	Name    string
	Node    string
	Format  string // "iptables" (iptables-save -c) or "nft" (nft -j list ruleset)
	File    string
	Ipsets  string // `ipset save` file the dump needs, or ""
	Summary string
}

// Node is the lab node every profile is made for: the one with the client
// and CoreDNS, so that its firewall is on most of the lab's paths.
const Node = "node-b"

// Profiles lists every profile, in a stable order.
func Profiles() []Profile {
	mk := func(name, format, summary string, sets bool) Profile {
		p := Profile{Name: name, Node: Node, Format: format, Summary: summary}
		if format == "nft" {
			p.File = name + "." + Node + ".nft.json"
		} else {
			p.File = name + "." + Node + ".iptables"
		}
		if sets {
			p.Ipsets = name + "." + Node + ".ipset"
		}
		return p
	}
	return []Profile{
		mk("kube-proxy-1000", "iptables", "kube-proxy iptables mode: 1,000 Services, 5,000 endpoints, NodePorts, LoadBalancers (some externalTrafficPolicy Local, some with source ranges), external IPs, Services without endpoints", false),
		mk("calico", "iptables", "Calico felix beside flannel: cali* workload dispatch, policy and profile chains, ipsets, mark bits, raw rpfilter, outgoing NAT", true),
		mk("docker", "iptables", "Docker beside flannel: DOCKER, DOCKER-USER, isolation stages, published ports, FORWARD policy DROP balanced by flannel's ACCEPTs", false),
		mk("netpol", "iptables", "kube-router-style NetworkPolicy controller: KUBE-ROUTER-*, per-pod KUBE-POD-FW chains with physdev, KUBE-NWPLCY chains, ipsets, default DROP", true),
		mk("big", "iptables", "about 20,000 rules: kube-proxy with 900 Services and 4,400 endpoints, Calico and Docker on one node, for tracer benchmarks", true),
		mk("kube-proxy-nft", "nft", "kube-proxy nftables mode (table ip kube-proxy: service-ips verdict maps, chains per Service and endpoint) and flannel's nftables mode", false),
	}
}

// File is one generated file.
type File struct {
	Name string
	Data []byte
}

// Stats counts what a profile holds, for tests and the package docs.
type Stats struct {
	Rules     map[string]int // per iptables table; "nft" for nftables rules
	Services  int
	Endpoints int
	Ipsets    int
	Members   int
}

// Generate renders every profile for the lab l (use lab.New with any
// instance: the addresses do not depend on it).
func Generate(l *lab.Lab) ([]File, map[string]Stats, error) {
	node, err := l.Node(Node)
	if err != nil {
		return nil, nil, err
	}
	var files []File
	stats := map[string]Stats{}
	for _, p := range Profiles() {
		// Seeded by name, so adding a profile leaves the others as they are.
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		seed := h.Sum64()
		st := Stats{Rules: map[string]int{}}
		if p.Format == "nft" {
			svcs, err := buildCluster(l, node, clusterSpec{services: 160, endpoints: 640, seed: seed})
			if err != nil {
				return nil, nil, fmt.Errorf("profile %s: %w", p.Name, err)
			}
			rs := &nftRuleset{}
			kubeProxyNft(rs, svcs, l.ClusterCIDR, l.ServiceCIDR, node.InternalIP)
			flannelNft(rs, l.ClusterCIDR, node.PodCIDR)
			_, _, st.Rules["nft"] = rs.counts()
			st.Services, st.Endpoints = len(svcs), endpointCount(svcs)
			files = append(files, File{p.File, []byte(rs.json())})
			stats[p.Name] = st
			continue
		}
		ipt := newIptables(seed)
		sets := newIpsets()
		var svcs []*service
		cluster := func(n, eps int) error {
			svcs, err = buildCluster(l, node, clusterSpec{services: n, endpoints: eps, seed: seed + 1})
			return err
		}
		// Owners in the order their rules end up in the built-in chains:
		// whoever inserts at the top last comes first.
		switch p.Name {
		case "kube-proxy-1000":
			if err := cluster(1000, 5000); err != nil {
				return nil, nil, err
			}
			kubeProxyIptables(ipt, svcs, l.ClusterCIDR)
			flannelIptables(ipt, l.ClusterCIDR, node.PodCIDR)
		case "calico":
			if err := cluster(0, 0); err != nil {
				return nil, nil, err
			}
			calico(ipt, sets, calicoSpec{workloads: 40, policies: 30, seed: seed + 2}, node.InternalIP)
			kubeProxyIptables(ipt, svcs, l.ClusterCIDR)
			flannelIptables(ipt, l.ClusterCIDR, node.PodCIDR)
			calicoTail(ipt)
		case "docker":
			if err := cluster(0, 0); err != nil {
				return nil, nil, err
			}
			docker(ipt)
			kubeProxyIptables(ipt, svcs, l.ClusterCIDR)
			flannelIptables(ipt, l.ClusterCIDR, node.PodCIDR)
		case "netpol":
			if err := cluster(0, 0); err != nil {
				return nil, nil, err
			}
			kubeRouter(ipt, sets, netpolSpec{pods: 40, policies: 30, seed: seed + 3}, node.PodCIDR, l.ServiceCIDR)
			kubeProxyIptables(ipt, svcs, l.ClusterCIDR)
			flannelIptables(ipt, l.ClusterCIDR, node.PodCIDR)
		case "big":
			if err := cluster(900, 4400); err != nil {
				return nil, nil, err
			}
			calico(ipt, sets, calicoSpec{workloads: 60, policies: 60, seed: seed + 2}, node.InternalIP)
			docker(ipt)
			kubeProxyIptables(ipt, svcs, l.ClusterCIDR)
			flannelIptables(ipt, l.ClusterCIDR, node.PodCIDR)
			calicoTail(ipt)
		default:
			return nil, nil, fmt.Errorf("profile %s has no recipe", p.Name)
		}
		st.Rules = ipt.ruleCount()
		st.Services, st.Endpoints = len(svcs), endpointCount(svcs)
		st.Ipsets, st.Members = len(sets.sets), sets.memberCount()
		files = append(files, File{p.File, []byte(ipt.save())})
		if p.Ipsets != "" {
			files = append(files, File{p.Ipsets, []byte(sets.save())})
		}
		stats[p.Name] = st
	}
	return files, stats, nil
}
