package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/kubelet"
)

const labUsage = `Usage: netdiag lab SUBCOMMAND [flags]

The fault lab builds a small Kubernetes cluster network out of network
namespaces on this machine: two nodes joined by an underlay, flannel-style
VXLAN (flannel.1, UDP 8472), cni0 bridges, pods, kube-proxy iptables rules for
Services, real CoreDNS, and an outside host behind a router. It is dual-stack:
nodes, pods, bridges, the overlay and the outside host have IPv4 and IPv6
addresses, and IPv6 pod traffic crosses the same VXLAN; Services are IPv4
single-stack (no IPv6 ClusterIPs). It then breaks it the ways the taxonomy and
the seed incidents describe, in either family. It uses only 198.18.0.0/15 and
2001:2::/48, changes nothing in this machine's own network namespace, and
names everything ndl-INSTANCE-*. Needs root.

Subcommands:
  up        build the lab and print its map
  down      remove the lab (also what a crashed run left behind)
  status    print the lab's map, active faults and processes
  faults    list the faults and the verdict each must produce
  fault     inject a fault: netdiag lab fault NAME
  clear     heal every fault
  check     run the lab's connectivity checks (ping, TCP, HTTP, dig)
  bench     the accuracy matrix: diagnose every fault and the healthy lab

Examples:
  netdiag lab up
  netdiag lab fault loopback-only
  netdiag lab check
  netdiag lab clear
  netdiag lab down --all

Every subcommand takes --instance NAME (default "demo", or $NETDIAG_LAB_INSTANCE)
so several labs can run side by side.
`

func runLab(c *cli, args []string) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(c.stdout, labUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	subs := map[string]func(*cli, []string) int{
		"up": labUp, "down": labDown, "status": labStatus, "faults": labFaults,
		"fault": labFault, "clear": labClear, "check": labCheck, "bench": labBench,
	}
	sub, ok := subs[args[0]]
	if !ok {
		return c.usageError("lab", "unknown subcommand %q (accepted: up, down, status, faults, fault, clear, check, bench)", args[0])
	}
	return sub(c, args[1:])
}

func instanceFlag(fs *flag.FlagSet) *string {
	def := lab.DefaultInstance
	if v := os.Getenv("NETDIAG_LAB_INSTANCE"); v != "" {
		def = v
	}
	return fs.String("instance", def, "lab instance name (lower-case letters and digits)")
}

// signalContext is cancelled by Ctrl-C or SIGTERM, so a long command stops
// cleanly instead of dying half-way.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func needRoot(c *cli, cmd string) bool {
	if os.Geteuid() != 0 {
		fmt.Fprintf(c.stderr, "netdiag %s: needs root (network namespaces, iptables); run it with sudo\n", cmd)
		return false
	}
	return true
}

