package collectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
)

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    bool
		err     error
		status  Status
		kind    ErrorKind
		message string
	}{
		{"ok", true, nil, StatusOK, "", ""},
		{"nothing to do", false, NotApplicable("no destination"), StatusNotApplicable, KindNotApplicable, "no destination"},
		{"data and a note", true, NotApplicable("no IPVS"), StatusNotApplicable, KindNotApplicable, ""},
		{"partial", true, &tools.MissingError{Name: "ip6tables-save"}, StatusPartial, KindMissingTool, ""},
		{"timeout", false, fmt.Errorf("iptables-save: %w", context.DeadlineExceeded), StatusFailed, KindTimeout, ""},
		{"permission", false, fmt.Errorf("socket: %w", os.ErrPermission), StatusFailed, KindPermission, ""},
		{"too large", false, fmt.Errorf("x: %w", errTooLarge), StatusFailed, KindTooLarge, ""},
		{"bad input", false, badInput(errors.New("x")), StatusFailed, KindBadInput, ""},
		{"other", false, errors.New("boom"), StatusFailed, KindFailed, ""},
	} {
		s, k := statusOf(tc.data, tc.err)
		if s != tc.status || k != tc.kind {
			t.Errorf("%s: %s/%s, want %s/%s", tc.name, s, k, tc.status, tc.kind)
		}
	}
}

// TestEvidenceStatusCrossesJSON: the status survives the agent boundary,
// and evidence from before statuses gets one derived.
func TestEvidenceStatusCrossesJSON(t *testing.T) {
	var ev Evidence
	ev.Collector = "ping"
	ev.setResult(&Ping{Sent: 5}, NotApplicable("x"))
	b, _ := json.Marshal(ev)
	var back Evidence
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Status != StatusNotApplicable || back.ErrorKind != KindNotApplicable {
		t.Errorf("decoded %s/%s", back.Status, back.ErrorKind)
	}
	var old Evidence
	if err := json.Unmarshal([]byte(`{"collector":"tcp","scope":"source","error":"boom"}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Status != StatusFailed || old.Usable() {
		t.Errorf("old failed evidence: %s usable=%v", old.Status, old.Usable())
	}
}

// A collector that panics, registered only in this package's tests, in a
// scope no plan uses.
func init() {
	register(spec{name: "test-panic", help: "panics", scopes: []Scope{"test"}, timeout: time.Second},
		func(ctx context.Context, in Input) (*Links, error) {
			panic("a parser bug")
		})
}

func TestCollectorPanicIsEvidence(t *testing.T) {
	self, err := netns.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	ev := RunOne(context.Background(), self, "test", "test-panic", nil)
	if ev.Status != StatusFailed || ev.ErrorKind != KindPanic || !strings.Contains(ev.Error, "collector test-panic failed: panic") {
		t.Errorf("panicking collector: %s/%s %q", ev.Status, ev.ErrorKind, ev.Error)
	}
}

func TestRecoverInGoroutine(t *testing.T) {
	done := make(chan error)
	go func() {
		var err error
		defer func() { done <- err }()
		defer Recover("probe", &err)
		var p *Ping
		_ = p.Sent
	}()
	if err := <-done; KindOf(err) != KindPanic || !strings.Contains(err.Error(), "probe failed: panic") {
		t.Errorf("recovered: %v (%s)", err, KindOf(err))
	}
}

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	small := dir + "/small"
	os.WriteFile(small, []byte("nameserver 198.18.0.1\n"), 0o644)
	ctx := context.Background()
	if b, err := ReadFileLimit(ctx, small, 100); err != nil || len(b) == 0 {
		t.Errorf("small file: %q %v", b, err)
	}
	if _, err := ReadFileLimit(ctx, small, 5); KindOf(err) != KindTooLarge {
		t.Errorf("over the bound: %v", err)
	}
	for _, p := range []string{"/dev/zero", dir} {
		if _, err := ReadFileLimit(ctx, p, 100); KindOf(err) != KindBadInput || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v", p, err)
		}
	}
}
