package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
)

const demoUsage = `Usage: netdiag demo [--instance NAME] [--fault NAME]... [--keep] [--no-bot]

Runs the main job end to end on this machine, no cluster and no Slack account
needed: builds the fault lab (a two-node flannel/kube-proxy cluster network in
network namespaces), shows its map, diagnoses the healthy lab, then for each
fault injects it, diagnoses it from the pod it hurts exactly as
'netdiag diagnose --lab' does, prints the finding as a person reads it, and
heals it.

Then it shows the bot: with fault port-firewall in the lab, it runs the bot
as 'netdiag serve' runs it on the lab (diagnose.lab), a real Alertmanager
(v0.28.1, which ./scripts/install-deps installs) whose webhook receiver is the
bot, and the Slack test server in Slack's place, all on 127.0.0.1. It posts
an alert for default/client to Alertmanager, prints the alert's thread as the
channel shows it (the alert, the finding, its evidence, the pcap) and how long
each step took, then resolves the alert and prints the thread's update. It
stops them all and removes their files, also on Ctrl-C or a failure.
--no-bot leaves this part out.

Finally removes the lab. Prints how long building and removing the lab took.
Needs root.

Examples:
  netdiag demo
  netdiag demo --fault mtu-blackhole --fault loopback-only
  netdiag demo --no-bot      # the diagnoses only
  netdiag demo --keep        # leave the lab up afterwards to explore it
`

// demoFaults are the seed incidents: the cases people recognise.
var demoFaults = []string{"loopback-only", "mtu-blackhole", "kube-proxy-evicted", "overlay-wrong-source", "dual-default-route"}

