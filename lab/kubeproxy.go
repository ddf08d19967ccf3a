package lab

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
)

// iptablesTables are written in full on every apply, so a table not mentioned
// cannot keep a fault's leftovers.
var iptablesTables = []string{"raw", "mangle", "nat", "filter"}

// BuiltinChains are the chains the kernel gives each iptables table.
var BuiltinChains = map[string][]string{
	"raw":    {"PREROUTING", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
}

// renderIptables returns iptables-restore input for a namespace: for a node,
// the rules kube-proxy (iptables mode) and flannel would write, then the extra
// rules of faults.
func (d *Desired) renderIptables(c *NSConfig) string { return d.renderTables(c, false) }

// renderIp6tables is renderIptables for ip6tables-restore: kube-proxy's and
// flannel's IPv6 rules and the faults' extra IPv6 rules.
func (d *Desired) renderIp6tables(c *NSConfig) string { return d.renderTables(c, true) }

func (d *Desired) renderTables(c *NSConfig, v6 bool) string {
	rules := map[string][]string{}
	chains := map[string][]string{}
	if c.Filter.Node != "" {
		n, _ := d.Lab.Node(c.Filter.Node)
		// kube-proxy inserts its jumps first (-I), so they precede flannel's.
		if d.KubeProxy[n.Name] {
			d.kubeProxyRules(n, v6, rules, chains)
		}
		d.flannelRules(n, v6, rules, chains)
	}
	extra := c.Filter.Extra
	if v6 {
		extra = c.Filter.Extra6
	}
	var b strings.Builder
	for _, t := range iptablesTables {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, ch := range BuiltinChains[t] {
			fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", ch)
		}
		seen := map[string]bool{}
		for _, ch := range chains[t] {
			if !seen[ch] {
				fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
				seen[ch] = true
			}
		}
		for _, r := range rules[t] {
			b.WriteString(r + "\n")
		}
		for _, r := range extra[t] {
			b.WriteString(r + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// flannelRules are flanneld's masquerade and forward rules: pod traffic leaving
// the cluster network is masqueraded to the node's address. flanneld writes
// the same rules with ip6tables for the IPv6 cluster network; the router
// knows no pod address of either family.
func (d *Desired) flannelRules(n *Node, v6 bool, rules, chains map[string][]string) {
	cc, pc, multicast := d.Lab.ClusterCIDR, n.PodCIDR, "224.0.0.0/4"
	if v6 {
		cc, pc, multicast = d.Lab.ClusterCIDR6, n.PodCIDR6, "ff00::/8"
	}
	chains["nat"] = append(chains["nat"], "FLANNEL-POSTRTG")
	chains["filter"] = append(chains["filter"], "FLANNEL-FWD")
	c := `-m comment --comment "flanneld masq"`
	rules["nat"] = append(rules["nat"],
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 `+c+` -j RETURN`,
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s -d %s %s -j RETURN`, pc, cc, c),
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s -d %s %s -j RETURN`, cc, pc, c),
		fmt.Sprintf(`-A FLANNEL-POSTRTG ! -s %s -d %s %s -j RETURN`, cc, pc, c),
		fmt.Sprintf(`-A FLANNEL-POSTRTG -s %s ! -d %s %s -j MASQUERADE --random-fully`, cc, multicast, c),
		fmt.Sprintf(`-A FLANNEL-POSTRTG ! -s %s -d %s %s -j MASQUERADE --random-fully`, cc, cc, c),
	)
	f := `-m comment --comment "flanneld forward"`
	rules["filter"] = append(rules["filter"],
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		fmt.Sprintf(`-A FLANNEL-FWD -s %s %s -j ACCEPT`, cc, f),
		fmt.Sprintf(`-A FLANNEL-FWD -d %s %s -j ACCEPT`, cc, f),
	)
}

// kubeProxyRules are the chains kube-proxy writes in iptables mode. In a
// dual-stack cluster kube-proxy runs a proxier per family; the lab's Services
// are IPv4 single-stack, so the IPv6 one writes its chains and jumps but no
// Service rules.
func (d *Desired) kubeProxyRules(n *Node, v6 bool, rules, chains map[string][]string) {
	chains["nat"] = append(chains["nat"], "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
	chains["filter"] = append(chains["filter"], "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS")
	nat := []string{
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		`-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000`,
		`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`,
		`-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0`,
		`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
	}
	filter := []string{
		`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
		`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`,
		`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`,
		`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT`,
		`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
	}
	skip := d.NoServiceRules[n.Name]
	for _, svc := range d.Lab.Services {
		if v6 || skip[svc.Key()] {
			continue
		}
		for _, sp := range svc.Ports {
			spn := fmt.Sprintf("%s/%s:%s", svc.Namespace, svc.Name, sp.Name)
			proto := strings.ToLower(sp.Protocol)
			var ready []Endpoint
			for _, ep := range svc.Endpoints {
				if ep.Pod == "" || !d.NotReady[ep.Pod] {
					ready = append(ready, ep)
				}
			}
			if len(ready) == 0 {
				filter = append(filter, fmt.Sprintf(
					`-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment "%s has no endpoints" -m %s --dport %d -j REJECT --reject-with icmp-port-unreachable`,
					svc.ClusterIP, proto, spn, proto, sp.Port))
				continue
			}
			svcChain := "KUBE-SVC-" + portProtoHash(spn, proto)
			chains["nat"] = append(chains["nat"], svcChain)
			nat = append(nat,
				fmt.Sprintf(`-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment "%s cluster IP" -m %s --dport %d -j %s`,
					svc.ClusterIP, proto, spn, proto, sp.Port, svcChain),
				fmt.Sprintf(`-A %s ! -s %s -d %s/32 -p %s -m comment --comment "%s cluster IP" -m %s --dport %d -j KUBE-MARK-MASQ`,
					svcChain, d.Lab.ClusterCIDR, svc.ClusterIP, proto, spn, proto, sp.Port),
			)
			for i, ep := range ready {
				epAddr := hostPort(ep.IP, sp.TargetPort)
				sepChain := "KUBE-SEP-" + portProtoHash(spn+epAddr, proto)
				chains["nat"] = append(chains["nat"], sepChain)
				prob := ""
				if left := len(ready) - i; left > 1 {
					prob = fmt.Sprintf(" -m statistic --mode random --probability %.11f", 1/float64(left))
				}
				nat = append(nat,
					fmt.Sprintf(`-A %s -m comment --comment "%s -> %s"%s -j %s`, svcChain, spn, epAddr, prob, sepChain),
					fmt.Sprintf(`-A %s -s %s/32 -m comment --comment "%s" -j KUBE-MARK-MASQ`, sepChain, ep.IP, spn),
					fmt.Sprintf(`-A %s -p %s -m comment --comment "%s" -m %s -j DNAT --to-destination %s`, sepChain, proto, spn, proto, epAddr),
				)
			}
		}
	}
	nat = append(nat, `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`)
	rules["nat"] = append(rules["nat"], nat...)
	rules["filter"] = append(rules["filter"], filter...)
}

// portProtoHash names chains as kube-proxy does: the first 16 characters of
// the base32 SHA-256 of the service port name and protocol.
func portProtoHash(s, proto string) string {
	h := sha256.Sum256([]byte(s + proto))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}
