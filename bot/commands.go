package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/store"
	"github.com/slack-go/slack"
)

// Reply is the immediate answer to a command or a button: Slack shows it
// at once (HTTP response body, or Socket Mode acknowledgement payload).
type Reply struct {
	Msg       Msg
	Ephemeral bool
	// Empty means no visible answer (the work answers in the channel).
	Empty bool
}

// Command answers a slash command. It never waits for a diagnosis: the
// diagnosis runs on a worker and answers in the channel, so Slack's 3 s
// limit is met whatever the cluster does.
func (b *Bot) Command(ctx context.Context, sc slack.SlashCommand) Reply {
	who := Who{User: sc.UserID, Channel: sc.ChannelID}
	c, err := ParseCommand(sc.Text)
	if err != nil {
		b.auditText(ctx, who, sc.Text, "", "refused: "+err.Error())
		return cannotAsk(err, ErrCommand)
	}
	return b.run1(ctx, who, c, sc.Text, sc.ResponseURL)
}

// run1 runs a parsed command for who.
func (b *Bot) run1(ctx context.Context, who Who, c Command, typed, responseURL string) Reply {
	if c.Verb == "help" {
		return ephemeral(fmt.Sprintf("*netdiag* finds out why a pod's network is broken: it runs ping, a TCP connect, dig, a path-MTU probe and a capture inside the pod's namespace and on its node, and names the cause.\n%s\nYou may: %s",
			CommandHelp, b.opts.Access.Grants(ctx, who)))
	}
	verb, ns := c.Permission()
	if err := b.opts.Access.Allow(ctx, who, verb, ns); err != nil {
		b.auditText(ctx, who, typed, c.Target(), "denied: "+err.Error())
		b.log.Info("command denied", "user", who.User, "channel", who.Channel, "command", typed, "needs", verb, "namespace", ns)
		return ephemeral(":no_entry: " + esc(err.Error()))
	}
	switch c.Verb {
	case "history":
		return b.history(ctx, who, c, typed)
	case "digest":
		if b.opts.Digest == nil {
			return ephemeral("No digest is configured: add one under `digests:` in netdiag's config.")
		}
		go func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			err := b.opts.Digest(dctx, who.Channel)
			result := "digest posted"
			if err != nil {
				result = "error: " + err.Error()
				b.log.Error("digest on demand failed", "channel", who.Channel, "err", err)
				if responseURL != "" {
					b.opts.Chat.Respond(dctx, responseURL, PlainMsg(":warning: the digest failed: "+esc(err.Error())), true, false)
				}
			}
			b.auditText(dctx, who, typed, "", result)
		}()
		return ephemeral(":hourglass_flowing_sand: building the digest; it appears in this channel.")
	}
	if c.Filter != "" {
		snap := collectors.HeadersSnapLen
		if c.Payload {
			snap = collectors.PayloadSnapLen
		}
		if _, err := collectors.CompileFilter(ctx, c.Filter, snap); err != nil {
			return ephemeral(fmt.Sprintf(":x: filter %q: %s\nGive a tcpdump filter, e.g. \"tcp port 80\" or \"udp port 53\".", c.Filter, esc(err.Error())))
		}
	}
	q := QuestionOf(c)
	if ck, ok := b.opts.Diagnoser.(Checker); ok {
		if err := ck.Check(ctx, q); err != nil {
			b.auditText(ctx, who, typed, c.Target(), "refused: "+err.Error())
			if !errors.Is(err, ErrQuestion) {
				return ephemeral(":warning: " + esc(err.Error()))
			}
			return cannotAsk(err, ErrQuestion)
		}
	}
	j := &job{q: q, command: c.String(), who: who, source: store.SourceSlack, channel: who.Channel, responseURL: responseURL}
	if !b.submit(j) {
		return ephemeral(":hourglass: netdiag is busy (every worker is diagnosing); ask again in a minute.")
	}
	return ephemeral(fmt.Sprintf(":mag: diagnosing %s; the answer appears in this channel.", esc(c.Target())))
}

