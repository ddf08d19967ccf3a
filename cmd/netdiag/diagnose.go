package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
)

const diagnoseUsage = `Usage: netdiag diagnose pod NAMESPACE/NAME|svc NAMESPACE/NAME|node NAME
                        [--to pod/NS/NAME:PORT|svc/NS/NAME:PORT|node/NAME:PORT|HOST:PORT] [--dns NAME]...
                        [--kubeconfig FILE] [--context NAME] [--agents port-forward|direct]
                        [--capture DURATION] [--pcap FILE] [-o text|json|markdown]
       netdiag diagnose --netns PATH [--peer-netns PATH] [--node-netns PATH]
                        [--to HOST:PORT|IP] [--dns NAME]... [--resolv-conf FILE]
                        [--capture DURATION] [--filter EXPR] [--pcap FILE]
                        [--drops auto|ebpf|tracefs|off] [-o text|json|markdown]
       netdiag diagnose --lab pod NAMESPACE/NAME|node NAME [--to pod/NS/NAME:PORT|svc/NS/NAME:PORT|host/NAME:PORT]
                        [--dns NAME]... [--capture DURATION] [--instance NAME] [-o ...]

Finds out why a pod's network is broken. It runs, inside the pod's network
namespace (--netns) and on its node, what an engineer would run by hand (ping,
a TCP connect, dig, a path-MTU probe, mtr, tcpdump, iptables-save, ip route,
ss), reads it like an engineer would, and prints one verdict of the taxonomy
with the evidence, what was ruled out and what to do.

  --netns        the source: the pod that has the problem
  --peer-netns   the destination side: its listeners, its firewall, a capture
                 at both ends (tells a closed port from a REJECT rule)
  --node-netns   the source's node: routes, NAT rules, the overlay
                 (default: this process's own namespace, read only)
  --to           what the pod fails to reach; a port makes it a TCP question;
                 IPv6 as [ADDR]:PORT; a name with both A and AAAA records
                 (and a lab pod, which has both) is probed in both families
                 and the finding says which one fails
  --dns          names the pod fails to resolve, A and AAAA (with the pod's resolv.conf:
                 /etc/netns/NAME/resolv.conf for /run/netns/NAME if present,
                 else /etc/resolv.conf; --resolv-conf overrides)
  Neither --to nor --dns: the pod checks itself (links, routes, its gateway,
  its DNS configuration, a cluster and an outside name).
  --drops        while the probes run, the kernel says why it dropped their
                 packets (NETFILTER_DROP, NO_SOCKET, IP_RPFILTER, PKT_TOO_BIG):
                 auto (eBPF on skb:kfree_skb, else tracefs), ebpf, tracefs, off.
                 It tells a closed port from a REJECT rule even without
                 --peer-netns.

A cluster's pod, Service or node: netdiag reads the cluster (as kubectl
does: --kubeconfig, --context, $KUBECONFIG), finds the nodes involved and has
each node's netdiag agent run its part, with your own credentials: the agents
ask the API server whether you may create diagnoses.netdiag.io in the pod's
namespace, so RBAC decides. --agents port-forward (the default) reaches them
through the API server; direct dials the agent pods from inside the cluster.

With --lab, names of the fault lab (netdiag lab status) replace the paths.

Exit status: 0 when a finding was produced (whatever its verdict), 2 for bad
input, 1 for an internal failure.

Examples:
  netdiag diagnose pod shop/web --to svc/shop/db:5432
  netdiag diagnose pod default/client --dns example.com --context prod
  netdiag diagnose node worker-3 --to node/worker-1:10250
  netdiag diagnose --netns /proc/4242/ns/net --to 10.244.1.7:8080
  netdiag diagnose --netns cni-3f2a --to '[fd00:10:244::7]:8080'
  netdiag diagnose --netns cni-3f2a --to web.shop.svc.cluster.local:80
  netdiag diagnose --netns cni-3f2a --dns kubernetes.default -o json
  netdiag diagnose --lab pod default/client --to svc/default/web:80
  netdiag diagnose --lab pod default/client --dns example.com --capture 3s -o markdown
`

