package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store"
	"github.com/netdiag/netdiag/store/storetest"
)

// TestHistory: the findings of a target, newest first, bounded by --since
// and -n, as text and JSON; bad input and a missing or damaged store are
// one-line errors.
func TestHistory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netdiag.db")
	// Finding i is about target i%20, made 40-i hours ago.
	fillStore(t, path, 40, 20, "cli", func(i int) time.Time { return time.Now().Add(-time.Duration(40-i) * time.Hour) })
	target, namespace, _ := storetest.Target(7)

	history := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"history", "--store", path}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	kind, name, _ := strings.Cut(target, " ")
	code, out, errOut := history(kind, name, "-o", "json")
	var list []store.FindingSummary
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	if len(list) != 2 || list[0].Target != target || !list[0].At.After(list[1].At) {
		t.Errorf("history of %s: %+v; want its 2 findings, newest first", target, list)
	}
	code, out, _ = history(kind, name, "--since", "20h", "-o", "json")
	list = nil
	json.Unmarshal([]byte(out), &list)
	if code != 0 || len(list) != 1 {
		t.Errorf("--since 20h: %d findings, want the one of the last 20 hours", len(list))
	}
	code, out, _ = history("--namespace", namespace, "-n", "3")
	if code != 0 || !strings.HasPrefix(out, "AT ") || strings.Count(out, "\n") != 4 {
		t.Errorf("--namespace %s -n 3: exit %d:\n%s", namespace, code, out)
	}
	if kind == "pod" {
		// NS/NAME alone is a pod.
		if code, out, _ := history(name); code != 0 || !strings.Contains(out, target) {
			t.Errorf("history %s: exit %d:\n%s", name, code, out)
		}
	}

	damaged := filepath.Join(dir, "damaged.db")
	os.WriteFile(damaged, bytes.Repeat([]byte("not bbolt"), 1000), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "-1h"}, "--since -1h0m0s: give a positive duration"},
		{[]string{"-n", "0"}, "-n 0: give 1 to 10000"},
		{[]string{"pod", "web"}, `target "pod web": a pod is NS/NAME`},
		{[]string{"deployment", "default/web"}, `unknown kind "deployment"`},
		{[]string{"a", "b", "c"}, "give one target"},
		{[]string{"-o", "yaml"}, "accepted: text, json"},
		{[]string{"--store", filepath.Join(dir, "nosuch.db")}, "no store at"},
		{[]string{"--store", damaged}, "is not a netdiag store or is damaged"},
	} {
		code, _, errOut := history(tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%v: exit %d %q, want 2 and one line saying %q", tc.args, code, errOut, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nosuch.db")); err == nil {
		t.Error("history created a store")
	}
}

// TestDiagnoseKeepsFinding: diagnose --store keeps the finding for history.
func TestDiagnoseKeepsFinding(t *testing.T) {
	b := labtest.NewBare(t, "keep", "a")
	path := filepath.Join(t.TempDir(), "netdiag.db")
	var out, errb bytes.Buffer
	if code := run([]string{"diagnose", "--netns", b.Path("a"), "--to", "127.0.0.1:9", "--drops", "off", "--store", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"history", "--store", path, "netns", b.Path("a"), "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("history: exit %d: %s", code, errb.String())
	}
	var list []store.FindingSummary
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) != 1 || list[0].Class != "port-unreachable" || list[0].Source != "cli" {
		t.Errorf("history after diagnose --store: %s", out.String())
	}
	out.Reset()
	if code := run([]string{"diagnose", "--netns", b.Path("a"), "--to", "127.0.0.1:9", "--store", "/nonexistent/dir/x.db"}, &out, &errb); code != exitUsage {
		t.Errorf("--store into a missing folder: exit %d", code)
	}
}

// fillStore writes n test findings into a new store: finding i about the
// target i%targets, made at(i).
func fillStore(t *testing.T, path string, n, targets int, source string, at func(i int) time.Time) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range n {
		tg, _, node := storetest.Target(i % targets)
		rec := &store.FindingRecord{FindingSummary: store.FindingSummary{Target: tg, Node: node, Source: source}, Finding: storetest.Finding(i, at(i))}
		if _, err := st.PutFinding(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
}