func runDemo(c *cli, args []string) int {
	fs := c.newFlags("demo", demoUsage)
	inst := instanceFlag(fs)
	var faults stringList
	fs.Var(&faults, "fault", "fault to show (repeatable; default: the seed incidents)")
	keep := fs.Bool("keep", false, "leave the lab up at the end")
	noBot := fs.Bool("no-bot", false, "leave out the bot part (Alertmanager, the bot, the Slack test server)")
	if _, code, err := c.parse(fs, args); err != nil {
		return code
	}
	if err := lab.ValidateInstance(*inst); err != nil {
		return c.usageError("demo", "%v", err)
	}
	if len(faults) == 0 {
		faults = demoFaults
	}
	for _, name := range faults {
		if _, err := lab.FaultByName(name); err != nil {
			return c.usageError("demo", "%v", err)
		}
	}
	if !needRoot(c, "demo") {
		return exitInternal
	}
	if !*noBot {
		// Before the lab is built: a missing Alertmanager is said at once.
		if err := checkDemoBot(); err != nil {
			return c.failure("demo", err)
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	w := c.stdout

	// The demo owns its instance: what an interrupted demo left is removed.
	if r, err := lab.Down(ctx, *inst, c.log); err == nil && len(r.Namespaces) > 0 {
		fmt.Fprintf(w, "removed a previous lab %q (%d namespaces)\n", *inst, len(r.Namespaces))
	}
	start := time.Now()
	_, err := lab.Up(ctx, *inst, c.log)
	if err != nil {
		return c.failure("demo", err)
	}
	fmt.Fprintf(w, "== lab up: %.2fs\n\n", time.Since(start).Seconds())
	down := func() int {
		if *keep {
			fmt.Fprintf(w, "\nthe lab stays up: `netdiag lab status --instance %s`, `netdiag lab down --instance %s`\n", *inst, *inst)
			return exitOK
		}
		start := time.Now()
		// A fresh context: Ctrl-C must still leave a clean machine.
		if _, err := lab.Down(context.Background(), *inst, c.log); err != nil {
			return c.failure("demo", err)
		}
		fmt.Fprintf(w, "\n== lab down: %.2fs\n", time.Since(start).Seconds())
		return exitOK
	}
	st, err := lab.GetStatus(*inst)
	if err != nil {
		down()
		return c.failure("demo", err)
	}
	printMap(w, st)

	eng := &diagnose.Engine{Runner: diagnose.LocalRunner{}}
	// alone drops the destination's view: the question as asked with
	// --netns and --to only.
	ask := func(question []string, alone ...bool) error {
		kind, name, to, dns, err := labview.ParseArgs(question)
		if err != nil {
			return err
		}
		st, err := lab.GetStatus(*inst)
		if err != nil {
			return err
		}
		req, err := labview.Request(st, kind, name, to, dns)
		if err != nil {
			return err
		}
		if len(alone) > 0 && alone[0] {
			req.Peer, req.PeerNode = diagnose.Place{}, diagnose.Place{}
			also := ""
			if req.AltTo != nil {
				also = fmt.Sprintf("    (the pod's IPv6 address %s is probed too)", req.AltTo.Addr)
			}
			fmt.Fprintf(w, "\n$ netdiag diagnose --netns %s --to %s%s\n\n", req.Source.Netns, req.To, also)
		} else {
			fmt.Fprintf(w, "\n$ netdiag diagnose --lab %s\n\n", strings.Join(question, " "))
		}
		f, err := eng.Diagnose(ctx, req)
		if err != nil {
			return err
		}
		f.WriteText(w)
		return nil
	}
	// fault injects a fault, asks the question, and heals the lab.
	fault := func(name string, question []string, alone bool) error {
		if _, err := lab.InjectFault(ctx, *inst, name, c.log); err != nil {
			return err
		}
		err := ask(question, alone)
		if _, cerr := lab.Clear(ctx, *inst, c.log); cerr != nil && err == nil {
			err = cerr
		}
		return err
	}
	fail := func(err error) int {
		down()
		return c.failure("demo", err)
	}
	fmt.Fprintln(w, "\n== the healthy lab")
	if err := ask([]string{"pod", "default/client", "--to", "svc/default/web:80"}); err != nil {
		return fail(err)
	}
	for _, name := range faults {
		f, _ := lab.FaultByName(name)
		seed := ""
		if f.Seed != "" {
			seed = fmt.Sprintf("\n   seed incident: %s", f.Seed)
		}
		fmt.Fprintf(w, "\n== fault %s (must read %s/%s)%s\n   %s\n", f.Name, f.Class, f.Cause, seed, f.Summary)
		if err := fault(name, f.Diagnose, false); err != nil {
			return fail(err)
		}
		fmt.Fprintf(w, "   (fault %s cleared)\n", f.Name)
	}
	if len(faults) == len(demoFaults) {
		// The kernel's drop reasons tell a REJECT rule from a closed port
		// from the client alone, where both are just "connection refused".
		fmt.Fprintln(w, "\n== the kernel's word: a REJECT rule and a closed port, both 'connection refused', asked from the client alone")
		for _, name := range []string{"port-reject", "not-listening"} {
			f, _ := lab.FaultByName(name)
			fmt.Fprintf(w, "\n-- fault %s (must read %s/%s)\n   %s\n", f.Name, f.Class, f.Cause, f.Summary)
			if err := fault(name, []string{"pod", "default/client", "--to", "pod/default/web:8080"}, true); err != nil {
				return fail(err)
			}
		}
		// Dual-stack: the same question probes both of the pod's
		// addresses and says which family fails.
		f, _ := lab.FaultByName("not-listening-v6")
		fmt.Fprintf(w, "\n== dual-stack: the same question, a fault of one family\n\n-- fault %s (must read %s/%s)\n   %s\n", f.Name, f.Class, f.Cause, f.Summary)
		if err := fault(f.Name, f.Diagnose, false); err != nil {
			return fail(err)
		}
	}
	if !*noBot {
		if err := runDemoBot(ctx, c, *inst); err != nil {
			return fail(err)
		}
	}
	return down()
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
