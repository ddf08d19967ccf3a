package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/store"
)

const historyUsage = `Usage: netdiag history [pod NS/NAME | svc NS/NAME | node NAME | NS/NAME]
                       [--namespace NS] [--node NAME] [--since 24h] [-n 50]
                       [--store FILE] [-o text|json]

Lists the findings netdiag kept, newest first: what each target had, when,
and the verdict. "Has this pod had this before?" is one command. NS/NAME
alone is a pod. Without a target, every finding (or those of --namespace
or --node).

The store is the bot's bbolt file (or one 'netdiag diagnose --store FILE'
writes): --store, else $NETDIAG_STORE, else /var/lib/netdiag/netdiag.db.
It is opened read-only in spirit: history never creates one.

Examples:
  netdiag history default/web --since 72h
  netdiag history node node-b -o json
  netdiag history --namespace shop --since 168h -n 200
`

// defaultStore is where the bot keeps its store.
func defaultStore() string {
	if p := os.Getenv("NETDIAG_STORE"); p != "" {
		return p
	}
	return "/var/lib/netdiag/netdiag.db"
}

func runHistory(c *cli, args []string) int {
	fs := c.newFlags("history", historyUsage)
	path := fs.String("store", defaultStore(), "the store file")
	since := fs.Duration("since", 0, "only findings at most this old, e.g. 24h (default: all)")
	namespace := fs.String("namespace", "", "only findings about this namespace")
	node := fs.String("node", "", "only findings on this node")
	limit := fs.Int("n", store.DefaultHistory, "at most this many, newest first")
	out := outputFlag(fs, "text", "text", "json")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if err := checkOutput(*out, "text", "json"); err != nil {
		return c.usageError("history", "%v", err)
	}
	if *since < 0 {
		return c.usageError("history", "--since %s: give a positive duration, e.g. 24h", *since)
	}
	if *limit < 1 || *limit > store.MaxHistory {
		return c.usageError("history", "-n %d: give 1 to %d", *limit, store.MaxHistory)
	}
	q := store.HistoryQuery{Namespace: *namespace, Node: *node, Limit: *limit}
	switch len(pos) {
	case 0:
	case 1:
		q.Target = "pod " + pos[0]
	case 2:
		q.Target = pos[0] + " " + pos[1]
	default:
		return c.usageError("history", "give one target: pod NS/NAME, svc NS/NAME, node NAME, or NS/NAME (got %q)", strings.Join(pos, " "))
	}
	if q.Target != "" {
		if _, err := store.ValidateTarget(q.Target); err != nil {
			return c.usageError("history", "%v", err)
		}
	}
	if *since > 0 {
		q.Since = time.Now().Add(-*since)
	}
	if _, err := os.Stat(*path); err != nil {
		return c.usageError("history", "no store at %s (the bot keeps one there; 'netdiag diagnose --store FILE' writes one; or give --store FILE)", *path)
	}
	ctx, cancel := signalContext()
	defer cancel()
	st, err := store.Open(ctx, *path, store.Options{})
	if err != nil {
		if errors.Is(err, store.ErrDamaged) || errors.Is(err, store.ErrLocked) {
			return c.usageError("history", "%v", err)
		}
		return c.failure("history", err)
	}
	defer st.Close()
	list, err := st.History(ctx, q)
	if err != nil {
		return c.failure("history", err)
	}
	if *out == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if list == nil {
			list = []store.FindingSummary{}
		}
		if err := enc.Encode(list); err != nil {
			return c.failure("history", err)
		}
		return exitOK
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no findings")
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tTARGET\tVERDICT\tCONF\tSOURCE\tSUMMARY\tID")
	for _, f := range list {
		sum := f.Summary
		if len(sum) > 90 {
			sum = sum[:87] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%.2f\t%s\t%s\t%s\n", f.At.Local().Format("2006-01-02 15:04"), f.Target, f.Class, f.Cause, f.Confidence, orDash(f.Source), sum, f.ID)
	}
	tw.Flush()
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// keep stores a finding made from a shell (diagnose --store), with its
// pcap. The finding is already printed: a store that fails loses nothing
// but the record, and says so.
func (c *cli) keep(ctx context.Context, path, target, node string, f *diagnose.Finding) {
	st, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		fmt.Fprintf(c.stderr, "netdiag diagnose: the finding was not stored: %v\n", err)
		return
	}
	defer st.Close()
	rec := &store.FindingRecord{FindingSummary: store.FindingSummary{Target: target, Node: node, Source: "cli", Requester: os.Getenv("USER")}, Finding: f}
	id, err := st.PutFinding(ctx, rec)
	if err != nil {
		fmt.Fprintf(c.stderr, "netdiag diagnose: the finding was not stored: %v\n", err)
		return
	}
	if f.Pcap != nil && *f.Pcap != "" {
		if err := st.PutPcapFile(ctx, id, *f.Pcap); err != nil {
			fmt.Fprintf(c.stderr, "netdiag diagnose: the pcap was not stored with finding %s: %v\n", id, err)
		}
	}
	c.log.Info("finding stored", "id", id, "store", path, "target", target)
}
