package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
)

const benchUsage = `Usage: netdiag bench agent|capture|pmtu|collectors|diagnose|drops|tracer|store [--instance NAME]

Measures netdiag on a lab of its own and prints the figures:

  agent       a real 'netdiag agent' process on each lab node: resident
              memory and CPU while idle (10 s), the time from a request to
              the first probe packet in the pod's namespace (10 runs), and a
              whole diagnosis through the agents beside the same in process
  capture     a UDP flood of 60,000 packets/s for 5 s from pod default/client
              to the outside host, captured on node-b's NIC by tcpdump and by
              netdiag's capture side by side: packets each caught, the ratio,
              and the CPU time each used
  pmtu        the path-MTU probe from default/client to the outside host over
              a 1400-byte link, with fragmentation-needed allowed and with it
              dropped (a black hole): the MTU found and the probes it took
  collectors  every collector but the capture on one pod, its node and its
              peer in parallel: wall time over 10 runs
  diagnose    'netdiag diagnose' on the healthy lab, without capture and with
              --capture 3s (wall time of the command, 5 runs each), and the
              same checks done the runbook's way, one command after another
              (ping, nc, dig, tcpdump for 3 s, iptables-save, ip route): the ratio
  drops       what the kernel-drop-reasons program costs: 64-byte UDP through
              a pod's veth pair, delivered and dropped, without the program,
              with it attached and with it watching the dropped flow (packets
              per second and the ratio); and the time to load and attach it,
              in a new process and in a running one
  tracer      the firewall tracer on node rule sets shaped like real ones
              (lab/rulesets: kube-proxy with 1,000 Services, a 20,000-rule
              node with kube-proxy, Calico and Docker, kube-proxy's nftables
              mode): the time to parse each dump and to trace a diagnosis'
              flows through it (target: under 200 ms for the 20,000 rules)

  store       the bbolt store with 100,000 findings about 1,000 targets: the
              bytes each finding takes, and the history of one target
              (median, p99; target: under 10 ms)

Builds the lab instance "bench" (or --instance) and removes it at the end
(tracer and store need no lab). Needs root.
`

func runBench(c *cli, args []string) int {
	fs := c.newFlags("bench", benchUsage)
	inst := fs.String("instance", "bench", "lab instance to build for the measurement")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	benches := map[string]func(context.Context, *cli, *lab.Lab) error{
		"agent": benchAgent, "capture": benchCapture, "pmtu": benchPMTU, "collectors": benchCollectors, "diagnose": benchDiagnose, "drops": benchDrops,
	}
	if len(pos) == 1 && pos[0] == "tracer" {
		if err := benchTracer(c); err != nil {
			return c.failure("bench tracer", err)
		}
		return exitOK
	}
	if len(pos) == 1 && pos[0] == "store" {
		if err := benchStore(c); err != nil {
			return c.failure("bench store", err)
		}
		return exitOK
	}
	if len(pos) != 1 || benches[pos[0]] == nil {
		return c.usageError("bench", "give one of: agent, capture, pmtu, collectors, diagnose, drops, tracer, store")
	}
	if err := lab.ValidateInstance(*inst); err != nil {
		return c.usageError("bench", "%v", err)
	}
	if !needRoot(c, "bench") {
		return exitInternal
	}
	ctx, cancel := signalContext()
	defer cancel()
	lab.Down(ctx, *inst, c.log)
	l, err := lab.Up(ctx, *inst, c.log)
	if err != nil {
		return c.failure("bench", err)
	}
	defer lab.Down(context.Background(), *inst, c.log)
	if err := benches[pos[0]](ctx, c, l); err != nil {
		return c.failure("bench "+pos[0], err)
	}
	return exitOK
}

