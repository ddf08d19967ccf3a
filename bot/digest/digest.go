package digest

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/netdiag/netdiag/diagnose"
)

// Period is what a digest is built from; the caller fills it from the store.
// Times are shown in To's location: give To in the digest's time zone.
type Period struct {
	// From is the last digest's slot (zero if there was none), To this one's.
	From, To time.Time
	// Findings are those made in (From, To].
	Findings []Item
	// Previous are those of the period before, as long, for the trend.
	Previous []Item
	// OpenAlerts are the alert threads not resolved at To.
	OpenAlerts []Alert
	// Sweep is the sweep run for this digest, if the spec asked for one.
	Sweep *SweepTable
}

// Item is one stored finding, as much of it as a digest needs.
type Item struct {
	At         time.Time
	Class      string
	Cause      string
	Target     string // as the finding names it, e.g. "pod default/web"
	Namespace  string
	Node       string
	Confidence float64
	ID         string
	Source     string // what asked: "slack", "alertmanager", "sweep", "cli"
}

// Alert is one open alert thread.
type Alert struct {
	Name   string // the alert's name, e.g. "KubePodNotReady"
	Target string
	Since  time.Time
	Firing int // alerts of the group still firing
	// Class and Cause are the thread's latest finding, empty before one.
	Class, Cause string
	Link         string // the thread's permalink, if known
}

// SweepTable is a sweep of every node: one row per node, one cell per check.
type SweepTable struct {
	At     time.Time
	Checks []string
	Rows   []SweepRow
}

// SweepRow is one node's results, by check name; a check missing from Cells
// did not run on that node.
type SweepRow struct {
	Node  string
	Cells map[string]Cell
}

// Cell is one check on one node.
type Cell struct {
	OK bool
	// Class and Cause are the failed check's verdict, Note a short reason
	// ("path MTU 1400 < 1450").
	Class, Cause string
	Note         string
}

// Digest is a Period read for people: counts, trends and lists, sorted.
type Digest struct {
	From, To         time.Time
	Total, PrevTotal int
	// Classes are in the taxonomy's order, with classes seen only in the
	// previous period kept (N = 0) to show what went away.
	Classes []ClassCount
	// Targets, Namespaces and Nodes are those seen at least twice in
	// findings other than healthy, most frequent first.
	Targets, Namespaces, Nodes []Recurring
	// Inconclusive are the inconclusive findings, newest first.
	Inconclusive []Item
	// OpenAlerts are oldest first.
	OpenAlerts []Alert
	Sweep      *SweepTable
	// Days count findings per calendar day of To's time zone, by class,
	// for the chart: the period's days, at most the last MaxChartDays.
	Days []Day
}

// MaxChartDays bounds the chart after a long downtime.
const MaxChartDays = 31

// ClassCount is one class's findings now and in the previous period.
type ClassCount struct {
	Class   string
	N, Prev int
	Causes  []CauseCount
}

// CauseCount is one cause's findings now and in the previous period.
type CauseCount struct {
	Cause   string
	N, Prev int
}

// Recurring is a target, namespace or node seen more than once.
type Recurring struct {
	Name   string
	N      int
	Last   time.Time
	Mostly string // its most frequent verdict, "class/cause"
}

// Day is one calendar day's findings by class.
type Day struct {
	Date    time.Time // midnight, in To's location
	ByClass map[string]int
}

// Build reads p into a Digest. The digest shares nothing with p.
func Build(p Period) *Digest {
	loc := p.To.Location()
	d := &Digest{
		From:      p.From,
		To:        p.To,
		Total:     len(p.Findings),
		PrevTotal: len(p.Previous),
	}
	d.Classes = countClasses(p.Findings, p.Previous)
	d.Targets = recurring(p.Findings, func(it *Item) string { return it.Target })
	d.Namespaces = recurring(p.Findings, func(it *Item) string { return it.Namespace })
	d.Nodes = recurring(p.Findings, func(it *Item) string { return it.Node })

	for _, it := range p.Findings {
		if it.Class == diagnose.Insufficient.Class {
			d.Inconclusive = append(d.Inconclusive, it)
		}
	}
	slices.SortFunc(d.Inconclusive, func(a, b Item) int {
		return cmp.Or(b.At.Compare(a.At), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Target, b.Target), compareVerdict(a.Class, a.Cause, b.Class, b.Cause))
	})

	d.OpenAlerts = slices.Clone(p.OpenAlerts)
	slices.SortFunc(d.OpenAlerts, func(a, b Alert) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Target, b.Target), cmp.Compare(a.Link, b.Link))
	})

	if p.Sweep != nil {
		d.Sweep = sortedSweep(p.Sweep)
	}
	d.Days = days(p.From, p.To, loc, p.Findings)
	return d
}

// verdictRank orders classes and causes as TAXONOMY.md lists them; unknown
// ones come after, by name.
var classRank, verdictRank = func() (map[string]int, map[string]int) {
	classes := map[string]int{}
	verdicts := map[string]int{}
	for i, v := range diagnose.Taxonomy {
		if _, ok := classes[v.Class]; !ok {
			classes[v.Class] = len(classes)
		}
		verdicts[v.String()] = i
	}
	return classes, verdicts
}()

func rank(m map[string]int, k string) int {
	if r, ok := m[k]; ok {
		return r
	}
	return len(m)
}

