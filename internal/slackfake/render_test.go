package slackfake_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/slack-go/slack"
)

func blocksJSON(t *testing.T, blocks ...slack.Block) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRender(t *testing.T) {
	md := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
	}
	pt := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
	}
	for _, tc := range []struct {
		name string
		msg  func(t *testing.T) slackfake.Message
		want string
	}{
		{
			name: "text only, entities and links",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: ":red_circle: a &lt;b&gt; &amp; c, <https://x.example/a?b=1&amp;c=2|the page>, <https://y.example>, <@U123>, <@U1|ann>, <#C9|ops>, <!here>, <!subteam^S1>, <!date^1^{date}|Jan 1>"}
			},
			want: ":red_circle: a <b> & c, the page (https://x.example/a?b=1&c=2), https://y.example, @U123, @ann, #ops, @here, @S1, Jan 1",
		},
		{
			name: "escaped mention stays text",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: "label &lt;!channel&gt; as typed"}
			},
			want: "label <!channel> as typed",
		},
		{
			name: "code block fences on their own lines",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: "before```== verdict\nline &lt;2&gt;```after"}
			},
			want: "before\n```\n== verdict\nline <2>\n```\nafter",
		},
		{
			name: "a finding's summary: header, section with fields, context, buttons",
			msg: func(t *testing.T) slackfake.Message {
				return slackfake.Message{Text: "fallback, not shown", Blocks: blocksJSON(t,
					slack.NewHeaderBlock(pt("port-unreachable/firewall")),
					slack.NewSectionBlock(md(":red_circle: *pod default/client → pod/default/web:8080*\nweb drops &lt;TCP&gt;"),
						[]*slack.TextBlockObject{md("*Confidence*\n0.95"), md("*Took*\n4.2 s"), md("*Family*\nIPv4")}, nil),
					slack.NewSectionBlock(md("*Key evidence*\n• `tcp` refused\n"), nil, nil),
					slack.NewContextBlock("", md("finding 01ABC · full evidence in the thread")),
					slack.NewActionBlock("acts",
						slack.NewButtonBlockElement("a", "v", pt("Run again")),
						slack.NewButtonBlockElement("b", "v", pt("Show raw"))),
				)}
			},
			want: "port-unreachable/firewall\n" +
				"=========================\n" +
				":red_circle: *pod default/client → pod/default/web:8080*\nweb drops <TCP>\n" +
				"*Confidence* 0.95  |  *Took* 4.2 s\n" +
				"*Family* IPv4\n" +
				"*Key evidence*\n• `tcp` refused\n" +
				"finding 01ABC · full evidence in the thread\n" +
				"[Run again] [Show raw]",
		},
		{
			name: "accessory, divider, image, select, unknown kind",
			msg: func(t *testing.T) slackfake.Message {
				sel := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, pt("Pick one"), "sel")
				return slackfake.Message{Blocks: blocksJSON(t,
					slack.NewSectionBlock(md("with a button"), nil, slack.NewAccessory(slack.NewButtonBlockElement("x", "v", pt("Open")))),
					slack.NewDividerBlock(),
					slack.NewImageBlock("https://i.example/a.png", "a graph", "", pt("Latency")),
					slack.NewActionBlock("acts", sel),
				), Text: "t"}
			},
			want: "with a button\n[Open]\n----\nLatency\n[image: a graph]\n[Pick one v]",
		},
		{
			name: "rich text",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Blocks: json.RawMessage(`[{"type":"rich_text","elements":[
					{"type":"rich_text_section","elements":[{"type":"text","text":"hi "},{"type":"user","user_id":"U1"},{"type":"text","text":" "},{"type":"emoji","name":"wave"},{"type":"text","text":" see "},{"type":"link","url":"https://x.example","text":"this"}]},
					{"type":"rich_text_list","style":"ordered","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"one"}]},{"type":"rich_text_section","elements":[{"type":"text","text":"two"}]}]},
					{"type":"rich_text_preformatted","elements":[{"type":"text","text":"$ ip route"}]},
					{"type":"rich_text_quote","elements":[{"type":"text","text":"quoted\ntwice"}]}
				]},{"type":"video"}]`)}
			},
			want: "hi @U1 :wave: see this (https://x.example)\n1. one\n2. two\n```\n$ ip route\n```\n> quoted\n> twice\n[video]",
		},
		{
			name: "ephemeral",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: "only you", Ephemeral: true, User: "U7"}
			},
			want: "(only visible to @U7)\nonly you",
		},
		{
			name: "blocks that do not parse show the text",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: "the text", Blocks: json.RawMessage(`{"not":"an array"}`)}
			},
			want: "the text\n[blocks not shown: json: cannot unmarshal object into Go value of type []slackfake.node]",
		},
		{
			name: "empty blocks show the text",
			msg: func(*testing.T) slackfake.Message {
				return slackfake.Message{Text: "the text", Blocks: json.RawMessage(`[]`)}
			},
			want: "the text",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := slackfake.Render(tc.msg(t)); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestRenderAsPosted renders what slack-go posted and the server recorded,
// first version and update.
func TestRenderAsPosted(t *testing.T) {
	s := slackfake.New(t)
	api := slack.New(s.BotToken(), slack.OptionAPIURL(s.APIURL()))
	ctx := context.Background()
	_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("fallback", false),
		slack.MsgOptionBlocks(slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, "Title", false, false))))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, "C1", ts, slack.MsgOptionText(":white_check_mark: done &lt;ok&gt;", false)); err != nil {
		t.Fatal(err)
	}
	m := s.Messages()[0]
	if got, want := slackfake.Render(m), "Title\n====="; got != want {
		t.Errorf("first version: %q, want %q", got, want)
	}
	if got, want := slackfake.Render(m.Latest()), ":white_check_mark: done <ok>"; got != want {
		t.Errorf("latest: %q, want %q", got, want)
	}
}

// TestStartClose runs a Server outside a test's lifetime: Start, use,
// Close twice.
func TestStartClose(t *testing.T) {
	s, err := slackfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	api := slack.New(s.BotToken(), slack.OptionAPIURL(s.APIURL()))
	if _, _, err := api.PostMessage("C1", slack.MsgOptionText("hi", false)); err != nil {
		t.Fatal(err)
	}
	// A method nobody implements is recorded, and logged nowhere.
	if _, err := api.GetTeamInfo(); err == nil || err.Error() != "unknown_method" {
		t.Errorf("team.info: %v, want unknown_method", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	s.Close()
	s.Close()
	if _, _, err := api.PostMessage("C1", slack.MsgOptionText("after", false)); err == nil {
		t.Error("a post after Close succeeded")
	}
}
