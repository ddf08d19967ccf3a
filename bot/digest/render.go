package digest

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// TopN is how many entries each list shows before "and N more".
const TopN = 5

// style is what differs between Slack's mrkdwn and plain text.
type style struct {
	bold, code func(string) string
	link       func(text, url string) string
	esc        func(string) string
	bullet     string
	fence      string
}

// Slack mrkdwn wants &, < and > escaped everywhere, code spans included.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

var mrkdwn = style{
	bold: func(s string) string { return "*" + s + "*" },
	code: func(s string) string { return "`" + strings.ReplaceAll(slackEscaper.Replace(s), "`", "'") + "`" },
	link: func(text, url string) string {
		if url == "" {
			return slackEscaper.Replace(text)
		}
		return "<" + strings.NewReplacer("|", "%7C", ">", "%3E").Replace(url) + "|" + slackEscaper.Replace(text) + ">"
	},
	esc:    slackEscaper.Replace,
	bullet: "•",
	fence:  "```",
}

func identity(s string) string { return s }

var plain = style{
	bold: identity,
	code: identity,
	link: func(text, url string) string {
		if url == "" {
			return text
		}
		return text + " (" + url + ")"
	},
	esc:    identity,
	bullet: "-",
}

// Markdown renders the digest for Slack (mrkdwn: *bold*, `code`, <url|text>),
// short enough to read at a glance: each list shows its first TopN entries.
func (d *Digest) Markdown() string { return d.render(mrkdwn) }

// Text renders the digest as plain text, for a terminal or a log.
func (d *Digest) Text() string { return d.render(plain) }

func (d *Digest) render(st style) string {
	var b strings.Builder
	loc := d.To.Location()
	longTime := func(t time.Time) string { return t.In(loc).Format("Mon 2 Jan 15:04 MST") }
	shortTime := func(t time.Time) string { return t.In(loc).Format("Mon 2 Jan 15:04") }

	if d.From.IsZero() {
		fmt.Fprintf(&b, "%s · up to %s\n", st.bold("netdiag digest"), longTime(d.To))
	} else {
		fmt.Fprintf(&b, "%s · %s – %s\n", st.bold("netdiag digest"), longTime(d.From), longTime(d.To))
	}
	// The first digest has no period before it to compare with.
	trend := !d.From.IsZero()
	switch {
	case d.Total > 0 && trend:
		fmt.Fprintf(&b, "%s (period before: %d, %s)\n", st.bold(plural(d.Total, "finding")), d.PrevTotal, delta(d.Total, d.PrevTotal))
	case d.Total > 0:
		fmt.Fprintf(&b, "%s\n", st.bold(plural(d.Total, "finding")))
	case d.From.IsZero():
		b.WriteString("No findings yet.\n")
	case d.PrevTotal > 0:
		fmt.Fprintf(&b, "No findings since %s (period before: %d).\n", longTime(d.From), d.PrevTotal)
	default:
		fmt.Fprintf(&b, "No findings since %s.\n", longTime(d.From))
	}

	if len(d.Classes) > 0 && d.Total > 0 {
		if trend {
			fmt.Fprintf(&b, "\n%s (change against the period before)\n", st.bold("By class"))
		} else {
			fmt.Fprintf(&b, "\n%s\n", st.bold("By class"))
		}
		for _, c := range d.Classes {
			if !trend && c.N == 0 {
				continue
			}
			fmt.Fprintf(&b, "%s %s %d", st.bullet, st.code(c.Class), c.N)
			if trend {
				fmt.Fprintf(&b, " (%s)", delta(c.N, c.Prev))
			}
			var causes []string
			for _, cc := range c.Causes {
				if cc.N > 0 && !(c.Class == "healthy" && cc.Cause == "none") {
					causes = append(causes, fmt.Sprintf("%s %d", st.esc(cc.Cause), cc.N))
				}
			}
			if len(causes) > 0 {
				b.WriteString(": " + joinTop(causes, ", "))
			}
			b.WriteString("\n")
		}
	}

	if len(d.Targets) > 0 {
		fmt.Fprintf(&b, "\n%s (seen at least twice, healthy findings aside)\n", st.bold("Recurring targets"))
		for i, r := range d.Targets {
			if i == TopN {
				fmt.Fprintf(&b, "and %d more\n", len(d.Targets)-TopN)
				break
			}
			fmt.Fprintf(&b, "%s %s: %d, mostly %s, last %s\n", st.bullet, st.esc(r.Name), r.N, st.code(r.Mostly), shortTime(r.Last))
		}
	}
	for _, l := range []struct {
		title string
		list  []Recurring
	}{{"Recurring namespaces", d.Namespaces}, {"Recurring nodes", d.Nodes}} {
		if len(l.list) == 0 {
			continue
		}
		parts := make([]string, len(l.list))
		for i, r := range l.list {
			parts[i] = fmt.Sprintf("%s %d", st.esc(r.Name), r.N)
		}
		fmt.Fprintf(&b, "%s: %s\n", st.bold(l.title), joinTop(parts, ", "))
	}

	if len(d.Inconclusive) > 0 {
		fmt.Fprintf(&b, "\n%s (%d)\n", st.bold("Inconclusive"), len(d.Inconclusive))
		for i, it := range d.Inconclusive {
			if i == TopN {
				fmt.Fprintf(&b, "and %d more\n", len(d.Inconclusive)-TopN)
				break
			}
			where := st.esc(it.Target)
			if it.Node != "" {
				where += " on " + st.esc(it.Node)
			}
			fmt.Fprintf(&b, "%s %s %s: %s, confidence %.2f", st.bullet, shortTime(it.At), where, st.code(it.Cause), it.Confidence)
			if it.ID != "" {
				fmt.Fprintf(&b, ", id %s", st.code(it.ID))
			}
			b.WriteString("\n")
		}
	}

	if len(d.OpenAlerts) > 0 {
		fmt.Fprintf(&b, "\n%s (%d)\n", st.bold("Open alert threads"), len(d.OpenAlerts))
		for i, a := range d.OpenAlerts {
			if i == TopN {
				fmt.Fprintf(&b, "and %d more\n", len(d.OpenAlerts)-TopN)
				break
			}
			fmt.Fprintf(&b, "%s %s", st.bullet, st.link(a.Name, a.Link))
			if a.Target != "" {
				b.WriteString(" " + st.esc(a.Target))
			}
			fmt.Fprintf(&b, ": open since %s, %d firing", shortTime(a.Since), a.Firing)
			if a.Class != "" {
				fmt.Fprintf(&b, ", last %s", st.code(a.Class+"/"+a.Cause))
			}
			b.WriteString("\n")
		}
	}

	if d.Sweep != nil {
		d.renderSweep(&b, st, longTime)
	}
	return b.String()
}

