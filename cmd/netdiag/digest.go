package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/netdiag/netdiag/bot/digest"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/store"
)

const digestUsage = `Usage: netdiag digest [--store FILE] [--since 24h] [--tz ZONE]
                      [--sweep --lab [--instance NAME]] [--chart FILE.png] [-o markdown|text]

Prints a health digest now, as the bot posts one on its schedule: the
findings by class and cause since --since with the trend against the period
before, the targets, namespaces and nodes that recur, the inconclusive
findings and the alert threads still open. --chart writes the findings per
day by class as a PNG.

--sweep adds the active check from every node (kube-proxy, a cluster and an
outside name from a pod on the node, the path MTU and the overlay to every
other node), one row per node with the failing cells diagnosed; from a shell
it sweeps the fault lab (--lab).

Examples:
  netdiag digest --since 168h --chart /tmp/week.png
  netdiag digest --store /tmp/netdiag.db --sweep --lab -o text
`

func runDigest(c *cli, args []string) int {
	fs := c.newFlags("digest", digestUsage)
	path := fs.String("store", defaultStore(), "the store file")
	since := fs.Duration("since", 24*time.Hour, "the period the digest covers, up to now")
	tz := fs.String("tz", "UTC", "time zone the digest is written in (IANA name)")
	doSweep := fs.Bool("sweep", false, "add the active check from every node")
	useLab := fs.Bool("lab", false, "sweep the fault lab")
	inst := instanceFlag(fs)
	chart := fs.String("chart", "", "write the chart of findings per day by class here (PNG)")
	out := outputFlag(fs, "markdown", "markdown", "text")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if len(pos) > 0 {
		return c.usageError("digest", "unexpected argument %q (everything is a flag)", pos[0])
	}
	if err := checkOutput(*out, "markdown", "text"); err != nil {
		return c.usageError("digest", "%v", err)
	}
	if *since <= 0 || *since > 31*24*time.Hour {
		return c.usageError("digest", "--since %s: give a duration from 1m to 744h (31 days)", *since)
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil || *tz == "Local" {
		return c.usageError("digest", "--tz %q: give an IANA time zone, e.g. Europe/Berlin or UTC", *tz)
	}
	if *doSweep != *useLab {
		return c.usageError("digest", "--sweep from a shell sweeps the fault lab: give --sweep --lab (the bot sweeps a cluster through its agents)")
	}
	if *chart != "" {
		if st, err := os.Stat(filepath.Dir(*chart)); err != nil || !st.IsDir() {
			return c.usageError("digest", "--chart %s: its folder does not exist", *chart)
		}
	}
	if _, err := os.Stat(*path); err != nil {
		return c.usageError("digest", "no store at %s (the bot keeps one there; 'netdiag diagnose --store FILE' writes one; or give --store FILE)", *path)
	}
	ctx, cancel := signalContext()
	defer cancel()
	st, err := store.Open(ctx, *path, store.Options{})
	if err != nil {
		if errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrLocked) {
			return c.usageError("digest", "%v", err)
		}
		return c.failure("digest", err)
	}
	defer st.Close()
	to := time.Now().In(loc)
	p, err := digest.Collect(ctx, st, to.Add(-*since), to)
	if err != nil {
		return c.failure("digest", err)
	}
	if *doSweep {
		if !needRoot(c, "digest") {
			return exitInternal
		}
		lst, err := lab.GetStatus(*inst)
		if err != nil {
			return c.usageError("digest", "%v", err)
		}
		if lst.Phase != "up" {
			return c.usageError("digest", "lab %q is %s; start it with `netdiag lab up`", lst.Instance, lst.Phase)
		}
		start := time.Now()
		t := labview.Sweep(ctx, lst, c.log)
		c.log.Info("sweep", "nodes", len(t.Rows), "failing", t.FailedNodes(), "took_ms", time.Since(start).Milliseconds())
		p.Sweep = digest.FromSweep(t, to)
	}
	d := digest.Build(p)
	if *out == "text" {
		fmt.Fprint(c.stdout, d.Text())
	} else {
		fmt.Fprint(c.stdout, d.Markdown())
	}
	if *chart != "" {
		f, err := os.Create(*chart)
		if err != nil {
			return c.failure("digest", err)
		}
		if err := d.ChartPNG(f); err != nil {
			f.Close()
			return c.failure("digest", err)
		}
		if err := f.Close(); err != nil {
			return c.failure("digest", err)
		}
	}
	return exitOK
}