func labUp(c *cli, args []string) int {
	fs := c.newFlags("lab up", `Usage: netdiag lab up [--instance NAME] [-o text|json]
       netdiag lab up --cluster [--for DURATION] [--module DIR] [--instance NAME] [-o text|json]

Builds the lab and prints its map and how long it took. Refuses to build over
an existing instance; if a step fails, removes what it built.

With --cluster, the lab is the machines and wires alone and a real
Kubernetes cluster runs on it: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler on a master host on the underlay; on node-a and node-b
containerd, a kubelet, flanneld (VXLAN, kube subnet manager) and kube-proxy
(iptables mode); CoreDNS, web and client as Deployments from images built
here (nothing is pulled). It prints the nodes, the pods, a health check from
the client pod (DNS through kube-dns, the web Service, IPv6 across the
overlay) and a kubeconfig for this machine, then holds the cluster until
Ctrl-C (or for DURATION) and takes it all down. The cluster's processes are
this command's children; after a crash, "netdiag lab down" removes what is
left. The pause and server images are built from the module source, so run
it inside the netdiag checkout (or name it with --module). Takes about a
minute.
`)
	inst := instanceFlag(fs)
	out := outputFlag(fs, "text", "text", "json")
	realCluster := fs.Bool("cluster", false, "run a real Kubernetes cluster on the lab, held until Ctrl-C")
	hold := fs.Duration("for", 0, "with --cluster: take the cluster down after this long (e.g. 10m); 0 waits for Ctrl-C")
	module := fs.String("module", ".", "with --cluster: a directory of the netdiag source, to build the pause and server images from")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if !*realCluster && (*hold != 0 || *module != ".") {
		return c.usageError("lab up", "--for and --module go with --cluster")
	}
	if *hold < 0 {
		return c.usageError("lab up", "--for %s: give a positive duration such as 10m, or 0 to hold until Ctrl-C", *hold)
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("lab up", "%v", err)
	}
	if err := lab.ValidateInstance(*inst); err != nil {
		return c.usageError("lab up", "%v", err)
	}
	if !needRoot(c, "lab up") {
		return exitInternal
	}
	if *realCluster {
		return labUpCluster(c, *inst, *out, *hold, *module)
	}
	ctx, cancel := signalContext()
	defer cancel()
	start := time.Now()
	if _, err := lab.Up(ctx, *inst, c.log); err != nil {
		var au *lab.AlreadyUpError
		if errors.As(err, &au) {
			return c.usageError("lab up", "%v", err)
		}
		return c.failure("lab up", err)
	}
	took := time.Since(start)
	st, err := lab.GetStatus(*inst)
	if err != nil {
		return c.failure("lab up", err)
	}
	if *out == "json" {
		return writeJSON(c, struct {
			*lab.Status
			UpMS int64 `json:"up_ms"`
		}{st, took.Milliseconds()})
	}
	fmt.Fprintf(c.stdout, "lab %q is up (%.2fs)\n\n", *inst, took.Seconds())
	printMap(c.stdout, st)
	return exitOK
}

func labDown(c *cli, args []string) int {
	fs := c.newFlags("lab down", `Usage: netdiag lab down [--instance NAME | --all]

Removes a lab: its processes (by PID, only processes the lab started), its
network namespaces, its /etc/netns entries and its state. It works from names,
so it also cleans up after a crash. With --all, every instance on the machine.
`)
	inst := instanceFlag(fs)
	all := fs.Bool("all", false, "remove every lab instance found on this machine")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := lab.ValidateInstance(*inst); err != nil {
		return c.usageError("lab down", "%v", err)
	}
	if !needRoot(c, "lab down") {
		return exitInternal
	}
	ctx, cancel := signalContext()
	defer cancel()
	instances := []string{*inst}
	if *all {
		instances = lab.Instances()
		if len(instances) == 0 {
			fmt.Fprintln(c.stdout, "no lab instances found")
			return exitOK
		}
	}
	// The runtimes of a real cluster whose `lab up --cluster` was killed:
	// their shims and pods outlive it.
	if err := containerd.CleanStale(ctx, c.log); err != nil {
		return c.failure("lab down", err)
	}
	for _, name := range instances {
		start := time.Now()
		r, err := lab.Down(ctx, name, c.log)
		if err != nil {
			return c.failure("lab down", err)
		}
		// A real cluster's kubelets keep their directories outside the
		// lab's state.
		dirs, err := kubelet.RemoveLeftovers(lab.NamePrefix + name + "-")
		if err != nil {
			return c.failure("lab down", err)
		}
		r.Files = append(r.Files, dirs...)
		if len(r.Namespaces)+len(r.Processes)+len(r.Files) == 0 {
			fmt.Fprintf(c.stdout, "lab %q: nothing to remove\n", name)
			continue
		}
		fmt.Fprintf(c.stdout, "lab %q is down (%.2fs): removed %d namespaces, %d processes, %d files\n",
			name, time.Since(start).Seconds(), len(r.Namespaces), len(r.Processes), len(r.Files))
	}
	return exitOK
}