func runDiagnose(c *cli, args []string) int {
	fs := c.newFlags("diagnose", diagnoseUsage)
	var pf probeFlags
	pf.register(fs)
	var cf clusterFlags
	cf.register(fs)
	keepTo := fs.String("store", "", "also keep the finding (and its pcap) in this store file, for 'netdiag history'")
	useLab := fs.Bool("lab", false, "resolve the fault lab's names: pod NS/NAME or node NAME, and --to pod/...|svc/...|host/...")
	inst := instanceFlag(fs)
	out := outputFlag(fs, "text", "text", "json", "markdown")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if err := checkOutput(*out, "text", "json", "markdown"); err != nil {
		return c.usageError("diagnose", "%v", err)
	}
	if pf.capture < 0 || pf.capture > collectors.MaxCaptureDuration || (pf.capture > 0 && pf.capture < 100*time.Millisecond) {
		return c.usageError("diagnose", "--capture %s: give a duration between 1s and %s, e.g. 3s", pf.capture, collectors.MaxCaptureDuration)
	}
	for _, n := range pf.dns {
		if err := collectors.ValidateName(n); err != nil {
			return c.usageError("diagnose", "--dns: %v", err)
		}
	}
	if err := checkDrops(pf.drops); err != nil {
		return c.usageError("diagnose", "%v", err)
	}
	if *keepTo != "" {
		if st, err := os.Stat(filepath.Dir(*keepTo)); err != nil || !st.IsDir() {
			return c.usageError("diagnose", "--store %s: its folder does not exist", *keepTo)
		}
	}
	var req *diagnose.Request
	var runner diagnose.Runner = diagnose.LocalRunner{}
	if !*useLab && pf.netns == "" && len(pos) > 0 {
		// A cluster's pod, Service or node: the nodes' agents run it.
		if pf.peer != "" || pf.node != "" || pf.resolvConf != "" {
			return c.usageError("diagnose", "--peer-netns, --node-netns and --resolv-conf are for --netns; for a cluster target the agents find the namespaces")
		}
		kind, name, err := splitTarget(pos)
		if err != nil {
			return c.usageError("diagnose", "%v", err)
		}
		if err := pf.checkFiles(); err != nil {
			return c.usageError("diagnose", "%v", err)
		}
		ctx, cancel := signalContext()
		defer cancel()
		r, run, done, err := clusterRun(ctx, c, &cf, kind, name, pf.to, pf.dns)
		if err != nil {
			if isUsage(err) {
				return c.usageError("diagnose", "%v", err)
			}
			return c.failure("diagnose", err)
		}
		defer done()
		r.Capture, r.Filter, r.Pcap, r.Iface, r.Payload, r.Drops = pf.capture, pf.filter, pf.pcap, pf.iface, pf.payload, pf.drops
		if err := r.Validate(); err != nil {
			return c.usageError("diagnose", "%v", err)
		}
		return c.finding(ctx, &diagnose.Engine{Runner: run, Log: c.log}, r, *out, *keepTo, kind+" "+name)
	}
	if *useLab {
		if len(pos) != 2 {
			return c.usageError("diagnose", "--lab needs a target: %s", labview.TargetForms)
		}
		st, err := lab.GetStatus(*inst)
		if err != nil {
			return c.usageError("diagnose", "%v", err)
		}
		req, err = labview.Request(st, pos[0], pos[1], pf.to, pf.dns)
		if err != nil {
			return c.usageError("diagnose", "%v", err)
		}
	} else {
		if len(pos) > 0 {
			return c.usageError("diagnose", "unexpected argument %q (lab names need --lab; everything else is a flag)", pos[0])
		}
		if pf.netns == "" {
			return c.usageError("diagnose", "give a target: pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME (a cluster, through its agents), --netns PATH (a namespace of this machine), or --lab pod NS/NAME")
		}
		req = &diagnose.Request{Source: diagnose.NetnsPlace(pf.netns), ResolvConf: pf.resolvConf, DNS: pf.dns}
		if pf.peer != "" {
			req.Peer = diagnose.NetnsPlace(pf.peer)
		}
		req.Node = diagnose.NetnsPlace("/proc/self/ns/net")
		if pf.node != "" {
			req.Node = diagnose.NetnsPlace(pf.node)
		}
		req.Question = "netns " + pf.netns
		if pf.to != "" {
			d, err := collectors.ParseDest(pf.to)
			if err != nil {
				return c.usageError("diagnose", "--to: %v", err)
			}
			req.To = d
			req.Question += " to " + pf.to
		}
		if len(pf.dns) > 0 {
			req.Question += " resolving " + strings.Join(pf.dns, ", ")
		}
	}
	req.Capture, req.Filter, req.Pcap, req.Iface, req.Payload = pf.capture, pf.filter, pf.pcap, pf.iface, pf.payload
	req.Drops = pf.drops
	if req.ResolvConf == "" && pf.resolvConf != "" {
		req.ResolvConf = pf.resolvConf
	}
	// Every namespace must exist before anything runs.
	for _, x := range []struct{ flag, path string }{{"--netns", req.Source.Netns}, {"--peer-netns", req.Peer.Netns}, {"--node-netns", req.Node.Netns}, {"peer node", req.PeerNode.Netns}} {
		if x.path == "" {
			continue
		}
		n, err := netns.Open(x.path)
		if err != nil {
			return c.usageError("diagnose", "%s: %v", x.flag, err)
		}
		n.Close()
	}
	// Files the flags name are checked before anything runs: a resolv.conf
	// that is no such file, a pcap that cannot be written.
	if err := pf.checkFiles(); err != nil {
		return c.usageError("diagnose", "%v", err)
	}
	if req.ResolvConf != "" && req.ResolvConf != pf.resolvConf {
		if _, err := collectors.ReadResolvConf(req.ResolvConf); err != nil {
			return c.usageError("diagnose", "%v", err)
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	if req.Capture > 0 {
		if _, err := collectors.CompileFilter(ctx, req.Filter, collectors.HeadersSnapLen); err != nil {
			return c.usageError("diagnose", "--filter: %v", err)
		}
	}
	if req.To != nil && !req.To.Addr.IsValid() {
		// A name resolves the way the pod would resolve it; with both A
		// and AAAA records, both families are probed.
		src, err := netns.Open(req.Source.Netns)
		if err != nil {
			return c.usageError("diagnose", "--netns: %v", err)
		}
		rc := req.ResolvConf
		if rc == "" {
			rc = collectors.DefaultResolvConf(src.Path())
		}
		addrs, err := collectors.ResolveName(ctx, src, rc, req.To.Name, time.Second)
		src.Close()
		if err != nil {
			return c.usageError("diagnose", "--to: %v", err)
		}
		req.To.Addr = addrs[0]
		for _, a := range addrs[1:] {
			if a.Is4() != addrs[0].Is4() {
				req.AltTo = &collectors.Dest{Addr: a, Port: req.To.Port, Name: req.To.Name}
				break
			}
		}
	}
	if err := req.Validate(); err != nil {
		return c.usageError("diagnose", "%v", err)
	}
	if !needRoot(c, "diagnose") {
		return exitInternal
	}
	target := "netns " + pf.netns
	if *useLab {
		target = pos[0] + " " + pos[1]
	}
	return c.finding(ctx, &diagnose.Engine{Runner: runner, Log: c.log}, req, *out, *keepTo, target)
}

// finding runs the diagnosis and prints it.
func (c *cli) finding(ctx context.Context, eng *diagnose.Engine, req *diagnose.Request, out, keepTo, target string) int {
	f, err := eng.Diagnose(ctx, req)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return c.usageError("diagnose", "%v", err)
		}
		return c.failure("diagnose", err)
	}
	switch out {
	case "json":
		if err := f.WriteJSON(c.stdout, true); err != nil {
			return c.failure("diagnose", err)
		}
	case "markdown":
		f.WriteMarkdown(c.stdout)
	default:
		f.WriteText(c.stdout)
	}
	if keepTo != "" {
		c.keep(ctx, keepTo, target, req.Source.Node, f)
	}
	return exitOK
}
