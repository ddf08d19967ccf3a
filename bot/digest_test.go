package bot_test

import (
	"bytes"
	"context"
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
