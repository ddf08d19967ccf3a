package diagnose

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
)

// Finding is the answer to one question: one verdict, why, what else it could
// have been and why not, and what to do. It serialises to JSON for scripts,
// the store and the bot.
type Finding struct {
	Class      string  `json:"class"`
	Cause      string  `json:"cause"`
	Confidence float64 `json:"confidence"`
	Summary    string  `json:"summary"`
	// Family is the address family the verdict is about ("ipv4", "ipv6"),
	// empty when a dual-stack destination fails (or works) both ways.
	Family string `json:"family,omitempty"`
	// Question restates what was asked, in the user's words.
	Question       string        `json:"question"`
	Evidence       []Observation `json:"evidence"`
	AlsoConsidered []Considered  `json:"also_considered"`
	NextSteps      []string      `json:"next_steps"`
	Timings        Timings       `json:"timings"`
	// Pcap is the capture file, if a capture ran.
	Pcap *string `json:"pcap"`
	// Raw is every collector's evidence.
	Raw []collectors.Evidence `json:"raw,omitempty"`
	At  time.Time             `json:"at"`
}

// Verdict returns the finding's class and cause.
func (f *Finding) Verdict() Verdict { return Verdict{f.Class, f.Cause} }

// Observation is one piece of evidence, named by the collector that saw it.
type Observation struct {
	Collector   string `json:"collector"`
	Observation string `json:"observation"`
}

// Considered is a candidate verdict that was ruled out, and by what.
type Considered struct {
	Class      string `json:"class"`
	Cause      string `json:"cause"`
	RuledOutBy string `json:"ruled_out_by"`
}

// Timings say where the time went.
type Timings struct {
	TotalMS      int64              `json:"total_ms"`
	PlanMS       int64              `json:"plan_ms"`
	CollectMS    int64              `json:"collect_ms"`
	ClassifyMS   int64              `json:"classify_ms"`
	CollectorsMS map[string]float64 `json:"collectors_ms,omitempty"`
}

// WriteJSON writes the finding as one JSON object.
func (f *Finding) WriteJSON(w io.Writer, raw bool) error {
	out := *f
	if !raw {
		out.Raw = nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&out)
}

// WriteText writes the finding as a person reads it in a terminal.
func (f *Finding) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s/%s  (confidence %.2f)\n", f.Class, f.Cause, f.Confidence)
	fmt.Fprintf(w, "%s\n", f.Summary)
	if f.Question != "" {
		fmt.Fprintf(w, "\nquestion: %s\n", f.Question)
	}
	if len(f.Evidence) > 0 {
		fmt.Fprintln(w, "\nevidence:")
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "  - %s: %s\n", e.Collector, e.Observation)
		}
	}
	if len(f.AlsoConsidered) > 0 {
		fmt.Fprintln(w, "\nruled out:")
		for _, c := range f.AlsoConsidered {
			fmt.Fprintf(w, "  - %s/%s: %s\n", c.Class, c.Cause, c.RuledOutBy)
		}
	}
	if len(f.NextSteps) > 0 {
		fmt.Fprintln(w, "\nnext steps:")
		for i, s := range f.NextSteps {
			fmt.Fprintf(w, "  %d. %s\n", i+1, s)
		}
	}
	if f.Pcap != nil {
		fmt.Fprintf(w, "\npcap: %s\n", *f.Pcap)
	}
	fmt.Fprintf(w, "\ntook %d ms (collect %d ms)\n", f.Timings.TotalMS, f.Timings.CollectMS)
}

// WriteMarkdown writes the finding for a chat message or a ticket.
func (f *Finding) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "**%s/%s** (confidence %.2f)\n\n%s\n", f.Class, f.Cause, f.Confidence, f.Summary)
	if f.Question != "" {
		fmt.Fprintf(w, "\n_Question:_ %s\n", f.Question)
	}
	if len(f.Evidence) > 0 {
		fmt.Fprintln(w, "\n**Evidence**")
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "- `%s`: %s\n", e.Collector, mdEscape(e.Observation))
		}
	}
	if len(f.AlsoConsidered) > 0 {
		fmt.Fprintln(w, "\n**Ruled out**")
		for _, c := range f.AlsoConsidered {
			fmt.Fprintf(w, "- `%s/%s`: %s\n", c.Class, c.Cause, mdEscape(c.RuledOutBy))
		}
	}
	if len(f.NextSteps) > 0 {
		fmt.Fprintln(w, "\n**Next steps**")
		for i, s := range f.NextSteps {
			fmt.Fprintf(w, "%d. %s\n", i+1, mdEscape(s))
		}
	}
	if f.Pcap != nil {
		fmt.Fprintf(w, "\npcap: `%s`\n", *f.Pcap)
	}
	fmt.Fprintf(w, "\n_took %d ms_\n", f.Timings.TotalMS)
}

func mdEscape(s string) string {
	return strings.NewReplacer("*", "\\*", "_", "\\_", "`", "'").Replace(s)
}
