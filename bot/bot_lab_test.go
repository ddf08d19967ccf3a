package bot_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/bot/labdiag"
	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store"
	"github.com/slack-go/slack"
)

func TestMain(m *testing.M) { labtest.Main(m) }

const (
	signingSecret = "test-signing-secret"
	channel       = "C0NETOPS"
	sre           = "U0SRE"
)

// harness is a bot on a lab, with Slack played by slackfake.
type harness struct {
	bot    *bot.Bot
	store  *store.Store
	slack  *slackfake.Server
	server *httptest.Server
	lab    *lab.Lab
	cancel context.CancelFunc
	done   chan struct{}
}

func startBot(t testing.TB, l *lab.Lab, am config.Alertmanager, capture time.Duration) *harness {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "netdiag.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fake := slackfake.New(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := bot.New(bot.Options{
		Store: st, Chat: bot.NewSlackChat(fake.BotToken(), fake.APIURL()),
		Diagnoser: &labdiag.Diagnoser{Instance: l.Instance, Log: log},
		Access: &bot.Access{Rules: []config.AccessRule{
			{Users: []string{sre}, Verbs: config.Verbs, Namespaces: []string{"*"}},
		}},
		SigningSecret: signingSecret, Alertmanager: am, DefaultChannel: channel,
		Capture: capture, Pace: 50 * time.Millisecond, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{bot: b, store: st, slack: fake, lab: l, cancel: cancel, done: make(chan struct{})}
	go func() { b.Run(ctx); close(h.done) }()
	h.server = httptest.NewServer(b.Handler())
	t.Cleanup(func() {
		h.server.Close()
		cancel()
		<-h.done
		st.Close()
	})
	select {
	case <-b.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("bot not ready")
	}
	return h
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// slash posts a slash command signed as Slack signs it.
func (h *harness) slash(t testing.TB, user, text string, sign bool) (*http.Response, string) {
	t.Helper()
	form := url.Values{"command": {"/netdiag"}, "text": {text}, "user_id": {user}, "channel_id": {channel},
		"team_id": {slackfake.TeamID}, "response_url": {h.slack.NewResponseURL()}, "trigger_id": {"1.2.3"}}
	return h.post(t, "/slack/commands", form.Encode(), sign)
}

func (h *harness) post(t testing.TB, path, body string, sign bool) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.server.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sign {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, []byte(signingSecret))
		fmt.Fprintf(mac, "v0:%s:%s", ts, body)
		req.Header.Set("X-Slack-Request-Timestamp", ts)
		req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// findingMessage waits for the summary of a finding in the channel: a
// message whose latest text names the verdict.
func (h *harness) findingMessage(t *testing.T, ctx context.Context, verdict string) slackfake.Message {
	t.Helper()
	var found slackfake.Message
	err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		for _, m := range s.Messages() {
			if strings.Contains(m.Latest().Text, verdict) && strings.Contains(m.Latest().Text, "confidence") {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no finding %q in the channel: %v\nmessages: %s", verdict, err, dump(h.slack.Messages()))
	}
	return found
}

// waitResponse waits for an answer posted to a response_url that says want.
func (h *harness) waitResponse(t *testing.T, ctx context.Context, responseURL, want string) slackfake.Response {
	t.Helper()
	var got slackfake.Response
	err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		for _, r := range s.Responses(responseURL) {
			if strings.Contains(r.Text, want) {
				got = r
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no answer saying %q at the response_url: %v (answers: %+v)", want, err, h.slack.Responses(responseURL))
	}
	return got
}

func dump(ms []slackfake.Message) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "\n  [%s %s thread=%s] %q (%d updates)", m.Channel, m.TS, m.ThreadTS, m.Latest().Text, len(m.Updates))
	}
	return b.String()
}

