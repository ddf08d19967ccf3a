package main

import (
	"context"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab/labtest"
)

type fakeThread struct {
	msgs  []slackfake.Message
	files []slackfake.File
}

func (f fakeThread) Thread(channel, ts string) []slackfake.Message {
	var out []slackfake.Message
	for _, m := range f.msgs {
		if m.Channel == channel && (m.TS == ts || m.ThreadTS == ts) {
			out = append(out, m)
		}
	}
	return out
}

func (f fakeThread) Files() []slackfake.File { return f.files }

func TestViewThread(t *testing.T) {
	head := slackfake.Message{Channel: demoChannel, TS: "1.1", Text: ":rotating_light: [FIRING:1] alertname=" + demoAlertName}
	other := slackfake.Message{Channel: demoChannel, TS: "1.2", Text: "another group"}
	summary := slackfake.Message{Channel: demoChannel, TS: "1.3", ThreadTS: "1.1", Text: ":red_circle: port-unreachable/firewall (confidence 0.95): x"}
	evidence := slackfake.Message{Channel: demoChannel, TS: "1.4", ThreadTS: "1.1", Text: "```port-unreachable/firewall  (confidence 0.95)```"}
	note := slackfake.Message{Channel: demoChannel, TS: "1.5", ThreadTS: "1.1", Text: "no capture: why"}
	pcap := slackfake.File{Channel: demoChannel, ThreadTS: "1.1", Name: "finding-1.pcap"}
	elsewhere := slackfake.File{Channel: demoChannel, ThreadTS: "1.2", Name: "finding-2.pcap"}
	txt := slackfake.File{Channel: demoChannel, ThreadTS: "1.1", Name: "finding-1.txt"}

	v := viewThread(fakeThread{msgs: []slackfake.Message{head, other}}, "1.1")
	if v.head.TS != "1.1" || len(v.replies) != 0 || v.summary != -1 || v.evidence || v.pcap {
		t.Errorf("a thread with no replies: %+v", v)
	}
	v = viewThread(fakeThread{msgs: []slackfake.Message{head, other, summary, evidence}, files: []slackfake.File{elsewhere, pcap}}, "1.1")
	if len(v.replies) != 2 || v.summary != 0 || !v.evidence || !v.pcap || len(v.files) != 1 {
		t.Errorf("summary, evidence, pcap: %+v", v)
	}
	if got := v.counts(); got != "2 replies, 1 file" {
		t.Errorf("counts %q", got)
	}
	// The evidence as a file, and a note instead of the pcap.
	v = viewThread(fakeThread{msgs: []slackfake.Message{head, summary, note}, files: []slackfake.File{txt}}, "1.1")
	if v.summary != 0 || !v.evidence || v.pcap {
		t.Errorf("evidence as a file: %+v", v)
	}
}

// privateTemp gives the test a temporary folder of its own as TMPDIR, so
// that what the bot part leaves there is its own and not another test's.
func privateTemp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

// leftovers lists what is left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func demoCLI(t *testing.T) (*cli, *syncBuffer, *syncBuffer) {
	out, errs := &syncBuffer{}, &syncBuffer{}
	return &cli{stdout: out, stderr: errs, log: slog.New(slog.NewTextHandler(errs, nil))}, out, errs
}

var pidRE = regexp.MustCompile(`\(pid (\d+)\)`)

// checkStopped checks that the Alertmanager the output names is gone.
func checkStopped(t *testing.T, out string) {
	t.Helper()
	m := pidRE.FindStringSubmatch(out)
	if m == nil {
		return // not started
	}
	pid, _ := strconv.Atoi(m[1])
	if comm, err := os.ReadFile("/proc/" + m[1] + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "alertmanager" {
		t.Errorf("alertmanager (pid %d) still running", pid)
	}
}

// The bot part of the demo on a lab: the alert's thread with the finding
// and its pcap, then the resolve; nothing left running or on disk.
func TestDemoBot(t *testing.T) {
	l := labtest.Up(t, "dbot")
	tmp := privateTemp(t)
	c, out, errs := demoCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := runDemoBot(ctx, c, l.Instance); err != nil {
		t.Fatalf("runDemoBot: %v\nstdout:\n%s\nstderr:\n%s", err, out, errs)
	}
	text := out.String()
	for _, want := range []string{
		"$ curl -XPOST http://127.0.0.1:",
		"| :rotating_light: [FIRING:1] alertname=" + demoAlertName,
		"| port-unreachable/firewall\n",
		"| [Run again] [Capture 30 s] [Show raw]",
		"| ```\n",
		".pcap  ",
		"packets\n",
		"alert posted to Alertmanager -> thread opened ",
		"| :white_check_mark: [RESOLVED] alertname=" + demoAlertName,
		"| :white_check_mark: resolved: " + demoAlertName,
		"alert resolved in Alertmanager -> first message edited ",
		"(fault port-firewall cleared)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the output:\n%s", want, text)
		}
	}
	checkStopped(t, text)
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind in TMPDIR: %v", left)
	}
}

// Ctrl-C in the middle of the bot part: an error, and everything stopped
// and removed all the same.
func TestDemoBotInterrupted(t *testing.T) {
	l := labtest.Up(t, "dbi")
	tmp := privateTemp(t)
	c, out, errs := demoCLI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Once the alert is posted: the bot is diagnosing it.
		for !strings.Contains(out.String(), "$ curl") {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
		cancel()
	}()
	start := time.Now()
	err := runDemoBot(ctx, c, l.Instance)
	if err == nil {
		t.Fatalf("no error after the interrupt\nstdout:\n%s", out)
	}
	t.Logf("error after %s: %v\nstderr:\n%s", time.Since(start).Round(time.Millisecond), err, errs)
	checkStopped(t, out.String())
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Errorf("left behind in TMPDIR: %v", left)
	}
}