func (b *Bot) history(ctx context.Context, who Who, c Command, typed string) Reply {
	q := store.HistoryQuery{Limit: 10, Since: b.opts.Now().Add(-7 * 24 * time.Hour)}
	what := "everything"
	if c.Name != "" {
		q.TargetPrefix = "pod " + c.Namespace + "/" + c.Name
		what = c.Namespace + "/" + c.Name
	}
	list, err := b.opts.Store.History(ctx, q)
	if err != nil {
		return ephemeral(":warning: reading the history: " + esc(err.Error()))
	}
	b.auditText(ctx, who, typed, "", fmt.Sprintf("%d findings", len(list)))
	if len(list) == 0 {
		return ephemeral(fmt.Sprintf("No findings for %s in the last 7 days.", esc(what)))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "*Findings for %s, last 7 days (newest first)*\n", esc(what))
	for _, f := range list {
		fmt.Fprintf(&sb, "• %s %s `%s/%s` %s · %s\n", verdictEmoji(f.Class), f.At.Format("Jan 2 15:04"), f.Class, f.Cause, esc(f.Target), f.ID)
	}
	return ephemeral(sb.String())
}

// Interaction answers a button press: run again, capture 30 s, show raw.
// Slack shows nothing of what the acknowledgement of a button press
// carries, so the answer goes to the press's response_url (or, without
// one, as an ephemeral message) and the acknowledgement is empty.
func (b *Bot) Interaction(ctx context.Context, ic slack.InteractionCallback) Reply {
	r := b.interaction(ctx, ic)
	if r.Empty {
		return r
	}
	go func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var err error
		if ic.ResponseURL != "" {
			err = b.opts.Chat.Respond(actx, ic.ResponseURL, r.Msg, r.Ephemeral, false)
		} else {
			err = b.opts.Chat.Ephemeral(actx, ic.Channel.ID, ic.User.ID, r.Msg)
		}
		if err != nil {
			b.log.Warn("answer to a button press not delivered", "user", ic.User.ID, "channel", ic.Channel.ID, "text", r.Msg.Text, "err", err)
		}
	}()
	return Reply{Empty: true}
}

func (b *Bot) interaction(ctx context.Context, ic slack.InteractionCallback) Reply {
	who := Who{User: ic.User.ID, Channel: ic.Channel.ID}
	if ic.Type != slack.InteractionTypeBlockActions || len(ic.ActionCallback.BlockActions) == 0 {
		return Reply{Empty: true}
	}
	a := ic.ActionCallback.BlockActions[0]
	switch a.ActionID {
	case ActionRunAgain, ActionCapture:
		c, err := ParseCommand(a.Value)
		if err != nil {
			return ephemeral(":x: " + esc(err.Error()))
		}
		return b.run1(ctx, who, c, a.Value, ic.ResponseURL)
	case ActionShowRaw:
		rec, err := b.opts.Store.Finding(ctx, a.Value, false)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return ephemeral("That finding is no longer kept (the store's retention removed it).")
			}
			return ephemeral(":warning: " + esc(err.Error()))
		}
		verb := "pod"
		if k, _, _ := strings.Cut(rec.Target, " "); k == "svc" || k == "node" {
			verb = k
		}
		if err := b.opts.Access.Allow(ctx, who, verb, rec.Namespace); err != nil {
			return ephemeral(":no_entry: " + esc(err.Error()))
		}
		thread := ic.Message.ThreadTimestamp
		if thread == "" {
			thread = ic.Message.Timestamp
		}
		m := store.Message{Channel: who.Channel, Kind: kindRaw, Payload: mustJSON(rawMsg{FindingID: rec.ID, Thread: thread})}
		if _, err := b.opts.Store.Enqueue(ctx, m); err != nil {
			return ephemeral(":warning: " + esc(err.Error()))
		}
		b.deliver.Kick()
		b.auditText(ctx, who, "show raw "+rec.ID, rec.Target, "raw evidence posted")
		return ephemeral("The raw evidence is on its way to the thread.")
	}
	return Reply{Empty: true}
}

// cannotAsk answers a question netdiag cannot take as asked: why (the
// error without its kind's prefix), and what is accepted.
func cannotAsk(err, kind error) Reply {
	why := strings.TrimPrefix(err.Error(), kind.Error()+": ")
	return ephemeral(fmt.Sprintf(":x: %s\nAccepted: %s", esc(why), CommandHelp))
}

func ephemeral(text string) Reply { return Reply{Msg: PlainMsg(text), Ephemeral: true} }

func (b *Bot) auditText(ctx context.Context, who Who, what, target, result string) {
	b.auditEntry(ctx, store.AuditEntry{Who: who.User, What: what, Where: who.Channel, Target: target, Result: result})
}

// auditEntry writes the audit log; a failure is logged with the entry, so
// the record is not lost.
func (b *Bot) auditEntry(ctx context.Context, e store.AuditEntry) {
	if err := b.opts.Store.Audit(ctx, e); err != nil {
		b.log.Error("audit entry not written", "err", err, "entry", fmt.Sprintf("%+v", e))
	}
}