func labStatus(c *cli, args []string) int {
	fs := c.newFlags("lab status", `Usage: netdiag lab status [--instance NAME] [-o text|json]

Prints the lab's map: nodes, pods (with their namespace path, IP and node),
Services (ClusterIP, ports, endpoints), the DNS Service, the outside hosts, the
active faults and the lab's processes. The JSON form is what tests and the
lab's Kubernetes view read.
`)
	inst := instanceFlag(fs)
	out := outputFlag(fs, "text", "text", "json")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("lab status", "%v", err)
	}
	st, err := lab.GetStatus(*inst)
	if err != nil {
		return c.usageError("lab status", "%v", err)
	}
	if *out == "json" {
		return writeJSON(c, st)
	}
	if st.Phase == "down" {
		fmt.Fprintf(c.stdout, "lab %q is down; start it with `netdiag lab up --instance %s`\n", *inst, *inst)
		return exitOK
	}
	printMap(c.stdout, st)
	return exitOK
}

func labFaults(c *cli, args []string) int {
	fs := c.newFlags("lab faults", `Usage: netdiag lab faults [-o text|json]

Lists every fault the lab can inject, the class/cause of the taxonomy it must
produce, and which seed incident it reproduces. Also lists the causes that have
no fault, and why.
`)
	out := outputFlag(fs, "text", "text", "json")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("lab faults", "%v", err)
	}
	if *out == "json" {
		return writeJSON(c, map[string]any{"faults": lab.Faults, "uninjectable": lab.Uninjectable})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tCLASS/CAUSE\tFAMILY\tSEED\tWHAT IT DOES")
	for _, f := range lab.Faults {
		seed := ""
		if f.Seed != "" {
			seed = "seed"
		}
		family := f.Family
		if family == "" {
			family = "both"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\n", f.Name, f.Class, f.Cause, family, seed, f.Summary)
	}
	tw.Flush()
	fmt.Fprintln(c.stdout, "\nCauses without a fault:")
	for _, u := range lab.Uninjectable {
		fmt.Fprintf(c.stdout, "  %s/%s: %s\n", u.Class, u.Cause, u.Reason)
	}
	return exitOK
}

func labFault(c *cli, args []string) int {
	fs := c.newFlags("lab fault", `Usage: netdiag lab fault NAME [--instance NAME]

Injects a fault into a running lab (see 'netdiag lab faults'). Faults stack;
'netdiag lab clear' heals them all.
`)
	inst := instanceFlag(fs)
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("lab fault", "give exactly one fault name; `netdiag lab faults` lists them")
	}
	f, err := lab.FaultByName(pos[0])
	if err != nil {
		return c.usageError("lab fault", "%v", err)
	}
	if !needRoot(c, "lab fault") {
		return exitInternal
	}
	ctx, cancel := signalContext()
	defer cancel()
	if _, err := lab.InjectFault(ctx, *inst, f.Name, c.log); err != nil {
		var nu *lab.NotUpError
		if errors.As(err, &nu) || strings.Contains(err.Error(), "already active") {
			return c.usageError("lab fault", "%v", err)
		}
		return c.failure("lab fault", err)
	}
	fmt.Fprintf(c.stdout, "injected %s (%s/%s): %s\n", f.Name, f.Class, f.Cause, f.Summary)
	if len(f.Breaks) > 0 {
		fmt.Fprintf(c.stdout, "breaks: %s\n", strings.Join(f.Breaks, ", "))
	}
	if len(f.Partial) > 0 {
		fmt.Fprintf(c.stdout, "partial loss: %s\n", strings.Join(f.Partial, ", "))
	}
	return exitOK
}

