package labview

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/lab"
)

// ParseArgs reads a question in the form `netdiag diagnose --lab` takes it:
// KIND NAME [--to X] [--dns NAME]...
func ParseArgs(args []string) (kind, name, to string, dns []string, err error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--to":
			if i+1 >= len(args) {
				return "", "", "", nil, fmt.Errorf("--to needs a value (accepted: %s)", ToForms)
			}
			i++
			to = args[i]
		case "--dns":
			if i+1 >= len(args) {
				return "", "", "", nil, fmt.Errorf("--dns needs a name")
			}
			i++
			dns = append(dns, args[i])
		default:
			pos = append(pos, args[i])
		}
	}
	if len(pos) != 2 {
		return "", "", "", nil, fmt.Errorf("want %s, got %q", TargetForms, strings.Join(pos, " "))
	}
	return pos[0], pos[1], to, dns, nil
}

// Case is one row of the accuracy matrix.
type Case struct {
	Name     string // fault name, or "healthy..."
	Seed     bool
	Question []string
	Want     diagnose.Verdict
	// Traffic runs background load from the client pod during the case.
	Traffic bool
}

// Row is a case's outcome.
type Row struct {
	Case
	Got        diagnose.Verdict
	Confidence float64
	Summary    string
	TookMS     int64
	Err        string
}

// OK reports whether the verdict is the expected one.
func (r Row) OK() bool { return r.Err == "" && r.Got == r.Want }

// Cases are every lab fault with the question that reproduces it, and the
// healthy lab asked the same questions, also under background traffic.
func Cases() []Case {
	var out []Case
	for _, q := range [][]string{
		{"pod", "default/client", "--to", "pod/default/web:8080"},
		{"pod", "default/client", "--to", "svc/default/web:80"},
		{"pod", "default/client", "--dns", "web.default.svc.cluster.local"},
		{"pod", "default/client", "--dns", "example.com"},
		{"pod", "default/client"},
	} {
		out = append(out, Case{Name: "healthy", Question: q, Want: diagnose.Healthy})
	}
	for _, q := range [][]string{
		{"pod", "default/client", "--to", "svc/default/web:80"},
		{"pod", "default/client", "--dns", "example.com"},
	} {
		out = append(out, Case{Name: "healthy+traffic", Question: q, Want: diagnose.Healthy, Traffic: true})
	}
	for _, f := range lab.Faults {
		out = append(out, Case{Name: f.Name, Seed: f.Seed != "", Question: f.Diagnose, Want: diagnose.Verdict{Class: f.Class, Cause: f.Cause}})
	}
	return out
}

// RunMatrix diagnoses every case on a running lab: inject, ask, compare,
// clear. It returns one row per case, in order.
func RunMatrix(ctx context.Context, instance string, cases []Case, log *slog.Logger) ([]Row, error) {
	return RunMatrixWith(ctx, instance, cases, diagnose.LocalRunner{}, log)
}

// RunMatrixWith runs the matrix through a given runner (the nodes' agents).
func RunMatrixWith(ctx context.Context, instance string, cases []Case, runner diagnose.Runner, log *slog.Logger) ([]Row, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eng := &diagnose.Engine{Runner: runner}
	var rows []Row
	for _, c := range cases {
		row := Row{Case: c}
		stop, err := setUp(ctx, instance, c, log)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", c.Name, err)
		}
		row.Got, row.Confidence, row.Summary, row.TookMS, row.Err = ask(ctx, eng, instance, c.Question)
		if err := stop(); err != nil {
			return rows, fmt.Errorf("%s: clear: %w", c.Name, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func setUp(ctx context.Context, instance string, c Case, log *slog.Logger) (func() error, error) {
	if c.Want != diagnose.Healthy {
		if _, err := lab.InjectFault(ctx, instance, c.Name, log); err != nil {
			return nil, err
		}
		return func() error { _, err := lab.Clear(ctx, instance, log); return err }, nil
	}
	if !c.Traffic {
		return func() error { return nil }, nil
	}
	st, err := lab.GetStatus(instance)
	if err != nil {
		return nil, err
	}
	client, _ := st.Pod("default/client")
	web, _ := st.Pod("default/web")
	dnsSvc, _ := st.Service(st.DNSService)
	webSvc, _ := st.Service("default/web")
	ns, err := netns.Open(client.NetnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	cmd, err := lab.HelperCommand("traffic", "--http", fmt.Sprintf("http://%s:8080/,http://%s:80/", web.IP, webSvc.ClusterIP),
		"--dns", dnsSvc.ClusterIP+":53", "--names", "web.default.svc.cluster.local,example.com", "--every", "10ms")
	if err != nil {
		return nil, err
	}
	if err := ns.Start(cmd); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // let the load build up
	return func() error { cmd.Process.Kill(); cmd.Wait(); return nil }, nil
}

func ask(ctx context.Context, eng *diagnose.Engine, instance string, q []string) (diagnose.Verdict, float64, string, int64, string) {
	kind, name, to, dns, err := ParseArgs(q)
	if err != nil {
		return diagnose.Verdict{}, 0, "", 0, err.Error()
	}
	st, err := lab.GetStatus(instance)
	if err != nil {
		return diagnose.Verdict{}, 0, "", 0, err.Error()
	}
	req, err := Request(st, kind, name, to, dns)
	if err != nil {
		return diagnose.Verdict{}, 0, "", 0, err.Error()
	}
	f, err := eng.Diagnose(ctx, req)
	if err != nil {
		return diagnose.Verdict{}, 0, "", 0, err.Error()
	}
	return f.Verdict(), f.Confidence, f.Summary, f.Timings.TotalMS, ""
}

// WriteMatrix prints the rows as a table and the accuracy.
func WriteMatrix(w io.Writer, rows []Row) (correct int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tSEED\tQUESTION\tEXPECTED\tVERDICT\tCONF\tMS\tOK")
	seeds, seedsOK := 0, 0
	for _, r := range rows {
		ok := "yes"
		if !r.OK() {
			ok = "NO"
		} else {
			correct++
		}
		seed := ""
		if r.Seed {
			seed = "seed"
			seeds++
			if r.OK() {
				seedsOK++
			}
		}
		got := r.Got.String()
		if r.Err != "" {
			got = "error: " + r.Err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%d\t%s\n", r.Name, seed, strings.Join(r.Question, " "), r.Want, got, r.Confidence, r.TookMS, ok)
	}
	tw.Flush()
	fmt.Fprintf(w, "\naccuracy: %d/%d correct (%.0f %%), seed cases %d/%d\n", correct, len(rows), 100*float64(correct)/float64(max(1, len(rows))), seedsOK, seeds)
	return correct
}
