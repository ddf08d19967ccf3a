package labview_test

import (
	"context"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// TestAccuracyMatrix diagnoses every lab fault from the pod the fault hurts,
// and the healthy lab (also under background traffic), and requires the
// expected verdict every time.
func TestAccuracyMatrix(t *testing.T) {
	l := labtest.Up(t, "tdiag")
	rows, err := labview.RunMatrix(context.Background(), l.Instance, labview.Cases(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	correct := labview.WriteMatrix(&b, rows)
	t.Log("\n" + b.String())
	if correct != len(rows) {
		for _, r := range rows {
			if !r.OK() {
				t.Errorf("%s (%s): got %s (%.2f) %s%s, want %s", r.Name, strings.Join(r.Question, " "), r.Got, r.Confidence, r.Summary, r.Err, r.Want)
			}
		}
	}
}

func TestParseArgs(t *testing.T) {
	kind, name, to, dns, err := labview.ParseArgs([]string{"pod", "default/client", "--to", "svc/default/web:80", "--dns", "a", "--dns", "b"})
	if err != nil || kind != "pod" || name != "default/client" || to != "svc/default/web:80" || len(dns) != 2 {
		t.Errorf("got %s %s %s %v %v", kind, name, to, dns, err)
	}
	if _, _, _, _, err := labview.ParseArgs([]string{"pod"}); err == nil {
		t.Error("missing name accepted")
	}
}
