package digest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/store"
)

// Collect reads a period from the store: the findings made in (from, to],
// those of the period as long before it for the trend, and the alert
// threads still open. A from at zero (no digest before) takes the day
// before to.
func Collect(ctx context.Context, st *store.Store, from, to time.Time) (Period, error) {
	if from.IsZero() || !from.Before(to) {
		from = to.Add(-24 * time.Hour)
	}
	p := Period{From: from, To: to}
	read := func(since, until time.Time) ([]Item, error) {
		// Until is exclusive in the store, (from, to] here: a finding made
		// at the very slot belongs to this digest.
		list, err := st.History(ctx, store.HistoryQuery{Since: since.Add(time.Nanosecond), Until: until.Add(time.Nanosecond), Limit: store.MaxHistory})
		if err != nil {
			return nil, err
		}
		items := make([]Item, 0, len(list))
		for _, f := range list {
			items = append(items, Item{At: f.At, Class: f.Class, Cause: f.Cause, Target: f.Target, Namespace: f.Namespace,
				Node: f.Node, Confidence: f.Confidence, ID: f.ID, Source: f.Source})
		}
		return items, nil
	}
	var err error
	if p.Findings, err = read(from, to); err != nil {
		return p, fmt.Errorf("findings since %s: %w", from.Format(time.RFC3339), err)
	}
	if p.Previous, err = read(from.Add(-to.Sub(from)), from); err != nil {
		return p, fmt.Errorf("findings of the period before: %w", err)
	}
	alerts, err := st.OpenAlerts(ctx)
	if err != nil {
		return p, fmt.Errorf("open alerts: %w", err)
	}
	for _, a := range alerts {
		al := Alert{Name: a.GroupKey, Since: a.StartsAt, Firing: max(a.Count, 1)}
		if a.FindingID != "" {
			if rec, err := st.Finding(ctx, a.FindingID, false); err == nil {
				al.Target, al.Class, al.Cause = rec.Target, rec.Class, rec.Cause
			}
		}
		if al.Name == "" {
			al.Name = a.Fingerprint
		}
		p.OpenAlerts = append(p.OpenAlerts, al)
	}
	return p, nil
}

// FromSweep turns a sweep into the digest's table: one row per node, one
// column per kind of check ("mtu to node-b" and "mtu to node-c" are one
// column, "mtu", failing when any of them fails).
func FromSweep(t *sweep.Table, at time.Time) *SweepTable {
	if t == nil {
		return nil
	}
	out := &SweepTable{At: at}
	seen := map[string]bool{}
	for _, r := range t.Rows {
		row := SweepRow{Node: r.Node, Cells: map[string]Cell{}}
		for _, c := range r.Cells {
			if c.Result == "skipped" {
				continue
			}
			check, to, _ := strings.Cut(c.Check, " to ")
			if !seen[check] {
				seen[check] = true
				out.Checks = append(out.Checks, check)
			}
			cell, had := row.Cells[check]
			if !had {
				cell = Cell{OK: true}
			}
			if c.Result == "failed" {
				class, cause, _ := strings.Cut(c.Verdict, "/")
				note := c.Summary
				if to != "" {
					note = "to " + to + ": " + note
				}
				if cell.OK {
					cell = Cell{Class: class, Cause: cause, Note: note}
				}
			}
			row.Cells[check] = cell
		}
		out.Rows = append(out.Rows, row)
	}
	sort.SliceStable(out.Rows, func(i, j int) bool { return out.Rows[i].Node < out.Rows[j].Node })
	return out
}
