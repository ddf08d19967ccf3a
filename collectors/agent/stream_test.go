package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/lab/labtest"
)

// pair is two bare namespaces, a pod and its peer with a TCP server, and
// an agent for their node (static token) that may run one capture at once.
type pair struct {
	b      *labtest.Bare
	server netip.AddrPort
	srv    *agent.Server
	ts     *httptest.Server
	calls  atomic.Int32
	fail   atomic.Int32 // answer 503 to this many calls first
}

func newPair(t *testing.T) *pair {
	t.Helper()
	b := labtest.NewBare(t, "astr", "pod", "peer")
	b.Link("pod", "eth0", []string{"198.18.52.2/24"}, "peer", "eth0", []string{"198.18.52.3/24"}, 1500)
	p := &pair{b: b, server: b.Serve("peer", "tcp", "198.18.52.3:8080", false)}
	srv, err := agent.New(agent.Config{Node: "node-a", Auth: agent.StaticToken{Token: "t"}, NodeNetns: b.Path("peer"),
		CRISockets: []string{}, ScanPrefix: b.Name(""), MaxCaptures: 1})
	if err != nil {
		t.Fatal(err)
	}
	p.srv = srv
	p.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.calls.Add(1)
		if p.fail.Add(-1) >= 0 {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		srv.ServeHTTP(w, r)
	}))
	p.ts.StartTLS()
	t.Cleanup(func() { p.ts.Close(); srv.Close() })
	return p
}

func (p *pair) client() *agent.Client {
	return &agent.Client{Node: "node-a", URL: p.ts.URL, HTTP: p.ts.Client(), Token: func() (string, error) { return "t", nil }, Retry: 10 * time.Millisecond}
}

func (p *pair) part(capture time.Duration, pcap string) *diagnose.Part {
	params := &collectors.Params{To: &collectors.Dest{Addr: p.server.Addr(), Port: p.server.Port()}, TCPAttempts: 2,
		Capture: collectors.CaptureOptions{Duration: capture, File: pcap}}
	pt := &diagnose.Part{Node: "node-a",
		Places: map[collectors.Scope]diagnose.Place{collectors.ScopeSource: {Node: "node-a", Pod: &diagnose.Pod{Namespace: "default", Name: "pod", IP: netip.MustParseAddr("198.18.52.2")}}},
		Jobs:   []collectors.Job{{Collector: "tcp", Scope: collectors.ScopeSource}},
		Params: params}
	if capture > 0 {
		pt.Jobs = append(pt.Jobs, collectors.Job{Collector: "capture", Scope: collectors.ScopeSource})
	}
	return pt
}

// TestPcapStreamedBack: the capture's pcap crosses back in the stream and
// lands where the question asked, and nothing stays on the node.
func TestPcapStreamedBack(t *testing.T) {
	p := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := filepath.Join(t.TempDir(), "web.pcap")
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "netdiag-*.pcap"))
	evs, err := p.client().Run(ctx, p.part(time.Second, want))
	if err != nil {
		t.Fatal(err)
	}
	var capt *collectors.CaptureResult
	for _, ev := range evs {
		if c, ok := ev.Data.(*collectors.CaptureResult); ok {
			capt = c
		}
	}
	if capt == nil {
		t.Fatalf("no capture evidence in %d records", len(evs))
	}
	if capt.File != want {
		t.Errorf("the evidence points at %s, want %s", capt.File, want)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	magic := uint32(0)
	if len(b) >= 4 {
		magic = binary.LittleEndian.Uint32(b)
	}
	if len(b) < 24 || (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) || int64(len(b)) != capt.Bytes || capt.Packets < 4 {
		t.Errorf("pcap of %d bytes (magic %x), evidence says %d bytes, %d packets", len(b), b[:min(4, len(b))], capt.Bytes, capt.Packets)
	}
	// The SYN to the server is in it.
	if !bytes.Contains(b, p.server.Addr().AsSlice()) {
		t.Error("the pcap does not hold the probe's packets")
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "netdiag-*.pcap"))
	if len(after) > len(before) {
		t.Errorf("the agent left pcaps behind: %v", after)
	}
}

// TestCaptureSlots: a node runs at most MaxCaptures captures; one more is
// told to come back, not queued; the slot frees when the watch ends.
func TestCaptureSlots(t *testing.T) {
	p := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := p.client()
	w, err := c.Watch(ctx, p.part(2*time.Second, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Run(ctx, p.part(time.Second, ""))
	if err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "already running 1 captures") {
		t.Errorf("a second capture: %v, want 429 saying the node is busy", err)
	}
	if _, err := c.Run(ctx, p.part(0, "")); err != nil {
		t.Errorf("a run without capture while the capture runs: %v", err)
	}
	evs, err := w.Finish(ctx)
	if err != nil || len(evs) != 2 {
		t.Fatalf("finish: %d evidence, %v", len(evs), err)
	}
	for _, ev := range evs {
		if c, ok := ev.Data.(*collectors.CaptureResult); ok && c.File != "" {
			os.Remove(c.File)
		}
	}
	if _, err := c.Run(ctx, p.part(time.Second, filepath.Join(t.TempDir(), "x.pcap"))); err != nil {
		t.Errorf("a capture once the slot is free: %v", err)
	}
}

// TestRetryOnce: a call the agent could not take (503) is retried once;
// two in a row is an unreachable node.
func TestRetryOnce(t *testing.T) {
	p := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.fail.Store(1)
	if _, err := p.client().Run(ctx, p.part(0, "")); err != nil || p.calls.Load() != 2 {
		t.Errorf("one 503: %v after %d calls, want success after 2", err, p.calls.Load())
	}
	p.calls.Store(0)
	p.fail.Store(2)
	_, err := p.client().Run(ctx, p.part(0, ""))
	if !errors.Is(err, diagnose.ErrUnreachable) || p.calls.Load() != 2 {
		t.Errorf("two 503s: %v after %d calls, want unreachable after 2", err, p.calls.Load())
	}
}
