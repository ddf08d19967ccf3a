// Package labview is the fault lab's Kubernetes view: it turns lab names
// ("pod default/client", "svc/default/web:80") into a diagnose.Request with
// the namespaces of both ends and their nodes, and the cluster facts (ready
// endpoints, kube-proxy's state, the DNS Service) the network cannot show.
// The Kubernetes view of a real cluster fills the same Request from the API.
package labview

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/lab"
)

// Accepted forms, for error messages.
const (
	TargetForms = "pod NAMESPACE/NAME or node NAME"
	ToForms     = "pod/NAMESPACE/NAME:PORT, svc/NAMESPACE/NAME:PORT, host/NAME:PORT (router, ext, mgmt), or IP[:PORT]"
)

// Request builds the request for a question asked of the lab.
func Request(st *lab.Status, kind, name, to string, dns []string) (*diagnose.Request, error) {
	if st.Phase != "up" {
		return nil, fmt.Errorf("lab %q is %s; start it with `netdiag lab up`", st.Instance, st.Phase)
	}
	c := Cluster(st)
	r := &diagnose.Request{DNS: dns, Cluster: c}
	switch kind {
	case "pod":
		p, err := st.Pod(name)
		if err != nil {
			return nil, fmt.Errorf("%w (accepted: %s)", err, TargetForms)
		}
		n, _ := st.Node(p.Node)
		r.Source, r.Node, r.ResolvConf = podPlace(p), nodePlace(n), p.ResolvConf
		c.SourceNode, c.SourceName = node(n), "pod "+p.Key()
	case "node":
		n, err := st.Node(name)
		if err != nil {
			return nil, fmt.Errorf("%w (accepted: %s)", err, TargetForms)
		}
		r.Source, r.Node = nodePlace(n), nodePlace(n)
		c.SourceNode, c.SourceName = node(n), "node "+n.Name
	default:
		return nil, fmt.Errorf("unknown target %q (accepted: %s)", kind, TargetForms)
	}
	r.Question = fmt.Sprintf("%s %s", kind, name)
	if to != "" {
		if err := resolveTo(st, r, to); err != nil {
			return nil, err
		}
		r.Question += " to " + to
	}
	if len(dns) > 0 {
		r.Question += " resolving " + strings.Join(dns, ", ")
	}
	return r, nil
}

func resolveTo(st *lab.Status, r *diagnose.Request, to string) error {
	c := r.Cluster
	kind, rest, ok := strings.Cut(to, "/")
	if !ok {
		d, err := collectors.ParseDest(to)
		if err != nil || !d.Addr.IsValid() {
			return fmt.Errorf("bad --to %q (accepted: %s)", to, ToForms)
		}
		r.To = d
		return nil
	}
	target, portStr, hasPort := cutLast(rest, ":")
	port := 0
	if hasPort {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("bad port %q in --to %q (accepted: %s)", portStr, to, ToForms)
		}
		port = p
	}
	switch kind {
	case "pod":
		p, err := st.Pod(target)
		if err != nil {
			return fmt.Errorf("--to: %w (accepted: %s)", err, ToForms)
		}
		r.To = &collectors.Dest{Addr: netip.MustParseAddr(p.IP), Port: uint16(port)}
		r.AltTo = alt(p.IP6, port)
		r.Peer, c.PeerName = podPlace(p), "pod "+p.Key()
		n, _ := st.Node(p.Node)
		r.PeerNode, c.PeerNode = nodePlace(n), node(n)
	case "svc":
		s, err := st.Service(target)
		if err != nil {
			return fmt.Errorf("--to: %w (accepted: %s)", err, ToForms)
		}
		if !hasPort {
			var ports []string
			for _, sp := range s.Ports {
				ports = append(ports, strconv.Itoa(sp.Port))
			}
			return fmt.Errorf("--to %s: a Service needs its port (ports: %s), e.g. svc/%s:%s", to, strings.Join(ports, ", "), s.Key(), ports[0])
		}
		c.Service = service(s, port)
		if c.Service == nil {
			return fmt.Errorf("--to %s: Service %s has no port %d", to, s.Key(), port)
		}
		r.To = &collectors.Dest{Addr: netip.MustParseAddr(s.ClusterIP), Port: uint16(port)}
		// The destination side is the Service's first backend pod.
		for _, e := range s.Endpoints {
			if e.Pod == "" {
				continue
			}
			p, err := st.Pod(e.Pod)
			if err != nil {
				continue
			}
			r.Peer, c.PeerName = podPlace(p), "pod "+p.Key()
			n, _ := st.Node(p.Node)
			r.PeerNode, c.PeerNode = nodePlace(n), node(n)
			break
		}
	case "host":
		h, err := st.Host(target)
		if err != nil {
			return fmt.Errorf("--to: %w (accepted: %s)", err, ToForms)
		}
		r.To = &collectors.Dest{Addr: netip.MustParseAddr(h.IP), Port: uint16(port)}
		r.AltTo = alt(h.IP6, port)
		r.Peer, c.PeerName = diagnose.NetnsPlace(h.NetnsPath), "host "+h.Name
	default:
		return fmt.Errorf("bad --to %q (accepted: %s)", to, ToForms)
	}
	return nil
}