func compareClass(a, b string) int {
	return cmp.Or(cmp.Compare(rank(classRank, a), rank(classRank, b)), cmp.Compare(a, b))
}

func compareVerdict(ac, acause, bc, bcause string) int {
	a, b := ac+"/"+acause, bc+"/"+bcause
	return cmp.Or(compareClass(ac, bc), cmp.Compare(rank(verdictRank, a), rank(verdictRank, b)), cmp.Compare(a, b))
}

type verdictKey struct{ class, cause string }

func countClasses(now, prev []Item) []ClassCount {
	type counts struct{ n, prev int }
	byClass := map[string]*counts{}
	byVerdict := map[verdictKey]*counts{}
	add := func(items []Item, current bool) {
		for i := range items {
			it := &items[i]
			c := byClass[it.Class]
			if c == nil {
				c = &counts{}
				byClass[it.Class] = c
			}
			k := verdictKey{it.Class, it.Cause}
			v := byVerdict[k]
			if v == nil {
				v = &counts{}
				byVerdict[k] = v
			}
			if current {
				c.n++
				v.n++
			} else {
				c.prev++
				v.prev++
			}
		}
	}
	add(now, true)
	add(prev, false)

	out := make([]ClassCount, 0, len(byClass))
	for class, c := range byClass {
		out = append(out, ClassCount{Class: class, N: c.n, Prev: c.prev})
	}
	slices.SortFunc(out, func(a, b ClassCount) int { return compareClass(a.Class, b.Class) })
	for k, v := range byVerdict {
		i := slices.IndexFunc(out, func(c ClassCount) bool { return c.Class == k.class })
		out[i].Causes = append(out[i].Causes, CauseCount{Cause: k.cause, N: v.n, Prev: v.prev})
	}
	for i := range out {
		class := out[i].Class
		slices.SortFunc(out[i].Causes, func(a, b CauseCount) int {
			return cmp.Or(cmp.Compare(b.N, a.N), compareVerdict(class, a.Cause, class, b.Cause))
		})
	}
	return out
}

func recurring(items []Item, key func(*Item) string) []Recurring {
	type acc struct {
		n        int
		last     time.Time
		verdicts map[verdictKey]int
	}
	seen := map[string]*acc{}
	for i := range items {
		it := &items[i]
		k := key(it)
		if k == "" || it.Class == diagnose.Healthy.Class {
			continue
		}
		a := seen[k]
		if a == nil {
			a = &acc{verdicts: map[verdictKey]int{}}
			seen[k] = a
		}
		a.n++
		if it.At.After(a.last) {
			a.last = it.At
		}
		a.verdicts[verdictKey{it.Class, it.Cause}]++
	}
	var out []Recurring
	for name, a := range seen {
		if a.n < 2 {
			continue
		}
		var worst verdictKey
		best := 0
		for v, n := range a.verdicts {
			if n > best || n == best && compareVerdict(v.class, v.cause, worst.class, worst.cause) < 0 {
				worst, best = v, n
			}
		}
		out = append(out, Recurring{Name: name, N: a.n, Last: a.last, Mostly: worst.class + "/" + worst.cause})
	}
	slices.SortFunc(out, func(a, b Recurring) int { return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Name, b.Name)) })
	return out
}

func sortedSweep(t *SweepTable) *SweepTable {
	out := &SweepTable{At: t.At, Checks: slices.Clone(t.Checks), Rows: make([]SweepRow, len(t.Rows))}
	for i, r := range t.Rows {
		out.Rows[i] = SweepRow{Node: r.Node, Cells: maps.Clone(r.Cells)}
	}
	// Failing nodes first, as a person reads the table for them.
	slices.SortFunc(out.Rows, func(a, b SweepRow) int {
		return cmp.Or(cmp.Compare(b.failures(), a.failures()), cmp.Compare(a.Node, b.Node))
	})
	return out
}

// failures counts the row's failed checks.
func (r SweepRow) failures() int {
	n := 0
	for _, c := range r.Cells {
		if !c.OK {
			n++
		}
	}
	return n
}

// midnight returns the start of t's calendar day in loc.
func midnight(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

func days(from, to time.Time, loc *time.Location, items []Item) []Day {
	if to.IsZero() {
		return nil
	}
	// To is the slot itself; a digest at midnight covers nothing of that day.
	lastDay := midnight(to.Add(-time.Nanosecond), loc)
	first := from
	if first.IsZero() {
		first = to
		for i := range items {
			if items[i].At.Before(first) {
				first = items[i].At
			}
		}
	}
	firstDay := midnight(first, loc)
	if firstDay.After(lastDay) {
		firstDay = lastDay
	}
	// AddDate, not 24h: a DST day is 23 or 25 hours long.
	if earliest := lastDay.AddDate(0, 0, -(MaxChartDays - 1)); firstDay.Before(earliest) {
		firstDay = earliest
	}
	type date struct {
		y int
		m time.Month
		d int
	}
	var out []Day
	index := map[date]int{}
	for day := firstDay; !day.After(lastDay); day = day.AddDate(0, 0, 1) {
		y, m, d := day.Date()
		index[date{y, m, d}] = len(out)
		out = append(out, Day{Date: day, ByClass: map[string]int{}})
	}
	for i := range items {
		y, m, d := items[i].At.In(loc).Date()
		if j, ok := index[date{y, m, d}]; ok {
			out[j].ByClass[items[i].Class]++
		}
	}
	return out
}