// A slash command for a lab pod ends in a summary updated in place from
// the progress message, a thread with the evidence, and the pcap whose bytes
// are the capture's; bad, unsigned and denied commands reach no diagnosis.
func TestSlashCommandOnLab(t *testing.T) {
	l := labtest.Up(t, "bots")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := lab.InjectFault(ctx, l.Instance, "port-firewall", nil); err != nil {
		t.Fatal(err)
	}
	h := startBot(t, l, config.Alertmanager{}, 2*time.Second)

	start := time.Now()
	resp, body := h.slash(t, sre, "pod default/client to pod/default/web:8080", true)
	ack := time.Since(start)
	if resp.StatusCode != 200 || !strings.Contains(body, "diagnosing pod default/client") || !strings.Contains(body, `"ephemeral"`) {
		t.Fatalf("ack %d %s", resp.StatusCode, body)
	}
	t.Logf("acknowledged in %s", ack)

	sum := h.findingMessage(t, ctx, "port-unreachable/firewall")
	if len(sum.Updates) < 2 {
		t.Errorf("the progress message was not updated in place as the work moved: %s", dump([]slackfake.Message{sum}))
	}
	sawCollecting := false
	for _, u := range sum.Updates {
		sawCollecting = sawCollecting || strings.Contains(u.Text, "collecting on")
	}
	if !sawCollecting {
		t.Errorf("no \"collecting on NODE\" step shown: %s", dump(sum.Updates))
	}
	var blocks []map[string]any
	json.Unmarshal(sum.Latest().Blocks, &blocks)
	if len(blocks) < 4 || !strings.Contains(string(sum.Latest().Blocks), bot.ActionRunAgain) {
		t.Errorf("summary blocks: %s", sum.Latest().Blocks)
	}
	// The thread: the evidence, then the pcap.
	err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		return len(s.Thread(channel, sum.TS)) >= 2 && len(s.Files()) >= 1
	})
	if err != nil {
		t.Fatalf("thread %s, files %d: %v", dump(h.slack.Thread(channel, sum.TS)), len(h.slack.Files()), err)
	}
	thread := h.slack.Thread(channel, sum.TS)
	if !strings.Contains(thread[1].Text, "Evidence") && !strings.Contains(thread[1].Text, "evidence") {
		t.Errorf("first reply is not the evidence: %q", thread[1].Text)
	}
	f := h.slack.Files()[0]
	if f.ThreadTS != sum.TS || !strings.HasSuffix(f.Name, ".pcap") {
		t.Fatalf("pcap %s in thread %s, want thread %s", f.Name, f.ThreadTS, sum.TS)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(f.Name, "finding-"), ".pcap")
	stored, err := h.store.Pcap(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, f.Bytes) || len(f.Bytes) <= 24 {
		t.Fatalf("uploaded pcap (%d bytes) is not the capture (%d bytes), or holds no packet", len(f.Bytes), len(stored))
	}
	// One file with both ends: the client's capture and web's, where the
	// firewall drops the SYNs after they arrive.
	if n, err := collectors.PcapPackets(f.Bytes); err != nil || n == 0 || !bytes.HasPrefix(f.Bytes, []byte{0x0A, 0x0D, 0x0D, 0x0A}) ||
		!bytes.Contains(f.Bytes, []byte("pod default/client (where")) || !bytes.Contains(f.Bytes, []byte("pod default/web (where")) {
		t.Errorf("the pcap (%d packets, %v) is not one pcapng with the source's and the destination's captures", n, err)
	}
	rec, err := h.store.Finding(ctx, id, false)
	if err != nil || rec.Source != store.SourceSlack || rec.Requester != sre || rec.Channel != channel {
		t.Fatalf("stored finding %+v: %v", rec, err)
	}
	// The evidence names the pcap as the thread has it, not a path on the
	// bot's disk.
	if rec.Finding.Pcap == nil || *rec.Finding.Pcap != f.Name {
		t.Errorf("the finding's pcap is %v, want %s", rec.Finding.Pcap, f.Name)
	}

	// Show raw: the raw evidence as a file in the thread.
	ic := slack.InteractionCallback{Type: slack.InteractionTypeBlockActions, User: slack.User{ID: sre}, Channel: slack.Channel{GroupConversation: slack.GroupConversation{Conversation: slack.Conversation{ID: channel}}},
		Message: slack.Message{Msg: slack.Msg{Timestamp: sum.TS}}, ResponseURL: h.slack.NewResponseURL(),
		ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{{ActionID: bot.ActionShowRaw, Value: id}}}}
	payload, _ := json.Marshal(&ic)
	resp, body = h.post(t, "/slack/interactions", url.Values{"payload": {string(payload)}}.Encode(), true)
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("show raw: %d %q, want an empty acknowledgement (Slack shows nothing of it)", resp.StatusCode, body)
	}
	h.waitResponse(t, ctx, ic.ResponseURL, "raw evidence")
	if err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool { return len(s.Files()) == 2 }); err != nil {
		t.Fatal("no raw evidence file")
	}
	if raw := h.slack.Files()[1]; !strings.HasSuffix(raw.Name, ".json") || raw.ThreadTS != sum.TS || !json.Valid(raw.Bytes) {
		t.Errorf("raw file %s in %s", raw.Name, raw.ThreadTS)
	}

	// Refused before any diagnosis: bad text, someone without the
	// permission, and a request Slack did not sign.
	before := len(h.slack.Messages())
	refused := []struct {
		name, user, text string
		sign             bool
		code             int
		want             string
	}{
		{"bad text", sre, "pod web", true, 200, "give NAMESPACE/NAME"},
		{"unknown verb", sre, "reboot node-a", true, 200, "Accepted:"},
		{"no permission", "U0NOBODY", "pod default/client", true, 200, `you need the \"pod\" permission in namespace default`},
		{"payload capture not granted", "U0NOBODY", "capture default/client payload", true, 200, "capture-payload"},
		{"unsigned", sre, "pod default/client", false, 401, "not signed by Slack"},
	}
	for _, r := range refused {
		resp, body := h.slash(t, r.user, r.text, r.sign)
		if resp.StatusCode != r.code || !strings.Contains(body, r.want) {
			t.Errorf("%s: %d %s, want %d containing %q", r.name, resp.StatusCode, body, r.code, r.want)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if after := len(h.slack.Messages()); after != before {
		t.Errorf("a refused command posted %d messages: %s", after-before, dump(h.slack.Messages()[before:]))
	}
	audit, _ := h.store.AuditLog(ctx, time.Time{}, 100)
	var denied, ok int
	for _, e := range audit {
		switch {
		case strings.HasPrefix(e.Result, "denied"):
			denied++
		case e.Result == "port-unreachable/firewall":
			ok++
		}
	}
	if denied != 2 || ok != 1 {
		t.Errorf("audit: %d denied, %d findings, want 2 and 1: %+v", denied, ok, audit)
	}
}
