package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/netdiag/netdiag/lab"
)

const demoUsage = `Usage: netdiag demo [--instance NAME] [--fault NAME]... [--keep]

Runs the main job end to end on this machine, no cluster and no Slack account
needed: builds the fault lab (a two-node flannel/kube-proxy cluster network in
network namespaces), shows its map, then for each fault injects it, shows what
it breaks, heals it, and finally removes the lab. Prints how long building and
removing the lab took. Needs root.

Examples:
  netdiag demo
  netdiag demo --fault mtu-blackhole --fault loopback-only
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
	ctx, cancel := signalContext()
	defer cancel()
	w := c.stdout

	// The demo owns its instance: what an interrupted demo left is removed.
	if r, err := lab.Down(ctx, *inst, c.log); err == nil && len(r.Namespaces) > 0 {
		fmt.Fprintf(w, "removed a previous lab %q (%d namespaces)\n", *inst, len(r.Namespaces))
	}
	start := time.Now()
	l, err := lab.Up(ctx, *inst, c.log)
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

	fmt.Fprintln(w, "\n== healthy lab")
	if err := demoChecks(ctx, w, l, nil); err != nil {
		down()
		return c.failure("demo", err)
	}
	for _, name := range faults {
		f, _ := lab.FaultByName(name)
		seed := ""
		if f.Seed != "" {
			seed = fmt.Sprintf("\n   seed incident: %s", f.Seed)
		}
		fmt.Fprintf(w, "\n== fault %s -> %s/%s%s\n   %s\n", f.Name, f.Class, f.Cause, seed, f.Summary)
		if _, err := lab.InjectFault(ctx, *inst, name, c.log); err != nil {
			down()
			return c.failure("demo", err)
		}
		err := demoChecks(ctx, w, l, f)
		if _, cerr := lab.Clear(ctx, *inst, c.log); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			down()
			return c.failure("demo", err)
		}
		fmt.Fprintln(w, "   cleared")
	}
	return down()
}

// demoChecks runs the lab's checks and prints what fails, and whether that is
// what the fault should break.
func demoChecks(ctx context.Context, w io.Writer, l *lab.Lab, f *lab.Fault) error {
	res, err := lab.RunChecks(ctx, l)
	if err != nil {
		return err
	}
	what := map[string]string{}
	for _, ch := range lab.Checks() {
		what[ch.Name] = ch.From + ": " + ch.What
	}
	passed := 0
	for _, r := range res {
		if r.Status == "pass" {
			passed++
			continue
		}
		fmt.Fprintf(w, "   %-7s %-20s %s\n           %s\n", strings.ToUpper(r.Status), r.Name, what[r.Name], r.Detail)
	}
	fmt.Fprintf(w, "   %d of %d checks pass\n", passed, len(res))
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