func labClear(c *cli, args []string) int {
	fs := c.newFlags("lab clear", `Usage: netdiag lab clear [--instance NAME]

Heals the lab: puts every namespace back to the healthy baseline (links, MTUs,
addresses, routes, FDB, sysctls, qdiscs, firewall rules, resolv.conf, servers).
`)
	inst := instanceFlag(fs)
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if !needRoot(c, "lab clear") {
		return exitInternal
	}
	ctx, cancel := signalContext()
	defer cancel()
	cleared, err := lab.Clear(ctx, *inst, c.log)
	if err != nil {
		var nu *lab.NotUpError
		if errors.As(err, &nu) {
			return c.usageError("lab clear", "%v", err)
		}
		return c.failure("lab clear", err)
	}
	if len(cleared) == 0 {
		fmt.Fprintln(c.stdout, "lab is healthy (no faults were active; baseline re-applied)")
	} else {
		fmt.Fprintf(c.stdout, "cleared: %s\n", strings.Join(cleared, ", "))
	}
	return exitOK
}

func labCheck(c *cli, args []string) int {
	fs := c.newFlags("lab check", `Usage: netdiag lab check [--instance NAME] [-o text|json]

Runs the lab's connectivity checks by plain means, from inside the lab's
namespaces: ping (iputils, -4 and -6), TCP connects and HTTP requests over
IPv4 and IPv6, and dig (A and AAAA) with the pod's own resolv.conf. A healthy
lab passes them all.
`)
	inst := instanceFlag(fs)
	out := outputFlag(fs, "text", "text", "json")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("lab check", "%v", err)
	}
	if !needRoot(c, "lab check") {
		return exitInternal
	}
	l, err := lab.Load(*inst)
	if err != nil {
		return c.usageError("lab check", "%v", err)
	}
	ctx, cancel := signalContext()
	defer cancel()
	res, err := lab.RunChecks(ctx, l)
	if err != nil {
		return c.failure("lab check", err)
	}
	if *out == "json" {
		return writeJSON(c, res)
	}
	byName := map[string]lab.Check{}
	for _, ch := range lab.Checks() {
		byName[ch.Name] = ch
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tFROM\tWHAT\tDETAIL")
	for _, r := range res {
		ch := byName[r.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Status, ch.From, ch.What, r.Detail)
	}
	tw.Flush()
	return exitOK
}

func writeJSON(c *cli, v any) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return c.failure("json", err)
	}
	return exitOK
}

func printMap(w io.Writer, st *lab.Status) {
	faults := "none"
	if len(st.Faults) > 0 {
		faults = strings.Join(st.Faults, ", ")
	}
	fmt.Fprintf(w, "Lab %q (%s", st.Instance, st.Phase)
	if !st.Since.IsZero() {
		fmt.Fprintf(w, " since %s", st.Since.Local().Format("15:04:05"))
	}
	fmt.Fprintf(w, "), faults: %s\n", faults)
	fmt.Fprintf(w, "cluster %s and %s, Services %s (IPv4 single-stack), domain %s, DNS Service %s\n",
		st.ClusterCIDR, st.ClusterCIDR6, st.ServiceCIDR, st.ClusterDomain, st.DNSService)

	// One table per section: columns of different sections have nothing to
	// do with each other, so they must not share widths.
	table := func(header string, rows func(tw io.Writer)) {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		rows(tw)
		tw.Flush()
	}
	table("NODE\tINTERNAL IP\tINTERNAL IPV6\tPODCIDR\tPODCIDR6\tOVERLAY\tKUBE-PROXY\tNETNS", func(tw io.Writer) {
		for _, n := range st.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s vxlan vni %d port %d local %s mtu %d\t%s\t%s\n", n.Name, n.InternalIP, n.InternalIP6,
				n.PodCIDR, n.PodCIDR6, n.Overlay.Device, n.Overlay.VNI, n.Overlay.Port, n.Overlay.Local, n.Overlay.MTU, n.KubeProxy, n.NetnsPath)
		}
	})
	table("POD\tIP\tIPV6\tNODE\tPORTS\tREADY\tNETNS", func(tw io.Writer) {
		for _, p := range st.Pods {
			ports := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(p.Ports)), ","), "[]")
			if ports == "" {
				ports = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\n", p.Key(), p.IP, p.IP6, p.Node, ports, p.Ready, p.NetnsPath)
		}
	})
	table("SERVICE\tCLUSTER IP\tPORTS\tENDPOINTS", func(tw io.Writer) {
		for _, s := range st.Services {
			var ports, eps []string
			for _, p := range s.Ports {
				ports = append(ports, fmt.Sprintf("%d/%s->%d", p.Port, p.Protocol, p.TargetPort))
			}
			for _, e := range s.Endpoints {
				who := e.Pod
				if who == "" {
					who = "host network on " + e.Node
				}
				ready := ""
				if !e.Ready {
					ready = " NOT READY"
				}
				eps = append(eps, fmt.Sprintf("%s (%s)%s", e.IP, who, ready))
			}
			if len(eps) == 0 {
				eps = []string{"none"}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Key(), s.ClusterIP, strings.Join(ports, ","), strings.Join(eps, ", "))
		}
	})
	table("HOST\tIP\tIPV6\tNETNS\tROLE", func(tw io.Writer) {
		for _, h := range st.Hosts {
			ip6 := h.IP6
			if ip6 == "" {
				ip6 = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.IP, ip6, h.NetnsPath, h.Role)
		}
	})
	if len(st.Processes) > 0 {
		table("PROCESS\tPID\tRUNNING\tNETNS", func(tw io.Writer) {
			for _, p := range st.Processes {
				fmt.Fprintf(tw, "%s\t%d\t%v\t%s\n", p.Name, p.PID, p.Running, p.Netns)
			}
		})
	}
	if len(st.Missing) > 0 {
		fmt.Fprintf(w, "\nmissing namespaces: %s (run `netdiag lab down --instance %s` and up again)\n", strings.Join(st.Missing, ", "), st.Instance)
	}
}

