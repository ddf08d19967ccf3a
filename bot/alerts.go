package bot

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/netdiag/netdiag/store"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// MaxWebhookBody is the largest Alertmanager payload taken.
const MaxWebhookBody = 1 << 20

// WebhookReply is what the webhook answers Alertmanager (and whoever reads
// its logs).
type WebhookReply struct {
	Status     string `json:"status"`
	Alerts     int    `json:"alerts"`
	Diagnosing int    `json:"diagnosing"`
	Error      string `json:"error,omitempty"`
}

// authorized checks the webhook's bearer token or basic auth in constant
// time.
func (b *Bot) authorized(r *http.Request) bool {
	a := b.opts.Alertmanager
	eq := func(got, want string) bool {
		g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
		return subtle.ConstantTimeCompare(g[:], w[:]) == 1
	}
	if a.Bearer.Set() {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		return ok && eq(tok, a.Bearer.Value())
	}
	if a.Username != "" {
		u, p, ok := r.BasicAuth()
		return ok && eq(u, a.Username) && eq(p, a.Password.Value())
	}
	return false // no credentials configured: take nothing from anyone
}

// handleAlertmanager records the alerts of one notification and answers 2xx
// only once they are on disk; Alertmanager retries anything else, so an
// alert is never lost. Diagnoses start after the answer.
func (b *Bot) handleAlertmanager(w http.ResponseWriter, r *http.Request) {
	reply := func(code int, rep WebhookReply) {
		b.metrics.request("alertmanager", code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(rep)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		reply(http.StatusMethodNotAllowed, WebhookReply{Status: "refused", Error: "POST an Alertmanager webhook notification"})
		return
	}
	if !b.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="netdiag"`)
		b.log.Warn("alertmanager webhook refused: bad or missing credentials", "remote", r.RemoteAddr)
		reply(http.StatusUnauthorized, WebhookReply{Status: "refused", Error: "bad or missing credentials (the receiver's http_config: authorization or basic_auth)"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			reply(http.StatusRequestEntityTooLarge, WebhookReply{Status: "refused", Error: fmt.Sprintf("body over %d bytes: lower max_alerts in the receiver", MaxWebhookBody)})
			return
		}
		reply(http.StatusBadRequest, WebhookReply{Status: "refused", Error: "reading the body: " + err.Error()})
		return
	}
	var msg webhook.Message
	if err := json.Unmarshal(body, &msg); err != nil || msg.Data == nil {
		if err == nil {
			err = errors.New("no alerts")
		}
		reply(http.StatusBadRequest, WebhookReply{Status: "refused", Error: "not an Alertmanager webhook notification (version 4): " + err.Error()})
		return
	}
	rep, jobs, err := b.recordAlerts(r.Context(), &msg)
	if err != nil {
		b.log.Error("alerts not recorded; Alertmanager will send them again", "group", msg.GroupKey, "err", err)
		reply(http.StatusInternalServerError, WebhookReply{Status: "not recorded", Error: err.Error()})
		return
	}
	reply(http.StatusOK, rep)
	for _, j := range jobs {
		b.submit(j)
	}
	b.deliver.Kick()
}

// recordAlerts maps, deduplicates and stores the notification's alerts and
// queues its thread's messages; it returns the diagnoses to start.
func (b *Bot) recordAlerts(ctx context.Context, msg *webhook.Message) (WebhookReply, []*job, error) {
	now := b.opts.Now()
	gk := msg.GroupKey
	if gk == "" {
		gk = "labels:" + msg.GroupLabels.SortedPairs().String()
	}
	rep := WebhookReply{Status: "recorded", Alerts: len(msg.Alerts)}
	channel := b.opts.Alertmanager.Channel
	var jobs []*job
	var seen []store.AlertSeen
	var msgs []store.Message
	var lines []string
	claimed := map[string]bool{} // targets taken by an earlier alert of this notification
	for _, a := range msg.Alerts {
		fp := a.Fingerprint
		if fp == "" {
			fp = model.LabelSet(labelSet(a.Labels)).Fingerprint().String()
		}
		prev, err := b.opts.Store.Alert(ctx, fp)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, nil, err
		}
		known := err == nil
		s := store.AlertSeen{Fingerprint: fp, Status: a.Status, StartsAt: a.StartsAt, EndsAt: a.EndsAt, GroupKey: gk,
			Name: a.Labels["alertname"], Summary: a.Annotations["summary"], LastNotified: now, Count: 1}
		if s.Status != store.AlertResolved {
			s.Status = store.AlertFiring
		}
		if known {
			s.Count = prev.Count + 1
			s.Target, s.Reason, s.Command, s.FindingID, s.Thread = prev.Target, prev.Reason, prev.Command, prev.FindingID, prev.Thread
		}
		sameEpisode := known && prev.StartsAt.Equal(a.StartsAt)
		switch {
		case s.Status == store.AlertResolved:
			if !(known && prev.Status == store.AlertResolved && sameEpisode) {
				b.metrics.alert("resolved")
				msgs = append(msgs, textMessage(channel, gk, "resolved "+fp+a.StartsAt.String(),
					fmt.Sprintf(":white_check_mark: resolved: %s %s", esc(s.Name), esc(orText(s.Target, s.Reason)))))
			}
		case sameEpisode && prev.Status == store.AlertFiring:
			b.metrics.alert("duplicate") // Alertmanager's repeat or retry of one episode
		default:
			q, ch, reason := MapAlert(a.Labels, a.Annotations, b.opts.Alertmanager.Mappings)
			s.Target, s.Reason, s.Command, s.FindingID = "", reason, "", ""
			if ch != "" && len(jobs) == 0 {
				channel = ch
			}
			if reason != "" {
				b.metrics.alert("unmapped")
				b.log.Info("alert maps to no target", "alert", s.Name, "fingerprint", fp, "reason", reason)
				break
			}
			s.Target, s.Command = q.Target(), commandOf(q)
			if last, why := b.cooling(ctx, q.Target(), now, claimed); why != "" {
				s.Reason = why
				b.metrics.alert("cooldown")
				if last != "" {
					s.FindingID = last
				}
				break
			}
			claimed[q.Target()] = true
			b.markTried(q.Target(), now)
			s.FindingID = store.NewID(now)
			b.metrics.alert("diagnosing")
			jobs = append(jobs, &job{q: q, command: s.Command, who: Who{User: "alertmanager"}, source: store.SourceAlert,
				findingID: s.FindingID, groupKey: gk, alert: fp})
		}
		if s.Thread.Channel == "" {
			s.Thread.Channel = channel
		}
		seen = append(seen, s)
		lines = append(lines, alertLine(s))
	}
	for _, j := range jobs {
		j.channel = channel
	}
	// The thread first: findings wait for it. A group seen before gets its
	// first message updated instead.
	header := groupHeader(msg, lines)
	first := store.Message{ID: store.KeyID(time.Time{}, "thread "+gk), Channel: channel, Kind: kindThread, Payload: mustJSON(textMsg{GroupKey: gk, Text: header})}
	if _, err := b.opts.Store.Thread(ctx, gk); err == nil {
		first = store.Message{ID: store.KeyID(time.Time{}, "header "+gk), Channel: channel, Kind: kindHeader, Payload: mustJSON(textMsg{GroupKey: gk, Text: header})}
	}
	msgs = append([]store.Message{first}, msgs...)
	for _, s := range seen {
		if s.Reason != "" && s.Status == store.AlertFiring {
			msgs = append(msgs, textMessage(channel, gk, "reason "+s.Fingerprint+s.StartsAt.String(), fmt.Sprintf(":information_source: %s: no diagnosis: %s", esc(s.Name), esc(s.Reason))))
		}
	}
	// One transaction, one sync: the alerts and their thread's messages.
	if err := b.opts.Store.PutAlertsAndEnqueue(ctx, seen, msgs); err != nil {
		return rep, nil, err
	}
	rep.Diagnosing = len(jobs)
	return rep, jobs, nil
}

// cooling says why a target is not diagnosed again now: another alert
// diagnoses it, or it was diagnosed within the cooldown (and by which
// finding).
func (b *Bot) cooling(ctx context.Context, target string, now time.Time, claimed map[string]bool) (lastID, why string) {
	if claimed[target] || b.busy(target) {
		return "", "cooldown: " + target + " is being diagnosed for another alert"
	}
	cd := time.Duration(b.opts.Alertmanager.Cooldown)
	// An attempt counts, not only a finding: a target that cannot be
	// diagnosed (not found) is not tried again at every alert.
	if at, ok := b.tried(target); ok && now.Sub(at) < cd {
		return "", fmt.Sprintf("cooldown: %s was tried %s ago without a finding; the next try after %s", target, now.Sub(at).Round(time.Second), at.Add(cd).Format(time.Kitchen))
	}
	recent, err := b.opts.Store.History(ctx, store.HistoryQuery{Target: target, Since: now.Add(-cd), Limit: 1})
	if err == nil && len(recent) > 0 {
		f := recent[0]
		return f.ID, fmt.Sprintf("cooldown: %s was diagnosed %s ago (%s/%s, finding %s); the next diagnosis after %s",
			target, now.Sub(f.At).Round(time.Second), f.Class, f.Cause, f.ID, f.At.Add(cd).Format(time.Kitchen))
	}
	return "", ""
}

func labelSet(kv template.KV) model.LabelSet {
	ls := model.LabelSet{}
	for k, v := range kv {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

func alertLine(s store.AlertSeen) string {
	icon := ":red_circle:"
	if s.Status == store.AlertResolved {
		icon = ":white_check_mark:"
	}
	return fmt.Sprintf("%s %s → %s", icon, esc(s.Name), esc(orText(s.Target, "no target")))
}

func groupHeader(msg *webhook.Message, lines []string) string {
	firing := 0
	for _, a := range msg.Alerts {
		if a.Status != store.AlertResolved {
			firing++
		}
	}
	state := fmt.Sprintf(":rotating_light: [FIRING:%d]", firing)
	if firing == 0 {
		state = ":white_check_mark: [RESOLVED]"
	}
	var gl []string
	for _, p := range msg.GroupLabels.SortedPairs() {
		gl = append(gl, p.Name+"="+p.Value)
	}
	sort.Strings(gl)
	text := fmt.Sprintf("%s %s", state, esc(strings.Join(gl, " ")))
	if len(lines) > 20 {
		lines = append(lines[:20:20], fmt.Sprintf("… and %d more", len(lines)-20))
	}
	text += "\n" + strings.Join(lines, "\n")
	if msg.TruncatedAlerts > 0 {
		text += fmt.Sprintf("\n_%d more alerts were left out by the receiver's max_alerts_", msg.TruncatedAlerts)
	}
	return clip(text, maxSectionText)
}

func orText(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own types, which always encode
	}
	return b
}

func commandOf(q Question) string {
	c := Command{Verb: q.Kind, Namespace: q.Namespace, Name: q.Name, To: q.To, DNS: q.DNS}
	return c.String()
}

// textMessage is one message for an alert group's thread. key makes it
// once-only: queueing the same key again replaces it.
func textMessage(channel, groupKey, key, text string) store.Message {
	return store.Message{ID: store.KeyID(time.Time{}, key+" "+groupKey), Channel: channel, Kind: kindText, Payload: mustJSON(textMsg{GroupKey: groupKey, Text: text})}
}

// enqueueText queues one message for an alert group's thread.
func (b *Bot) enqueueText(ctx context.Context, channel, groupKey, key, text string) {
	m := textMessage(channel, groupKey, key, text)
	if _, err := b.opts.Store.Enqueue(ctx, m); err != nil {
		b.log.Error("message for an alert thread not queued", "group", groupKey, "err", err, "text", text)
	}
}

// recover queues the diagnoses that alerts were promised but a restart
// interrupted: a firing alert whose reserved finding is not in the store.
func (b *Bot) recover(ctx context.Context) {
	open, err := b.opts.Store.OpenAlerts(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Error("reading open alerts", "err", err)
		}
		return
	}
	for _, a := range open {
		if a.FindingID == "" || a.Reason != "" || a.Command == "" {
			continue
		}
		if _, err := b.opts.Store.Finding(ctx, a.FindingID, false); !errors.Is(err, store.ErrNotFound) {
			continue
		}
		c, err := ParseCommand(a.Command)
		if err != nil {
			b.log.Error("an interrupted alert's diagnosis cannot be read back", "alert", a.Fingerprint, "command", a.Command, "err", err)
			continue
		}
		channel := orText(a.Thread.Channel, b.opts.Alertmanager.Channel)
		if b.submit(&job{q: QuestionOf(c), command: a.Command, who: Who{User: "alertmanager"}, source: store.SourceAlert,
			channel: channel, findingID: a.FindingID, groupKey: a.GroupKey, alert: a.Fingerprint}) {
			b.log.Info("diagnosing an alert a restart interrupted", "alert", a.Name, "target", a.Target, "finding", a.FindingID)
		}
	}
}
