package bot_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/bot/labdiag"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/store"
	"github.com/slack-go/slack"
)

// Access by Slack user group, the members read from Slack
// (usergroups.users.list): a member may do what the group is granted and
// no more, payload capture included; a non-member is told which permission
// is needed; a group Slack does not know grants nothing and says so; every
// command is audited.
func TestAccessByUserGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fake := slackfake.New(t)
	fake.SetGroupMembers("S0SRE", "U0ALICE", "U0CAROL")
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "netdiag.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat := bot.NewSlackChat(fake.BotToken(), fake.APIURL())
	b, err := bot.New(bot.Options{Store: st, Chat: chat, Diagnoser: &labdiag.Diagnoser{Instance: "unused"},
		Access: &bot.Access{Members: chat, Rules: []config.AccessRule{
			{Groups: []string{"S0SRE"}, Verbs: []string{"history", "capture"}, Namespaces: []string{"shop"}},
			{Groups: []string{"S0GONE"}, Verbs: []string{"digest"}, Namespaces: []string{"*"}},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, text string
		want       string
	}{
		{"U0ALICE", "history shop/web", "No findings for shop/web"},
		{"U0CAROL", "history shop/web", "No findings for shop/web"},
		{"U0ALICE", "history billing/api", `"history" permission in namespace billing`},
		{"U0ALICE", "capture shop/web payload", `"capture-payload"`},
		{"U0BOB", "history shop/web", `"history" permission in namespace shop`},
		{"U0ALICE", "digest", "user group could not be read"},
	} {
		r := b.Command(ctx, slack.SlashCommand{Command: "/netdiag", Text: tc.text, UserID: tc.user, ChannelID: channel})
		if !r.Ephemeral || !strings.Contains(r.Msg.Text, tc.want) {
			t.Errorf("%s: /netdiag %s: %q, want %q", tc.user, tc.text, r.Msg.Text, tc.want)
		}
	}
	calls := 0
	for _, c := range fake.Calls() {
		if c.Method == "usergroups.users.list" {
			calls++
		}
	}
	if calls != 2 { // S0SRE once (then cached), S0GONE once
		t.Errorf("usergroups.users.list called %d times, want 2 (members are cached)", calls)
	}
	log, err := st.AuditLog(ctx, time.Time{}, 100)
	if err != nil || len(log) != 6 {
		t.Fatalf("audit log: %d entries, %v; want one per command", len(log), err)
	}
}
