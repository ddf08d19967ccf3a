package bot_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/slack-go/slack"
)

// Socket Mode against a websocket server: the slash command and the buttons
// arrive over the bot's own connection and reach the same handlers as over
// HTTP; run again and capture 30 s end in findings in the channel, the
// capture's with its pcap; a refreshed connection is re-opened; a wrong app
// token stops the bot with a clear error.
func TestSocketMode(t *testing.T) {
	l := labtest.Up(t, "botsk")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := lab.InjectFault(ctx, l.Instance, "port-firewall", nil); err != nil {
		t.Fatal(err)
	}
	h := startBot(t, l, config.Alertmanager{}, 0)
	connected := make(chan struct{}, 4)
	sctx, scancel := context.WithCancel(ctx)
	sockDone := make(chan error, 1)
	go func() {
		sockDone <- h.bot.RunSocket(sctx, bot.SocketOptions{AppToken: h.slack.AppToken(), BotToken: h.slack.BotToken(), APIURL: h.slack.APIURL(),
			Connected: func() { connected <- struct{}{} }})
	}()
	defer func() {
		scancel()
		if err := <-sockDone; err != nil {
			t.Errorf("RunSocket after cancel: %v", err)
		}
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("socket mode never connected")
	}

	slash := func(text string) string {
		t.Helper()
		ack, err := h.slack.SendSlashCommand(ctx, slack.SlashCommand{Command: "/netdiag", Text: text, UserID: sre, ChannelID: channel})
		if err != nil {
			t.Fatal(err)
		}
		return string(ack)
	}
	if ack := slash("help"); !strings.Contains(ack, "finds out why a pod") || !strings.Contains(ack, `"ephemeral"`) {
		t.Fatalf("help over the socket: %s", ack)
	}
	if ack := slash("pod default/client to 198.19.999.1:80"); !strings.Contains(ack, "Accepted:") {
		t.Fatalf("bad command over the socket: %s", ack)
	}
	if ack := slash("pod default/client to pod/default/web:8080"); !strings.Contains(ack, "diagnosing pod default/client") {
		t.Fatalf("pod over the socket: %s", ack)
	}
	sum := h.findingMessage(t, ctx, "port-unreachable/firewall")

	// The buttons, pressed over the socket.
	var blocks []struct {
		Elements []struct {
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"elements"`
	}
	if err := json.Unmarshal(sum.Latest().Blocks, &blocks); err != nil {
		t.Fatal(err)
	}
	buttons := map[string]string{}
	for _, b := range blocks {
		for _, e := range b.Elements {
			if e.ActionID != "" {
				buttons[e.ActionID] = e.Value
			}
		}
	}
	if buttons[bot.ActionRunAgain] == "" || buttons[bot.ActionCapture] == "" {
		t.Fatalf("summary has no run again / capture button: %s", sum.Latest().Blocks)
	}
	press := func(action string) string {
		t.Helper()
		ic := slack.InteractionCallback{Type: slack.InteractionTypeBlockActions, User: slack.User{ID: sre},
			Channel:        slack.Channel{GroupConversation: slack.GroupConversation{Conversation: slack.Conversation{ID: channel}}},
			Message:        slack.Message{Msg: slack.Msg{Timestamp: sum.TS}},
			ResponseURL:    h.slack.NewResponseURL(),
			ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{{ActionID: action, Value: buttons[action]}}}}
		ack, err := h.slack.SendInteraction(ctx, ic)
		if err != nil {
			t.Fatal(err)
		}
		if len(ack) != 0 && string(ack) != "null" {
			t.Errorf("%s: the acknowledgement carries %s; Slack would show nothing of it", action, ack)
		}
		return ic.ResponseURL
	}

	// A refreshed connection (Slack asks every few hours) is re-opened and
	// the next press arrives over the new one.
	h.slack.Disconnect("refresh_requested")
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("socket mode did not reconnect after a disconnect")
	}
	// The client may see its new connection up before the server counts it.
	if err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool { return s.SocketsOpened() >= 2 }); err != nil {
		t.Fatalf("%d connections opened, want a second after the disconnect", h.slack.SocketsOpened())
	}

	h.waitResponse(t, ctx, press(bot.ActionRunAgain), "diagnosing pod default/client")
	if err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool { return countFindings(s, "port-unreachable/firewall") >= 2 }); err != nil {
		t.Fatalf("run again gave no second finding: %v%s", err, dump(h.slack.Messages()))
	}

	files := len(h.slack.Files())
	start := time.Now()
	h.waitResponse(t, ctx, press(bot.ActionCapture), "diagnosing")
	err := h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		for _, f := range s.Files()[files:] {
			if strings.HasSuffix(f.Name, ".pcap") {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("capture 30 s posted no pcap: %v%s", err, dump(h.slack.Messages()))
	}
	if took := time.Since(start); took < 30*time.Second {
		t.Errorf("capture 30 s ended after %s", took)
	}

	// A wrong app token: the bot stops with an error that says what to fix.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	err = h.bot.RunSocket(wctx, bot.SocketOptions{AppToken: "xapp-1-wrong", BotToken: h.slack.BotToken(), APIURL: h.slack.APIURL()})
	if !errors.Is(err, bot.ErrSocketAuth) || !strings.Contains(err.Error(), "connections:write") {
		t.Fatalf("wrong app token: %v", err)
	}
}

func countFindings(s *slackfake.Server, verdict string) int {
	n := 0
	for _, m := range s.Messages() {
		if strings.Contains(m.Latest().Text, verdict) && strings.Contains(m.Latest().Text, "confidence") {
			n++
		}
	}
	return n
}
