package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
)

const collectUsage = `Usage: netdiag collect --netns PATH [--peer-netns PATH] [--node-netns PATH]
                       [--collector NAME]... [--to HOST:PORT|IP] [--dns NAME]...
                       [--resolv-conf FILE] [--capture DURATION] [--filter EXPR]
                       [--pcap FILE] [--iface NAME] [--payload]
                       [--drops auto|ebpf|tracefs|off] [-o json|text]

Runs collectors inside network namespaces and prints the raw evidence: what
ip, ss, sysctl, iptables-save, nft, ipvsadm, ping, paping, dig, tracepath,
mtr and tcpdump would show, typed. Useful on a node by hand; 'netdiag
diagnose' turns the same evidence into a verdict.

--netns is the source (the pod): /run/netns/NAME, a bare NAME, or
/proc/PID/ns/net. --peer-netns is the destination side, --node-netns the
source's node. Probes (ping, tcp, pmtu, hops, dns) run from the source only.

Without --collector, every collector that applies runs: the dumps always,
ping/pmtu/hops with --to, tcp with --to HOST:PORT, dns with --dns, capture
with --capture, and drops around any probe (the kernel's reasons for
dropping the probes' packets; --drops off leaves it out).

Collectors:
%s
Examples:
  netdiag collect --netns ndl-demo-default-client --to 198.19.1.10:8080
  netdiag collect --netns /proc/4242/ns/net --dns kubernetes.default --collector dns --collector resolv
  netdiag collect --netns ndl-demo-default-client --to 198.19.1.10:8080 --capture 3s --pcap /tmp/web.pcap
  netdiag collect --netns ndl-demo-default-client --to 198.19.1.10:8080 --collector tcp --collector drops
`

func collectorList() string {
	var b strings.Builder
	for _, c := range collectors.List() {
		fmt.Fprintf(&b, "  %-11s %s\n", c.Name, c.Help)
	}
	return b.String()
}

// probeFlags are the flags collect and diagnose share.
type probeFlags struct {
	netns, peer, node   string
	to, resolvConf      string
	dns                 stringList
	capture             time.Duration
	filter, pcap, iface string
	payload             bool
	drops               string
}

func (f *probeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.netns, "netns", "", "source network namespace (the pod): /run/netns/NAME, NAME or /proc/PID/ns/net")
	fs.StringVar(&f.peer, "peer-netns", "", "destination-side namespace, for its listeners, firewall and a capture")
	fs.StringVar(&f.node, "node-netns", "", "the source's node namespace, for routes, NAT rules and the overlay")
	fs.StringVar(&f.to, "to", "", "probe destination: IP, IP:PORT or NAME:PORT (names resolve through the pod's DNS)")
	fs.Var(&f.dns, "dns", "name to resolve with the pod's resolv.conf (repeatable)")
	fs.StringVar(&f.resolvConf, "resolv-conf", "", "the pod's resolv.conf (default /etc/netns/NAME/resolv.conf, else /etc/resolv.conf)")
	fs.DurationVar(&f.capture, "capture", 0, "capture packets for this long around the probes (e.g. 3s; at most 5m)")
	fs.StringVar(&f.filter, "filter", "", "capture filter in tcpdump syntax (e.g. 'tcp port 8080')")
	fs.StringVar(&f.pcap, "pcap", "", "write the capture to this file (default a new file in the temp dir)")
	fs.StringVar(&f.iface, "iface", "", "capture interface (default the route's device towards --to, else eth0)")
	fs.BoolVar(&f.payload, "payload", false, "capture whole packets, not headers only")
	fs.StringVar(&f.drops, "drops", "auto", "how to read the kernel's drop reasons for the probes' packets: auto (eBPF, else tracefs), ebpf, tracefs, off")
}

// checkDrops validates --drops.
func checkDrops(v string) error {
	switch v {
	case "auto", "ebpf", "tracefs", "off":
		return nil
	}
	return fmt.Errorf("--drops %q: accepted: auto (eBPF, else tracefs), ebpf, tracefs, off", v)
}

// checkFiles checks the files the flags name before anything runs: the
// resolv.conf must be one (a regular file of sane size, so /dev/zero or a
// FIFO is refused), and the pcap must be writable where it is asked for.
func (f *probeFlags) checkFiles() error {
	if f.resolvConf != "" {
		if _, err := collectors.ReadResolvConf(f.resolvConf); err != nil {
			return fmt.Errorf("--resolv-conf: %w", err)
		}
	}
	if f.pcap != "" {
		if f.capture <= 0 {
			return fmt.Errorf("--pcap %s needs --capture DURATION (e.g. --capture 3s)", f.pcap)
		}
		if err := collectors.CheckWritable(f.pcap); err != nil {
			return fmt.Errorf("--pcap: %w", err)
		}
	}
	return nil
}

