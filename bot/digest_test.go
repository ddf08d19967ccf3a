package bot_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot/digest"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/store"
	"github.com/netdiag/netdiag/store/storetest"
)

// `/netdiag digest` posts a digest of the store's findings in the channel
// with its chart in the thread; with Slack down it is kept in the outbox
// and posted once Slack is back, once.
func TestDigestInSlack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No lab: the digest reads the store only.
	h := startBot(t, &lab.Lab{Instance: "unused"}, config.Alertmanager{}, 0)
	now := time.Now().UTC()
	var recs []*store.FindingRecord
	for i := range 30 {
		target, _, node := storetest.Target(i)
		at := now.Add(-time.Duration(i) * time.Hour)
		recs = append(recs, &store.FindingRecord{FindingSummary: store.FindingSummary{Target: target, Node: node, Source: store.SourceAlert}, Finding: storetest.Finding(i, at)})
	}
	if err := h.store.PutFindings(ctx, recs); err != nil {
		t.Fatal(err)
	}
	svc := &digest.Service{Store: h.store, Specs: []digest.Spec{{Name: "daily", Schedule: "0 9 * * *", Channel: channel}}, Post: h.bot.DigestPoster()}
	h.bot.SetDigest(func(ctx context.Context, ch string) error {
		spec := svc.Specs[0]
		spec.Channel = ch
		return svc.Now(ctx, spec)
	})
	h.slack.Outage(http.StatusInternalServerError, 0)
	resp, body := h.slash(t, sre, "digest", true)
	if resp.StatusCode != 200 || !strings.Contains(body, "building the digest") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if err := waitFor(ctx, func() bool { return h.slack.Refused() > 0 }); err != nil {
		t.Fatal("the digest was not tried during the outage")
	}
	h.slack.Restore()
	var top slackfake.Message
	err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		for _, m := range s.Messages() {
			if m.ThreadTS == "" && strings.Contains(m.Text, "findings") {
				top = m
				return len(s.Files()) == 1
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no digest: %v\n%s", err, dump(h.slack.Messages()))
	}
	f := h.slack.Files()[0]
	if f.ThreadTS != top.TS || !bytes.HasPrefix(f.Bytes, []byte("\x89PNG")) {
		t.Errorf("chart %s in thread %q (digest %s), %d bytes", f.Name, f.ThreadTS, top.TS, len(f.Bytes))
	}
	time.Sleep(500 * time.Millisecond)
	n := 0
	for _, m := range h.slack.Messages() {
		if m.ThreadTS == "" && strings.Contains(m.Text, "findings") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d digests posted, want 1", n)
	}
}

// A digest longer than a Slack message: the message shows what fits and
// says where the rest is; the whole text is a file in its thread, once.
func TestLongDigestAsFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := startBot(t, &lab.Lab{Instance: "unused"}, config.Alertmanager{}, 0)
	now := time.Now()
	d := &digest.Digest{From: now.Add(-24 * time.Hour), To: now, Total: 400}
	// Every list is bounded (digest.TopN), but names are long: a pod's may
	// have 253 characters.
	long := func(i int) string { return fmt.Sprintf("pod shop/web-%d-%s", i, strings.Repeat("x", 200)) }
	for i := range 10 {
		d.Targets = append(d.Targets, digest.Recurring{Name: long(i), N: 2, Last: now, Mostly: "port-unreachable/firewall"})
		d.Inconclusive = append(d.Inconclusive, digest.Item{At: now, Class: "inconclusive", Cause: "agent-unreachable", Target: long(i), ID: fmt.Sprint(i)})
		d.OpenAlerts = append(d.OpenAlerts, digest.Alert{Name: "PodCannotReachBackend", Target: long(i), Since: now, Firing: 1})
	}
	text := d.Text()
	if len(text) < 4000 {
		t.Fatalf("the digest is only %d bytes; the test needs one over Slack's 3000", len(text))
	}
	h.slack.FailNext(1, http.StatusInternalServerError, 0) // the file upload waits for its turn
	if err := h.bot.DigestPoster().PostDigest(ctx, digest.Spec{Name: "daily", Schedule: "0 9 * * *", Channel: channel}, d, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool { return len(s.Files()) == 1 }); err != nil {
		t.Fatalf("no digest file: %v%s", err, dump(h.slack.Messages()))
	}
	time.Sleep(300 * time.Millisecond)
	ms, files := h.slack.Messages(), h.slack.Files()
	if len(ms) != 1 || len(files) != 1 {
		t.Fatalf("%d messages and %d files, want one each:%s", len(ms), len(files), dump(ms))
	}
	top := ms[0]
	if len(top.Text) > 3000 || !strings.Contains(top.Text, "pod shop/web-0-") || !strings.Contains(top.Text, "whole digest is in the thread") {
		t.Errorf("the digest message (%d bytes) does not show its head and where the rest is: %q", len(top.Text), top.Text)
	}
	if f := files[0]; f.ThreadTS != top.TS || string(f.Bytes) != text || !strings.HasSuffix(f.Name, ".txt") {
		t.Errorf("file %s in thread %q (digest %s), %d bytes of %d", f.Name, f.ThreadTS, top.TS, len(f.Bytes), len(text))
	}
}
