package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/netdiag/netdiag/store"
	"github.com/netdiag/netdiag/store/storetest"
)

// benchStore fills a store in a temporary directory with 100,000 findings
// about 1,000 targets (each with a few KB of raw evidence, as a diagnosis
// keeps) and measures the history of one target and the bytes a finding
// takes in the file. No lab, no root.
func benchStore(c *cli) error {
	const findings, targets, batch, samples = 100_000, 1000, 1000, 300
	ctx, cancel := signalContext()
	defer cancel()
	dir, err := os.MkdirTemp("", "netdiag-bench-store-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := store.Open(ctx, filepath.Join(dir, "netdiag.db"), store.Options{Logger: c.log})
	if err != nil {
		return err
	}
	defer s.Close()

	start := time.Now()
	first := start.Add(-findings * time.Minute)
	recs := make([]*store.FindingRecord, 0, batch)
	for i := range findings {
		target, ns, node := storetest.Target(i % targets)
		recs = append(recs, &store.FindingRecord{FindingSummary: store.FindingSummary{Target: target, Namespace: ns, Node: node, Source: store.SourceSlack,
			Requester: "U024BE7LH", Channel: "C0NETOPS", Thread: "1712345678.000100"},
			Finding: storetest.Finding(i, first.Add(time.Duration(i)*time.Minute))})
		if len(recs) == batch {
			if err := s.PutFindings(ctx, recs); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	fill := time.Since(start)
	u, err := s.Usage(ctx)
	if err != nil {
		return err
	}

	var took []time.Duration
	for range samples {
		target, _, _ := storetest.Target(rand.IntN(targets))
		t := time.Now()
		h, err := s.History(ctx, store.HistoryQuery{Target: target, Limit: 100})
		took = append(took, time.Since(t))
		if err != nil {
			return err
		}
		if len(h) != findings/targets {
			return fmt.Errorf("history of %s: %d findings, want %d", target, len(h), findings/targets)
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Fprintf(c.stdout, "store: %d findings about %d targets written in %s (%d a transaction); %d bytes a finding in the file (%d live)\n",
		u.Findings, targets, fill.Round(100*time.Millisecond), batch, u.FileBytes/int64(u.Findings), u.LiveBytes/int64(u.Findings))
	fmt.Fprintf(c.stdout, "history of one target (%d findings, newest first), %d targets: median %s, p99 %s, max %s (target < 10 ms)\n",
		findings/targets, samples, ms(median(took)), ms(took[len(took)*99/100]), ms(took[len(took)-1]))
	return nil
}

// Until the bench command lists "store" (then this line goes).