// open validates the flags and opens the namespaces. It returns a usage
// error (exit 2) for anything the user typed wrong.
func (f *probeFlags) open() (*collectors.Target, *collectors.Params, func(), error) {
	if f.netns == "" {
		return nil, nil, nil, fmt.Errorf("--netns is required (accepted: /run/netns/NAME, NAME, /proc/PID/ns/net)")
	}
	p := &collectors.Params{ResolvConf: f.resolvConf}
	if f.to != "" {
		d, err := collectors.ParseDest(f.to)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--to: %w", err)
		}
		p.To = d
	}
	for _, n := range f.dns {
		if err := collectors.ValidateName(n); err != nil {
			return nil, nil, nil, fmt.Errorf("--dns: %w", err)
		}
	}
	p.DNS = f.dns
	if f.capture < 0 || f.capture > collectors.MaxCaptureDuration {
		return nil, nil, nil, fmt.Errorf("--capture %s: give a duration between 1s and %s, e.g. 3s", f.capture, collectors.MaxCaptureDuration)
	}
	if err := f.checkFiles(); err != nil {
		return nil, nil, nil, err
	}
	p.Capture = collectors.CaptureOptions{Duration: f.capture, Filter: f.filter, File: f.pcap, Iface: f.iface, Payload: f.payload}
	if err := checkDrops(f.drops); err != nil {
		return nil, nil, nil, err
	}
	if f.drops != "auto" && f.drops != "off" {
		p.DropsMethod = f.drops
	}
	t := &collectors.Target{}
	var opened []*netns.NS
	closeAll := func() {
		for _, n := range opened {
			n.Close()
		}
	}
	for _, x := range []struct {
		flag, path string
		dst        **netns.NS
	}{{"--netns", f.netns, &t.Source}, {"--peer-netns", f.peer, &t.Peer}, {"--node-netns", f.node, &t.Node}} {
		if x.path == "" {
			continue
		}
		n, err := netns.Open(x.path)
		if err != nil {
			closeAll()
			return nil, nil, nil, fmt.Errorf("%s: %w", x.flag, err)
		}
		opened = append(opened, n)
		*x.dst = n
	}
	return t, p, closeAll, nil
}

func runCollect(c *cli, args []string) int {
	fs := c.newFlags("collect", fmt.Sprintf(collectUsage, collectorList()))
	var pf probeFlags
	pf.register(fs)
	var names stringList
	fs.Var(&names, "collector", "collector to run (repeatable; default: all that apply)")
	maxPackets := fs.Int("capture-packets", collectors.DefaultCapturePackets, "stop the capture after this many packets")
	maxBytes := fs.Int64("capture-bytes", collectors.DefaultCaptureBytes, "stop the capture when the pcap reaches this many bytes")
	out := outputFlag(fs, "text", "text", "json")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if len(pos) > 0 {
		return c.usageError("collect", "unexpected argument %q (all options are flags; see --help)", pos[0])
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("collect", "%v", err)
	}
	if err := collectors.Lookup(names...); err != nil {
		return c.usageError("collect", "%v", err)
	}
	t, p, closeAll, err := pf.open()
	if err != nil {
		return c.usageError("collect", "%v", err)
	}
	defer closeAll()
	ctx, cancel := signalContext()
	defer cancel()
	if p.To != nil && !p.To.Addr.IsValid() {
		rc := p.ResolvConf
		if rc == "" {
			rc = collectors.DefaultResolvConf(t.Source.Path())
		}
		if err := collectors.ResolveDest(ctx, t.Source, rc, p.To, time.Second); err != nil {
			return c.usageError("collect", "--to: %v", err)
		}
	}
	if *maxPackets <= 0 || *maxBytes <= 0 {
		return c.usageError("collect", "--capture-packets and --capture-bytes must be positive")
	}
	p.Capture.MaxPackets, p.Capture.MaxBytes = *maxPackets, *maxBytes
	jobs := t.Jobs(names...)
	if len(names) == 0 {
		jobs = collectors.DefaultJobs(t.Present(), p, pf.drops != "off")
	}
	for _, n := range names {
		if err := collectors.Needs(n, p); err != nil {
			return c.usageError("collect", "%v", err)
		}
	}
	if slices.ContainsFunc(jobs, func(j collectors.Job) bool { return j.Collector == "capture" }) {
		if err := collectors.CheckCapture(ctx, t, p); err != nil {
			return c.usageError("collect", "%v", err)
		}
	}
	if err := collectors.Prepare(t, p, jobs); err != nil {
		return c.failure("collect", err)
	}
	start := time.Now()
	evs := collectors.Run(ctx, t, jobs, p)
	c.log.Debug("collected", "collectors", len(evs), "took", time.Since(start))
	if *out == "json" {
		return writeJSON(c, struct {
			Evidence []collectors.Evidence `json:"evidence"`
			TotalMS  int64                 `json:"total_ms"`
		}{evs, time.Since(start).Milliseconds()})
	}
	for _, e := range evs {
		fmt.Fprintf(c.stdout, "== %s (%s %s) %.1f ms\n", e.Collector, e.Scope, e.Netns, e.DurationMS)
		if e.Error != "" {
			fmt.Fprintf(c.stdout, "error: %s\n", e.Error)
		}
		if e.Data != nil {
			b, _ := json.MarshalIndent(e.Data, "", "  ")
			fmt.Fprintln(c.stdout, string(b))
		}
	}
	fmt.Fprintf(c.stdout, "total %.2fs\n", time.Since(start).Seconds())
	return exitOK
}