func cpuOf(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// clientAndNode opens the namespaces of pod default/client and of its node,
// the pair the capture and drops benches measure between.
func clientAndNode(l *lab.Lab) (*lab.Pod, *lab.Node, *netns.NS, *netns.NS, error) {
	client, err := l.Pod("default/client")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	node, err := l.Node(client.Node)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	cns, err := netns.Open(client.NetnsPath)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	nns, err := netns.Open(node.NetnsPath)
	if err != nil {
		cns.Close()
		return nil, nil, nil, nil, err
	}
	return client, node, cns, nns, nil
}

func benchCapture(ctx context.Context, c *cli, l *lab.Lab) error {
	const pps, seconds = 60000, 5
	_, nodeB, cns, bns, err := clientAndNode(l)
	if err != nil {
		return err
	}
	defer cns.Close()
	defer bns.Close()
	tcpdump, err := tools.Find("tcpdump")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "netdiag-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	filter := "udp and dst port 9"
	window := (seconds + 3) * time.Second

	// tcpdump as an engineer runs it: headers only, to a file.
	td := exec.Command(tcpdump, "-i", nodeB.NIC, "-s", "128", "-n", "-w", filepath.Join(dir, "tcpdump.pcap"), filter)
	tdErr, _ := td.StderrPipe()
	if err := bns.Start(td); err != nil {
		return err
	}
	listening := make(chan struct{})
	var tdOut strings.Builder
	go func() {
		sc := bufio.NewScanner(tdErr)
		for sc.Scan() {
			tdOut.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
			}
		}
	}()
	// netdiag's capture as its own process, so its CPU time is its own.
	self, _ := os.Executable()
	nd := exec.Command(self, "collect", "--netns", nodeB.NetnsPath, "--collector", "capture", "--iface", nodeB.NIC,
		"--capture", window.String(), "--capture-packets", "10000000", "--filter", filter, "--pcap", filepath.Join(dir, "netdiag.pcap"), "-o", "json")
	var ndOut strings.Builder
	nd.Stdout = &ndOut
	nd.Stderr = os.Stderr
	if err := nd.Start(); err != nil {
		td.Process.Kill()
		return err
	}
	select {
	case <-listening:
	case <-time.After(5 * time.Second):
		td.Process.Kill()
		nd.Process.Kill()
		return errors.New("tcpdump did not start listening")
	}
	time.Sleep(time.Second) // netdiag's capture is bound well within this
	flood, err := lab.HelperCommand("flood", "--to", "198.18.10.10:9", "--pps", strconv.Itoa(pps), "--size", "64", "--count", strconv.Itoa(pps*seconds))
	if err != nil {
		return err
	}
	var floodOut strings.Builder
	flood.Stdout = &floodOut
	start := time.Now()
	if err := cns.Start(flood); err != nil {
		return err
	}
	flood.Wait()
	sendTime := time.Since(start)
	if err := nd.Wait(); err != nil {
		td.Process.Kill()
		return fmt.Errorf("netdiag capture: %w", err)
	}
	td.Process.Signal(syscall.SIGINT)
	td.Wait()

	var res struct {
		Evidence []struct {
			Data  collectors.CaptureResult `json:"data"`
			Error string                   `json:"error"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal([]byte(ndOut.String()), &res); err != nil || len(res.Evidence) != 1 {
		return fmt.Errorf("netdiag capture output: %v: %s", err, ndOut.String())
	}
	if res.Evidence[0].Error != "" {
		return errors.New(res.Evidence[0].Error)
	}
	ours := res.Evidence[0].Data
	m := regexp.MustCompile(`(\d+) packets captured`).FindStringSubmatch(tdOut.String())
	if m == nil {
		return fmt.Errorf("tcpdump did not report its count: %s", tdOut.String())
	}
	theirs, _ := strconv.Atoi(m[1])
	dropped := regexp.MustCompile(`(\d+) packets dropped by kernel`).FindStringSubmatch(tdOut.String())
	w := c.stdout
	fmt.Fprintf(w, "flood: %s (%.0f packets/s achieved)\n", strings.TrimSpace(floodOut.String()), float64(pps*seconds)/sendTime.Seconds())
	fmt.Fprintf(w, "%-8s %10s %12s %10s %s\n", "", "captured", "kernel drops", "CPU", "(user+sys)")
	tdDrops := "?"
	if dropped != nil {
		tdDrops = dropped[1]
	}
	fmt.Fprintf(w, "%-8s %10d %12s %10s (%s+%s)\n", "tcpdump", theirs, tdDrops, cpuOf(td.ProcessState).Round(time.Millisecond),
		td.ProcessState.UserTime().Round(time.Millisecond), td.ProcessState.SystemTime().Round(time.Millisecond))
	fmt.Fprintf(w, "%-8s %10d %12d %10s (%s+%s)\n", "netdiag", ours.Packets, ours.KernelDrops, cpuOf(nd.ProcessState).Round(time.Millisecond),
		nd.ProcessState.UserTime().Round(time.Millisecond), nd.ProcessState.SystemTime().Round(time.Millisecond))
	ratio := 0.0
	if theirs > 0 {
		ratio = float64(ours.Packets) / float64(theirs)
	}
	cpuRatio := float64(cpuOf(nd.ProcessState)) / float64(max(cpuOf(td.ProcessState), time.Millisecond))
	fmt.Fprintf(w, "captured ratio netdiag/tcpdump: %.4f (target >= 0.99); CPU ratio netdiag/tcpdump: %.2f (target <= 1)\n", ratio, cpuRatio)
	return nil
}

func benchPMTU(ctx context.Context, c *cli, l *lab.Lab) error {
	client, _ := l.Pod("default/client")
	router, _ := l.Host("router")
	ext, _ := l.Host("ext")
	// The 1400-byte link: router <-> ext.
	for _, x := range []struct{ ns, dev string }{{router.NetnsPath, "ext0"}, {ext.NetnsPath, "eth0"}} {
		n, err := netns.Open(x.ns)
		if err != nil {
			return err
		}
		h, err := n.Handle()
		if err != nil {
			n.Close()
			return err
		}
		link, err := h.LinkByName(x.dev)
		if err == nil {
			err = h.LinkSetMTU(link, 1400)
		}
		h.Close()
		n.Close()
		if err != nil {
			return fmt.Errorf("set 1400-byte link: %w", err)
		}
	}
	cns, err := netns.Open(client.NetnsPath)
	if err != nil {
		return err
	}
	defer cns.Close()
	rns, err := netns.Open(router.NetnsPath)
	if err != nil {
		return err
	}
	defer rns.Close()
	nft, err := tools.Find("nft")
	if err != nil {
		return err
	}
	to, _ := collectors.ParseDest(ext.IP)
	fmt.Fprintf(c.stdout, "path default/client (eth0 MTU %d) -> %s over a 1400-byte link\n", client.MTU, ext.IP)
	for _, mode := range []string{"fragmentation-needed allowed", "fragmentation-needed dropped (black hole)"} {
		if strings.HasPrefix(mode, "fragmentation-needed dropped") {
			rules := "table inet bench {\n chain out {\n  type filter hook output priority 0;\n  icmp type destination-unreachable icmp code frag-needed drop\n }\n}\n"
			if _, err := rns.Run(ctx, []byte(rules), nft, "-f", "-"); err != nil {
				return err
			}
		}
		ev := collectors.RunOne(ctx, cns, collectors.ScopeSource, "pmtu", &collectors.Params{To: to})
		if ev.Error != "" {
			return errors.New(ev.Error)
		}
		m := ev.Data.(*collectors.PathMTU)
		var sizes []string
		for _, p := range m.Probes {
			sizes = append(sizes, fmt.Sprintf("%d:%s", p.Size, p.Result))
		}
		fmt.Fprintf(c.stdout, "%-42s path MTU %d in %d probes, %.0f ms (black hole: %v)\n  probes: %s\n",
			mode, m.PathMTU, len(m.Probes), ev.DurationMS, m.Blackhole, strings.Join(sizes, " "))
	}
	return nil
}

func benchCollectors(ctx context.Context, c *cli, l *lab.Lab) error {
	client, _ := l.Pod("default/client")
	web, _ := l.Pod("default/web")
	nodeB, _ := l.Node("node-b")
	t := &collectors.Target{}
	for _, x := range []struct {
		path string
		dst  **netns.NS
	}{{client.NetnsPath, &t.Source}, {web.NetnsPath, &t.Peer}, {nodeB.NetnsPath, &t.Node}} {
		n, err := netns.Open(x.path)
		if err != nil {
			return err
		}
		defer n.Close()
		*x.dst = n
	}
	var names []string
	for _, ci := range collectors.List() {
		if ci.Name != "capture" {
			names = append(names, ci.Name)
		}
	}
	to, _ := collectors.ParseDest(web.IP + ":8080")
	var walls []time.Duration
	jobs := 0
	slowest := map[string]float64{}
	for i := range 10 {
		// A diagnosis is not repeated back to back: space the runs so the
		// routers' ICMP rate limit (1/s per destination after a burst of 6)
		// does not turn the hop probe's answers into loss.
		if i > 0 {
			time.Sleep(1500 * time.Millisecond)
		}
		p := &collectors.Params{To: to, DNS: []string{"web.default", "example.com"}}
		run := t.Jobs(names...)
		if err := collectors.Prepare(t, p, run); err != nil {
			return err
		}
		start := time.Now()
		evs := collectors.Run(ctx, t, run, p)
		walls = append(walls, time.Since(start))
		jobs = len(evs)
		for _, e := range evs {
			slowest[e.Collector] = max(slowest[e.Collector], e.DurationMS)
		}
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	fmt.Fprintf(c.stdout, "%d collector runs (%s) on source, peer and node in parallel, 10 runs 1.5s apart:\n", jobs, strings.Join(names, ", "))
	fmt.Fprintf(c.stdout, "wall time: min %s, median %s, max %s (target < 1s)\n",
		walls[0].Round(time.Millisecond), walls[len(walls)/2].Round(time.Millisecond), walls[len(walls)-1].Round(time.Millisecond))
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0fms", n, slowest[n]))
	}
	fmt.Fprintf(c.stdout, "slowest run of each: %s\n", strings.Join(parts, ", "))
	return nil
}

func benchDiagnose(ctx context.Context, c *cli, l *lab.Lab) error {
	self, _ := os.Executable()
	client, _ := l.Pod("default/client")
	web, _ := l.Pod("default/web")
	nodeB, _ := l.Node("node-b")
	timeRuns := func(n int, args ...string) ([]time.Duration, error) {
		var out []time.Duration
		for range n {
			cmd := exec.CommandContext(ctx, self, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			b, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("%v: %v: %s", args, err, stderr.String())
			}
			out = append(out, time.Since(start))
			if !strings.Contains(string(b), `"class": "healthy"`) {
				return nil, fmt.Errorf("the healthy lab did not diagnose as healthy: %s", b)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out, nil
	}
	base := []string{"diagnose", "--lab", "--instance", l.Instance, "pod", "default/client", "--to", "pod/default/web:8080", "--dns", "web.default.svc.cluster.local", "-o", "json"}
	plain, err := timeRuns(5, base...)
	if err != nil {
		return err
	}
	withCap, err := timeRuns(5, append(base, "--capture", "3s", "--pcap", filepath.Join(os.TempDir(), "netdiag-bench.pcap"))...)
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(os.TempDir(), "netdiag-bench.pcap"))
	fmt.Fprintf(c.stdout, "netdiag diagnose (ping, TCP, path MTU, hops, DNS and the dumps on pod, node and peer), 5 runs each:\n")
	fmt.Fprintf(c.stdout, "  without capture: median %s, max %s (target < 2s)\n", plain[2].Round(time.Millisecond), plain[4].Round(time.Millisecond))
	fmt.Fprintf(c.stdout, "  --capture 3s:    median %s, max %s (target < 4s)\n", withCap[2].Round(time.Millisecond), withCap[4].Round(time.Millisecond))

	// The runbook: one command after another, inside the right namespaces,
	// as an engineer types them (ip netns exec stands in for nsenter).
	ip, _ := tools.Find("ip")
	steps := [][]string{
		{ip, "netns", "exec", client.Netns, "ping", "-c", "5", web.IP},
		{ip, "netns", "exec", client.Netns, "nc", "-z", "-v", "-w", "3", web.IP, "8080"},
		{ip, "netns", "exec", client.Netns, "dig", "+search", "web.default.svc.cluster.local"},
		{ip, "netns", "exec", client.Netns, "timeout", "3", "tcpdump", "-i", "eth0", "-c", "100", "-w", filepath.Join(os.TempDir(), "runbook.pcap")},
		{ip, "netns", "exec", nodeB.Netns, "iptables-save"},
		{ip, "netns", "exec", nodeB.Netns, "ip", "route"},
		{ip, "netns", "exec", client.Netns, "ip", "route"},
	}
	start := time.Now()
	for _, st := range steps {
		cmd := exec.CommandContext(ctx, st[0], st[1:]...)
		cmd.Run() // tcpdump ends by timeout: its status does not matter here
	}
	runbook := time.Since(start)
	os.Remove(filepath.Join(os.TempDir(), "runbook.pcap"))
	fmt.Fprintf(c.stdout, "the runbook by hand, one command after another (ping -c 5, nc -z, dig, tcpdump 3 s, iptables-save, ip route x2): %s\n", runbook.Round(time.Millisecond))
	fmt.Fprintf(c.stdout, "ratio runbook / netdiag: %.1fx without capture, %.1fx with --capture 3s (and the runbook still has to be read)\n",
		float64(runbook)/float64(plain[2]), float64(runbook)/float64(withCap[2]))
	return nil
}

// benchDrops measures what the drops program costs the node: the packet
// rate through a pod's veth pair without it and with it attached (watching
// other flows, as it does on a busy node, and watching the very flow being
// dropped, its worst case), and the time to load and attach it.
func benchDrops(ctx context.Context, c *cli, l *lab.Lab) error {
	const window, rounds = 2 * time.Second, 5
	client, nodeB, cns, bns, err := clientAndNode(l)
	if err != nil {
		return err
	}
	defer cns.Close()
	defer bns.Close()
	h, err := bns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	ch, err := cns.Handle()
	if err != nil {
		return err
	}
	defer ch.Close()
	// The pod's gateway is the node's bridge address: the far end of the
	// veth pair as the pod sees it.
	routes, err := ch.RouteList(nil, unix.AF_INET)
	if err != nil {
		return err
	}
	var gw netip.Addr
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			gw, _ = netip.AddrFromSlice(r.Gw.To4())
		}
	}
	if !gw.IsValid() {
		return errors.New("the client pod has no default gateway")
	}
	src := netip.MustParseAddr(client.IP)
	sink, err := bns.ListenPacket("udp4", netip.AddrPortFrom(gw, 9).String())
	if err != nil {
		return err
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	sender, err := cns.ListenPacket("udp4", client.IP+":0")
	if err != nil {
		return err
	}
	defer sender.Close()
	rx := func() (uint64, error) {
		lk, err := h.LinkByName(client.HostVeth)
		if err != nil {
			return 0, err
		}
		return lk.Attrs().Statistics.RxPackets, nil
	}
	// rate sends 64-byte UDP datagrams as fast as one thread can for the
	// window and returns what the node's end of the veth received per second.
	rate := func(port uint16) (float64, error) {
		to := &net.UDPAddr{IP: gw.AsSlice(), Port: int(port)}
		payload := make([]byte, 64)
		before, err := rx()
		if err != nil {
			return 0, err
		}
		start := time.Now()
		for time.Since(start) < window {
			for range 256 {
				sender.WriteTo(payload, to) // a full queue only slows us
			}
		}
		elapsed := time.Since(start)
		time.Sleep(50 * time.Millisecond)
		after, err := rx()
		if err != nil {
			return 0, err
		}
		return float64(after-before) / elapsed.Seconds(), nil
	}
	other := []drops.Flow{{Proto: "tcp", Src: netip.MustParseAddr("198.18.255.1"), Dst: netip.MustParseAddr("198.18.255.2"), DPort: 1}}
	watched := map[uint64]string{bns.Inode(): "node", cns.Inode(): "source"}
	// A config with flows runs with the program attached, watching them.
	type config struct {
		name  string
		port  uint16
		flows []drops.Flow
	}
	configs := []config{
		{"delivered, no program", 9, nil},
		{"delivered, program attached", 9, other},
		{"dropped (no socket), no program", 10, nil},
		{"dropped, program attached (other flows)", 10, other},
		{"dropped, program watching this flow", 10, []drops.Flow{{Proto: "udp", Src: src, Dst: gw, DPort: 10}}},
	}
	results := make([][]float64, len(configs))
	var reported []float64 // drops reported per run while watching the dropped flow
	for range rounds {
		for i, cf := range configs {
			var tr *drops.Tracer
			if cf.flows != nil {
				tr = drops.Start(cf.flows, watched, drops.Options{Method: "ebpf"})
			}
			r, err := rate(cf.port)
			if tr != nil {
				res := tr.Stop()
				if res.Method != "ebpf" {
					return fmt.Errorf("the drops program did not load: %s", res.Note)
				}
				if cf.flows[0].DPort == cf.port {
					reported = append(reported, float64(res.ByReason["NO_SOCKET"]))
				}
			}
			if err != nil {
				return err
			}
			results[i] = append(results[i], r)
		}
	}
	w := c.stdout
	fmt.Fprintf(w, "64-byte UDP from pod %s through its veth pair to node %s, %s per run, median of %d runs:\n", client.Name, nodeB.Name, window, rounds)
	base := map[uint16]float64{9: median(results[0]), 10: median(results[2])}
	for i, cf := range configs {
		m := median(results[i])
		fmt.Fprintf(w, "  %-42s %10.0f packets/s  ratio %.3f\n", cf.name, m, m/base[cf.port])
	}
	fmt.Fprintf(w, "  (watching the dropped flow, the program reported %.0f drops per run, median)\n", median(reported))

	// Load and attach: cold in a new process (what one `netdiag diagnose`
	// pays: the kernel's BTF is parsed first), warm in a running one (the
	// agent).
	self, _ := os.Executable()
	var cold []float64
	for range 5 {
		out, err := exec.CommandContext(ctx, self, "collect", "--netns", client.NetnsPath, "--collector", "drops", "--drops", "ebpf", "--capture", "100ms", "-o", "json").Output()
		if err != nil {
			return fmt.Errorf("collect drops: %w", err)
		}
		var res struct {
			Evidence []struct {
				Data drops.Result `json:"data"`
			} `json:"evidence"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.Evidence) != 1 || res.Evidence[0].Data.Method != "ebpf" {
			return fmt.Errorf("collect drops output: %v: %s", err, out)
		}
		cold = append(cold, res.Evidence[0].Data.LoadMS)
	}
	var warm []float64
	for range 5 {
		tr := drops.Start(other, watched, drops.Options{Method: "ebpf"})
		warm = append(warm, tr.Stop().LoadMS)
	}
	fmt.Fprintf(w, "load and attach: %.1f ms median in a new process (BTF parsed), %.1f ms median in a running one (5 runs each)\n", median(cold), median(warm))
	return nil
}
