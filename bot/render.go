package bot

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/slack-go/slack"
)

// Slack's limits that shape our messages.
const (
	maxSectionText = 3000
	maxHeaderText  = 150
	maxButtonValue = 2000
	keyEvidence    = 5
	keySteps       = 3
)

// Msg is a chat message: text (the notification and fallback) and blocks.
type Msg struct {
	Text   string        `json:"text"`
	Blocks []slack.Block `json:"-"`
}

// Button action IDs.
const (
	ActionRunAgain = "netdiag_run_again"
	ActionCapture  = "netdiag_capture"
	ActionShowRaw  = "netdiag_show_raw"
)

// esc makes text safe for Slack's mrkdwn: an alert label or a collector's
// output can hold "<!channel>" or a link, which must show as typed.
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// clip shortens s to at most n bytes on a rune boundary, saying so.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = " …"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

func verdictEmoji(class string) string {
	switch class {
	case "healthy":
		return ":large_green_circle:"
	case "inconclusive":
		return ":grey_question:"
	}
	return ":red_circle:"
}

// ProgressMsg is the message that stands for a diagnosis while it runs.
func ProgressMsg(what, who, step string) Msg {
	text := fmt.Sprintf(":hourglass_flowing_sand: diagnosing %s", esc(what))
	if who != "" {
		text += fmt.Sprintf(" (asked by <@%s>)", who)
	}
	text += " · " + esc(step)
	return Msg{Text: text, Blocks: []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, clip(text, maxSectionText), false, false), nil, nil)}}
}

// FindingMsg is the summary of a finding as the channel shows it: the
// verdict, the confidence, the key evidence, the next steps and buttons.
// command, when not empty, is what "run again" runs; capturePod the pod
// "capture 30s" captures in.
func FindingMsg(f *diagnose.Finding, id, command, capturePod string, inThread bool) Msg {
	title := clip(fmt.Sprintf("%s/%s", f.Class, f.Cause), maxHeaderText)
	text := fmt.Sprintf("%s %s/%s (confidence %.2f): %s", verdictEmoji(f.Class), f.Class, f.Cause, f.Confidence, f.Summary)
	var blocks []slack.Block
	blocks = append(blocks, slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, title, true, false)))
	summary := fmt.Sprintf("%s *%s*\n%s", verdictEmoji(f.Class), esc(f.Question), esc(f.Summary))
	fields := []*slack.TextBlockObject{
		slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("*Confidence*\n%.2f", f.Confidence), false, false),
		slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("*Took*\n%.1f s", float64(f.Timings.TotalMS)/1000), false, false),
	}
	if f.Family != "" {
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, "*Family*\n"+f.Family, false, false))
	}
	blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, clip(summary, maxSectionText), false, false), fields, nil))
	if len(f.Evidence) > 0 {
		var b strings.Builder
		b.WriteString("*Key evidence*\n")
		for i, e := range f.Evidence {
			if i == keyEvidence {
				fmt.Fprintf(&b, "_and %d more in the thread_\n", len(f.Evidence)-keyEvidence)
				break
			}
			fmt.Fprintf(&b, "• `%s` %s\n", esc(e.Collector), esc(clip(e.Observation, 400)))
		}
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, clip(b.String(), maxSectionText), false, false), nil, nil))
	}
	if len(f.NextSteps) > 0 {
		var b strings.Builder
		b.WriteString("*Next steps*\n")
		for i, s := range f.NextSteps {
			if i == keySteps {
				break
			}
			fmt.Fprintf(&b, "%d. %s\n", i+1, esc(clip(s, 600)))
		}
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, clip(b.String(), maxSectionText), false, false), nil, nil))
	}
	ctx := fmt.Sprintf("finding %s", id)
	if inThread {
		ctx += " · full evidence and the pcap in the thread"
	}
	blocks = append(blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, ctx, false, false)))
	var buttons []slack.BlockElement
	if command != "" && len(command) <= maxButtonValue {
		buttons = append(buttons, slack.NewButtonBlockElement(ActionRunAgain, command, slack.NewTextBlockObject(slack.PlainTextType, "Run again", false, false)))
	}
	if capturePod != "" {
		buttons = append(buttons, slack.NewButtonBlockElement(ActionCapture, "capture "+capturePod+" for 30s", slack.NewTextBlockObject(slack.PlainTextType, "Capture 30 s", false, false)))
	}
	buttons = append(buttons, slack.NewButtonBlockElement(ActionShowRaw, id, slack.NewTextBlockObject(slack.PlainTextType, "Show raw", false, false)))
	blocks = append(blocks, slack.NewActionBlock("netdiag_actions", buttons...))
	return Msg{Text: clip(text, maxSectionText), Blocks: blocks}
}

// Preformatted shows text as a code block. When the block does not fit in a
// message, it holds the lines that do and then note, and whole is false:
// the caller posts the text as a file too, so nothing is cut away unseen.
func Preformatted(text, note string) (m Msg, whole bool) {
	body := esc(text)
	if len("```"+body+"```") <= maxSectionText {
		return PlainMsg("```" + body + "```"), true
	}
	tail := "```\n" + note
	head := clip(body, max(0, maxSectionText-len("```")-len(tail)))
	if i := strings.LastIndexByte(head, '\n'); i > 0 {
		head = head[:i+1]
	}
	return PlainMsg("```" + head + tail), false
}

// EvidenceText is the whole finding as text, for the thread: as a message
// when it fits (Preformatted), else as a file.
func EvidenceText(f *diagnose.Finding) string {
	var b bytes.Buffer
	f.WriteText(&b)
	return b.String()
}

// PlainMsg is a message of one mrkdwn section.
func PlainMsg(text string) Msg {
	return Msg{Text: clip(text, maxSectionText), Blocks: []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, clip(text, maxSectionText), false, false), nil, nil)}}
}
