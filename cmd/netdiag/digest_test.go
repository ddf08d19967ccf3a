package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store/storetest"
)

// TestDigest: a digest of the store's last two days, with its chart, and
// with a sweep of the lab where kube-proxy is evicted on one node: that
// node's row shows it.
func TestDigest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netdiag.db")
	ctx := context.Background()
	now := time.Now()
	fillStore(t, path, 60, 7, "slack", func(i int) time.Time { return now.Add(-time.Duration(i) * time.Hour) })
	chart := filepath.Join(dir, "chart.png")
	var out, errb bytes.Buffer
	if code := run([]string{"digest", "--store", path, "--since", "48h", "--chart", chart, "-o", "text"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	tg, _, _ := storetest.Target(0)
	if !strings.Contains(out.String(), tg) {
		t.Errorf("the digest does not name the recurring target %s:\n%s", tg, out.String())
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 100 {
		t.Errorf("chart: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "0s"}, "--since 0s: give a duration from 1m to 744h"},
		{[]string{"--tz", "Mars/Olympus"}, `--tz "Mars/Olympus": give an IANA time zone`},
		{[]string{"--sweep"}, "give --sweep --lab"},
		{[]string{"--chart", "/nonexistent/x.png"}, "its folder does not exist"},
		{[]string{"--store", filepath.Join(dir, "none.db")}, "no store at"},
	} {
		out.Reset()
		errb.Reset()
		args := append([]string{"digest", "--store", path}, tc.args...)
		if code := run(args, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d %q, want 2 saying %q", tc.args, code, errb.String(), tc.want)
		}
	}

	l := labtest.Up(t, "dig")
	if _, err := lab.InjectFault(ctx, l.Instance, "kube-proxy-evicted", nil); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"digest", "--store", path, "--sweep", "--lab", "--instance", l.Instance, "-o", "text"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	i := strings.Index(text, "node-b")
	if i < 0 || !strings.Contains(text, "dns-path-broken") || !strings.Contains(text, "kube-proxy") {
		t.Errorf("the sweep does not show node-b's broken DNS path and kube-proxy:\n%s", text)
	}
	t.Logf("\n%s", text)
}