func labBench(c *cli, args []string) int {
	fs := c.newFlags("lab bench", `Usage: netdiag lab bench [--instance NAME] [--fault NAME]...

The accuracy matrix: injects every fault (or the given ones), diagnoses it from
the pod it hurts with the question in 'netdiag lab faults -o json', compares
the verdict with the taxonomy cause the fault must produce, clears it; and asks
the healthy lab the same questions, also under background traffic. Prints the
table and the accuracy. Uses a running lab, or builds one and removes it after.
Exits 1 when any case is wrong.
`)
	inst := instanceFlag(fs)
	var only stringList
	fs.Var(&only, "fault", "only this fault (repeatable)")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := lab.ValidateInstance(*inst); err != nil {
		return c.usageError("lab bench", "%v", err)
	}
	cases := labview.Cases()
	if len(only) > 0 {
		var sel []labview.Case
		for _, name := range only {
			if _, err := lab.FaultByName(name); err != nil {
				return c.usageError("lab bench", "%v", err)
			}
			for _, cs := range cases {
				if cs.Name == name {
					sel = append(sel, cs)
				}
			}
		}
		cases = sel
	}
	if !needRoot(c, "lab bench") {
		return exitInternal
	}
	ctx, cancel := signalContext()
	defer cancel()
	if st, err := lab.GetStatus(*inst); err != nil || st.Phase != "up" {
		if _, err := lab.Up(ctx, *inst, c.log); err != nil {
			return c.failure("lab bench", err)
		}
		defer lab.Down(context.Background(), *inst, c.log)
	} else if len(st.Faults) > 0 {
		return c.usageError("lab bench", "lab %q has active faults (%s); run `netdiag lab clear` first", *inst, strings.Join(st.Faults, ", "))
	}
	start := time.Now()
	rows, err := labview.RunMatrix(ctx, *inst, cases, c.log)
	if err != nil {
		return c.failure("lab bench", err)
	}
	correct := labview.WriteMatrix(c.stdout, rows)
	fmt.Fprintf(c.stdout, "took %s\n", time.Since(start).Round(time.Second))
	if correct != len(rows) {
		return exitInternal
	}
	return exitOK
}
