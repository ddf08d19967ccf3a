package slackfake

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Render is a message as the channel shows it, in plain text: the blocks
// when it has any (Slack shows those, and the text only in notifications),
// else the text. mrkdwn is read as Slack reads it: entities (&lt; &gt;
// &amp;) are decoded, links and mentions (<url|label>, <@U123>, <#C1|name>,
// <!here>) show as what they read, and a code block's fences go on lines of
// their own; *bold*, _italic_, `code` and :emoji: stay as typed.
//
// Blocks: a header is underlined, a section is its text followed by its
// fields (two to a line, "  |  " between) and its accessory, a context is
// its elements on one line, buttons and menus are [their label], an image
// is [image: its alt text], a divider is a line, and a block of a kind not
// known here is [kind]. Blocks are separated by a line break.
//
// Render shows m as given, not its later versions: Render(m.Latest()) is
// the message as it reads now, Render(m) as it was first posted.
func Render(m Message) string {
	var out []string
	if m.Ephemeral {
		out = append(out, "(only visible to @"+m.User+")")
	}
	var blocks []node
	err := json.Unmarshal(m.Blocks, &blocks)
	switch {
	case len(m.Blocks) == 0 || string(m.Blocks) == "null":
		out = append(out, mrkdwn(m.Text))
	case err != nil:
		out = append(out, mrkdwn(m.Text), fmt.Sprintf("[blocks not shown: %v]", err))
	case len(blocks) == 0:
		out = append(out, mrkdwn(m.Text))
	default:
		for _, b := range blocks {
			if s := b.block(); s != "" {
				out = append(out, s)
			}
		}
	}
	return strings.Join(out, "\n")
}

// node is any block, element or rich text element: the fields of each kind
// that Render reads. Text fields are raw because a text is an object in
// some places ({"type":"mrkdwn","text":"..."}) and a string in others.
type node struct {
	Type          string            `json:"type"`
	Text          json.RawMessage   `json:"text"`
	Fields        []json.RawMessage `json:"fields"`
	Accessory     *node             `json:"accessory"`
	Elements      []node            `json:"elements"`
	Element       *node             `json:"element"`
	Label         json.RawMessage   `json:"label"`
	Title         json.RawMessage   `json:"title"`
	Placeholder   json.RawMessage   `json:"placeholder"`
	InitialOption *struct {
		Text json.RawMessage `json:"text"`
	} `json:"initial_option"`
	InitialDate string          `json:"initial_date"`
	AltText     string          `json:"alt_text"`
	URL         string          `json:"url"`
	Name        string          `json:"name"`
	UserID      string          `json:"user_id"`
	ChannelID   string          `json:"channel_id"`
	UsergroupID string          `json:"usergroup_id"`
	Range       string          `json:"range"`
	Style       json.RawMessage `json:"style"` // a list's "bullet" or "ordered"; a text's {"bold":true}
	Indent      int             `json:"indent"`
	Source      string          `json:"source"` // a file block's
	ExternalID  string          `json:"external_id"`
}

func (n node) block() string {
	switch n.Type {
	case "header":
		t := text(n.Text)
		return t + "\n" + strings.Repeat("=", utf8.RuneCountInString(t))
	case "section":
		var lines []string
		// Slack shows no trailing line breaks.
		if t := strings.TrimRight(text(n.Text), "\n"); t != "" {
			lines = append(lines, t)
		}
		for i := 0; i < len(n.Fields); i += 2 {
			row := []string{flat(text(n.Fields[i]))}
			if i+1 < len(n.Fields) {
				row = append(row, flat(text(n.Fields[i+1])))
			}
			lines = append(lines, strings.Join(row, "  |  "))
		}
		if n.Accessory != nil {
			lines = append(lines, n.Accessory.element())
		}
		return strings.Join(lines, "\n")
	case "context":
		var parts []string
		for _, e := range n.Elements {
			if s := e.element(); s != "" {
				parts = append(parts, flat(s))
			}
		}
		return strings.Join(parts, "  ")
	case "actions":
		var parts []string
		for _, e := range n.Elements {
			parts = append(parts, e.element())
		}
		return strings.Join(parts, " ")
	case "divider":
		return "----"
	case "image":
		s := "[image: " + n.AltText + "]"
		if t := text(n.Title); t != "" {
			s = t + "\n" + s
		}
		return s
	case "rich_text":
		return n.richText()
	case "markdown":
		return string(unquote(n.Text))
	case "input":
		s := text(n.Label)
		if n.Element != nil {
			s += "\n" + n.Element.element()
		}
		return s
	case "file":
		return "[file " + n.ExternalID + "]"
	}
	return "[" + n.Type + "]"
}