// alt is a dual-stack destination's IPv6 address, probed beside its IPv4
// one as Kubernetes lists both in a pod's podIPs.
func alt(ip6 string, port int) *collectors.Dest {
	a, err := netip.ParseAddr(ip6)
	if err != nil {
		return nil
	}
	return &collectors.Dest{Addr: a, Port: uint16(port)}
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// Cluster is the lab's facts every question shares: its ranges, its
// domain, its DNS Service.
func Cluster(st *lab.Status) *diagnose.Cluster {
	c := &diagnose.Cluster{ClusterCIDR: st.ClusterCIDR, ServiceCIDR: st.ServiceCIDR, ClusterDomain: st.ClusterDomain,
		APIName: "kubernetes.default.svc." + st.ClusterDomain}
	if s, err := st.Service(st.DNSService); err == nil {
		c.DNS = service(s, 0)
	}
	return c
}

// SweepNodes are the lab's nodes for a sweep, each with a pod of its own
// to probe from (the first lab pod on it).
func SweepNodes(st *lab.Status) []sweep.Node {
	var out []sweep.Node
	for i := range st.Nodes {
		n := &st.Nodes[i]
		sn := sweep.Node{Name: n.Name, InternalIP: netip.MustParseAddr(n.InternalIP), Place: nodePlace(n), Facts: node(n)}
		for j := range st.Pods {
			p := &st.Pods[j]
			if p.Node == n.Name {
				pl := podPlace(p)
				sn.Pod, sn.PodIP, sn.ResolvConf = &pl, pl.Pod.IP, p.ResolvConf
				break
			}
		}
		out = append(out, sn)
	}
	return out
}

// podPlace is a lab pod: on its node, found there by its IP (a lab pod is a
// bare namespace, which no container runtime knows), or opened by path.
func podPlace(p *lab.Pod) diagnose.Place {
	ip, _ := netip.ParseAddr(p.IP)
	return diagnose.Place{Node: p.Node, Pod: &diagnose.Pod{Namespace: p.Namespace, Name: p.Name, IP: ip}, Netns: p.NetnsPath}
}

func nodePlace(n *lab.Node) diagnose.Place {
	return diagnose.Place{Node: n.Name, Netns: n.NetnsPath}
}

func node(n *lab.Node) *diagnose.Node {
	return &diagnose.Node{Name: n.Name, InternalIP: n.InternalIP, PodCIDR: n.PodCIDR, KubeProxy: n.KubeProxy,
		OverlayDevice: n.Overlay.Device, OverlayPort: n.Overlay.Port}
}

func service(s *lab.Service, port int) *diagnose.Service {
	out := &diagnose.Service{Name: s.Key(), ClusterIP: s.ClusterIP}
	found := false
	for _, sp := range s.Ports {
		if port == 0 || sp.Port == port {
			out.Port, out.Protocol, out.TargetPort = sp.Port, sp.Protocol, sp.TargetPort
			found = true
			break
		}
	}
	if !found {
		return nil
	}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, diagnose.Endpoint{IP: e.IP, Pod: e.Pod, Ready: e.Ready})
	}
	return out
}

// Sweep checks every node of the lab in this process: the digest's sweep on
// the lab.
func Sweep(ctx context.Context, st *lab.Status, log *slog.Logger) *sweep.Table {
	eng := &diagnose.Engine{Runner: diagnose.LocalRunner{}, Log: log}
	return sweep.Run(ctx, eng, SweepNodes(st), sweep.Options{Cluster: Cluster(st), OutsideName: st.OutsideName})
}