func (d *Digest) renderSweep(b *strings.Builder, st style, longTime func(time.Time) string) {
	t := d.Sweep
	failing := 0
	for _, r := range t.Rows {
		if r.failures() > 0 {
			failing++
		}
	}
	fmt.Fprintf(b, "\n%s at %s: ", st.bold("Sweep"), longTime(t.At))
	if failing == 0 {
		fmt.Fprintf(b, "all %s pass every check (%s)\n", plural(len(t.Rows), "node"), st.esc(strings.Join(t.Checks, ", ")))
		return
	}
	fmt.Fprintf(b, "%d of %s pass every check\n", len(t.Rows)-failing, plural(len(t.Rows), "node"))

	// The table shows the failing nodes only, and only while it fits a
	// chat window; the list below it says the same in words.
	if table := sweepTable(t, failing); table != "" {
		if st.fence != "" {
			b.WriteString(st.fence + "\n" + st.esc(table) + st.fence + "\n")
		} else {
			b.WriteString(table)
		}
	}
	var cells []string
	for _, r := range t.Rows {
		for _, check := range t.Checks {
			c, ok := r.Cells[check]
			if !ok || c.OK {
				continue
			}
			line := fmt.Sprintf("%s %s %s", st.bullet, st.esc(r.Node), st.esc(check))
			if c.Class != "" {
				line += ": " + st.code(c.Class+"/"+c.Cause)
			}
			if c.Note != "" {
				line += " " + st.esc(c.Note)
			}
			cells = append(cells, line)
		}
	}
	for i, c := range cells {
		if i == TopN {
			fmt.Fprintf(b, "and %d more\n", len(cells)-TopN)
			break
		}
		b.WriteString(c + "\n")
	}
}

const (
	maxTableWidth = 80
	maxNodeWidth  = 20
	maxCheckWidth = 10
)

// sweepTable lays out the failing rows (TopN of them), or returns "" when
// the checks do not fit in maxTableWidth.
func sweepTable(t *SweepTable, failing int) string {
	nodeW := len("node")
	for _, r := range t.Rows[:min(failing, TopN)] {
		nodeW = max(nodeW, utf8.RuneCountInString(clip(r.Node, maxNodeWidth)))
	}
	width := nodeW
	cols := make([]string, len(t.Checks))
	for i, c := range t.Checks {
		cols[i] = clip(c, maxCheckWidth)
		width += 2 + max(utf8.RuneCountInString(cols[i]), len("FAIL"))
	}
	if width > maxTableWidth || len(t.Checks) == 0 {
		return ""
	}
	var b strings.Builder
	line := func(first string, cells []string) {
		s := pad(first, nodeW)
		for i, c := range cells {
			s += "  " + pad(c, max(utf8.RuneCountInString(cols[i]), len("FAIL")))
		}
		b.WriteString(strings.TrimRight(s, " ") + "\n")
	}
	line("node", cols)
	for i, r := range t.Rows[:failing] {
		if i == TopN {
			fmt.Fprintf(&b, "and %d more\n", failing-TopN)
			break
		}
		cells := make([]string, len(t.Checks))
		for j, check := range t.Checks {
			switch c, ok := r.Cells[check]; {
			case !ok:
				cells[j] = "-"
			case c.OK:
				cells[j] = "ok"
			default:
				cells[j] = "FAIL"
			}
		}
		line(clip(r.Node, maxNodeWidth), cells)
	}
	return b.String()
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func pad(s string, n int) string {
	if k := utf8.RuneCountInString(s); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return s
}

func joinTop(parts []string, sep string) string {
	if len(parts) <= TopN {
		return strings.Join(parts, sep)
	}
	return strings.Join(parts[:TopN], sep) + fmt.Sprintf(" and %d more", len(parts)-TopN)
}

func delta(n, prev int) string {
	switch {
	case n > prev:
		return fmt.Sprintf("+%d", n-prev)
	case n < prev:
		return fmt.Sprintf("-%d", prev-n)
	}
	return "="
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