// element is an interactive element, a context element or an accessory.
func (n node) element() string {
	switch n.Type {
	case "plain_text", "mrkdwn":
		return textObject(n.Type, unquote(n.Text))
	case "image":
		return "[image: " + n.AltText + "]"
	case "button":
		return "[" + text(n.Text) + "]"
	case "overflow":
		return "[...]"
	case "datepicker", "timepicker", "datetimepicker":
		if n.InitialDate != "" {
			return "[" + n.InitialDate + "]"
		}
	case "plain_text_input", "email_text_input", "url_text_input", "number_input":
		return "[" + text(n.Placeholder) + "_____]"
	}
	if strings.HasSuffix(n.Type, "_select") || strings.HasSuffix(n.Type, "_selects") {
		label := text(n.Placeholder)
		if n.InitialOption != nil {
			label = text(n.InitialOption.Text)
		}
		return "[" + label + " v]"
	}
	if t := text(n.Placeholder); t != "" {
		return "[" + t + "]"
	}
	return "[" + n.Type + "]"
}

// richText renders a rich_text block: sections, lists, quotes and
// preformatted text, one after the other.
func (n node) richText() string {
	var parts []string
	for _, e := range n.Elements {
		switch e.Type {
		case "rich_text_section":
			parts = append(parts, e.inline())
		case "rich_text_preformatted":
			parts = append(parts, "```\n"+strings.TrimSuffix(e.inline(), "\n")+"\n```")
		case "rich_text_quote":
			parts = append(parts, "> "+strings.ReplaceAll(e.inline(), "\n", "\n> "))
		case "rich_text_list":
			var style string
			_ = json.Unmarshal(e.Style, &style)
			indent := strings.Repeat("  ", e.Indent)
			var items []string
			for i, item := range e.Elements {
				mark := "•"
				if style == "ordered" {
					mark = strconv.Itoa(i+1) + "."
				}
				items = append(items, indent+mark+" "+item.inline())
			}
			parts = append(parts, strings.Join(items, "\n"))
		default:
			parts = append(parts, "["+e.Type+"]")
		}
	}
	return strings.Join(parts, "\n")
}

// inline is the text of a rich text section's elements.
func (n node) inline() string {
	var b strings.Builder
	for _, e := range n.Elements {
		switch e.Type {
		case "text":
			b.WriteString(unquote(e.Text))
		case "link":
			if t := unquote(e.Text); t != "" && t != e.URL {
				b.WriteString(t + " (" + e.URL + ")")
			} else {
				b.WriteString(e.URL)
			}
		case "emoji":
			b.WriteString(":" + e.Name + ":")
		case "user":
			b.WriteString("@" + e.UserID)
		case "channel":
			b.WriteString("#" + e.ChannelID)
		case "usergroup":
			b.WriteString("@" + e.UsergroupID)
		case "broadcast":
			b.WriteString("@" + e.Range)
		default:
			b.WriteString("[" + e.Type + "]")
		}
	}
	return b.String()
}

// text reads a text object ({"type":"mrkdwn","text":"..."}) or a bare
// string, which is plain text.
func text(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var obj struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return textObject(obj.Type, obj.Text)
	}
	return unquote(raw)
}

func textObject(typ, s string) string {
	if typ == "mrkdwn" {
		return mrkdwn(s)
	}
	return s
}

// unquote reads a JSON string; anything else reads as empty.
func unquote(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// flat puts a field's lines on one: "*Confidence*\n0.90" reads
// "*Confidence* 0.90".
func flat(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " \n ")), " ")
}

var entities = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")

// mrkdwn is mrkdwn as Slack shows it (see Render).
func mrkdwn(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			break
		}
		b.WriteString(entities.Replace(s[:i]))
		b.WriteString(angle(s[i+1 : i+j]))
		s = s[i+j+1:]
	}
	b.WriteString(entities.Replace(s))
	return fences(b.String())
}

// angle is what <inner> shows: a mention, a channel, a link.
func angle(inner string) string {
	target, label, labelled := strings.Cut(inner, "|")
	label = entities.Replace(label)
	switch {
	case strings.HasPrefix(target, "@"):
		if labelled {
			return "@" + strings.TrimPrefix(label, "@")
		}
		return target
	case strings.HasPrefix(target, "#"):
		if labelled {
			return "#" + strings.TrimPrefix(label, "#")
		}
		return target
	case strings.HasPrefix(target, "!"):
		if labelled {
			return label
		}
		cmd, arg, _ := strings.Cut(target[1:], "^")
		if cmd == "subteam" {
			return "@" + arg
		}
		return "@" + cmd
	}
	target = entities.Replace(target)
	if labelled && label != target {
		return label + " (" + target + ")"
	}
	return target
}

// fences puts each ``` of a code block on a line of its own, as Slack
// shows the block apart from the text around it.
func fences(s string) string {
	if !strings.Contains(s, "```") {
		return s
	}
	parts := strings.Split(s, "```")
	var b strings.Builder
	for k, p := range parts {
		if k > 0 {
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
				b.WriteByte('\n')
			}
			b.WriteString("```")
			if p != "" && !strings.HasPrefix(p, "\n") {
				b.WriteByte('\n')
			}
		}
		b.WriteString(p)
	}
	return b.String()
}
