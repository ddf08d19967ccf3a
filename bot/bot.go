package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/store"
)

// Options build a Bot.
type Options struct {
	Store     *store.Store
	Chat      Chat
	Diagnoser Diagnoser
	Access    *Access
	// SigningSecret verifies Slack's requests (HTTP mode).
	SigningSecret string
	// Alertmanager is the webhook's credentials, cooldown, channel and
	// mappings.
	Alertmanager config.Alertmanager
	// DefaultChannel is where alerts go when nothing else says.
	DefaultChannel string
	// Workers is how many diagnoses run at once (default 2); Timeout bounds
	// each (default 2m).
	Workers int
	Timeout time.Duration
	// Capture is how long a diagnosis captures packets when the command
	// does not say (the pcap in the thread); 0 captures nothing.
	Capture time.Duration
	// Pace is the least time between two messages in a channel (default
	// 1s, Slack's pace for chat.postMessage).
	Pace time.Duration
	// Digest posts a digest now to a channel (`/netdiag digest`); nil when
	// no digest is configured.
	Digest func(ctx context.Context, channel string) error
	Log    *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Bot answers slash commands, button presses and alerts: it checks who
// asks, runs the diagnosis on a worker, keeps the finding in the store and
// delivers it through the outbox.
type Bot struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	deliver *Deliverer

	jobs     chan *job
	mu       sync.Mutex
	inflight map[string]bool      // by finding ID and by target
	lastTry  map[string]time.Time // by target: the last alert diagnosis started
	wg       sync.WaitGroup
	ready    chan struct{}
}

// job is one diagnosis to run.
type job struct {
	q       Question
	command string // the command as typed, for "run again" and the audit
	who     Who
	source  string // store.SourceSlack or store.SourceAlert
	channel string
	// responseURL answers the user when the channel cannot be written.
	responseURL string
	// findingID is reserved before the run (alerts), so a restart
	// finishes it under the same ID.
	findingID string
	groupKey  string
	alert     string // the fingerprint of the alert it answers
}

// New makes a bot; Run starts it.
func New(o Options) (*Bot, error) {
	if o.Store == nil || o.Chat == nil || o.Diagnoser == nil {
		return nil, errors.New("bot: needs a store, a chat and a diagnoser")
	}
	if o.Access == nil {
		o.Access = &Access{}
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Alertmanager.Cooldown == 0 {
		o.Alertmanager.Cooldown = config.Duration(config.DefaultCooldown)
	}
	if o.Alertmanager.Channel == "" {
		o.Alertmanager.Channel = o.DefaultChannel
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Bot{opts: o, log: o.Log, metrics: NewMetrics(), jobs: make(chan *job, 1024), inflight: map[string]bool{}, lastTry: map[string]time.Time{}, ready: make(chan struct{})}
	b.deliver = &Deliverer{Store: o.Store, Chat: o.Chat, Log: o.Log, Metrics: b.metrics, Now: o.Now, Pace: o.Pace}
	b.metrics.queueDepth = func() float64 { return float64(len(b.jobs)) }
	return b, nil
}

// SetDigest sets what `/netdiag digest` runs (the digest service, made
// after the bot because it posts through the bot's outbox).
func (b *Bot) SetDigest(f func(ctx context.Context, channel string) error) { b.opts.Digest = f }

// Metrics is the bot's Prometheus registry.
func (b *Bot) Metrics() *Metrics { return b.metrics }

// Run runs the workers, the delivery and the recovery of alerts whose
// diagnosis a restart interrupted, until ctx ends; then it waits for the
// running diagnoses (each bounded by Timeout).
func (b *Bot) Run(ctx context.Context) error {
	for range b.opts.Workers {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-b.jobs:
					b.runSafe(ctx, j)
				}
			}
		}()
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.deliver.Run(ctx)
	}()
	b.recover(ctx)
	close(b.ready)
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.wg.Wait()
			return nil
		case <-t.C:
			b.recover(ctx)
		}
	}
}

// Ready is closed once the bot has started and recovered what a restart
// left.
func (b *Bot) Ready() <-chan struct{} { return b.ready }

// submit queues a job; false when the same finding or target is already
// being diagnosed, or the queue is full (an alert's job is then picked up
// by the next recovery).
func (b *Bot) submit(j *job) bool {
	// Read before the job is on the queue: from then on a worker owns it.
	target := j.q.Target()
	b.mu.Lock()
	defer b.mu.Unlock()
	if (j.findingID != "" && b.inflight[j.findingID]) || (j.source == store.SourceAlert && b.inflight[target]) {
		return false
	}
	select {
	case b.jobs <- j:
	default:
		return false
	}
	if j.findingID != "" {
		b.inflight[j.findingID] = true
	}
	b.inflight[target] = true
	return true
}

func (b *Bot) done(j *job) {
	b.mu.Lock()
	delete(b.inflight, j.findingID)
	delete(b.inflight, j.q.Target())
	b.mu.Unlock()
}

func (b *Bot) markTried(target string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastTry[target] = at
	if len(b.lastTry) > 10000 {
		// Only tries within a cooldown matter.
		for t, when := range b.lastTry {
			if at.Sub(when) > time.Duration(b.opts.Alertmanager.Cooldown) {
				delete(b.lastTry, t)
			}
		}
	}
}

func (b *Bot) tried(target string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.lastTry[target]
	return at, ok
}

func (b *Bot) busy(target string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight[target]
}

// runSafe runs a job; a bug in one diagnosis is logged and the bot goes on.
func (b *Bot) runSafe(ctx context.Context, j *job) {
	defer func() {
		if r := recover(); r != nil {
			b.done(j)
			b.log.Error("a diagnosis panicked; the bot goes on", "target", j.q.Target(), "panic", r, "stack", string(debug.Stack()))
			b.metrics.failedDiagnosis(j.source)
		}
	}()
	b.run(ctx, j)
}

// run diagnoses one job and records the finding with its delivery.
func (b *Bot) run(ctx context.Context, j *job) {
	defer b.done(j)
	log := b.log.With("target", j.q.Target(), "source", j.source, "who", j.who.User)
	var placeholder string
	if j.source == store.SourceSlack {
		ts, err := b.opts.Chat.Post(ctx, j.channel, "", ProgressMsg(j.q.Target(), j.who.User, "resolving"))
		if err != nil {
			b.metrics.slackError("chat.postMessage")
			log.Warn("could not post the progress message", "channel", j.channel, "err", err)
			if code := SlackError(err); (code == "not_in_channel" || code == "channel_not_found") && j.responseURL != "" {
				msg := PlainMsg(fmt.Sprintf(":warning: I cannot post in this channel (%s): invite me with `/invite @netdiag`, then ask again.", code))
				if err := b.opts.Chat.Respond(ctx, j.responseURL, msg, true, false); err != nil {
					log.Warn("could not answer through response_url", "err", err)
				}
				b.audit(ctx, j, "refused: the bot cannot post in the channel ("+code+")", "")
				return
			}
		}
		placeholder = ts
	}
	// A diagnosis has three or four steps: each one is shown.
	progress := func(step string) {
		log.Debug("diagnosis step", "step", step)
		if placeholder == "" {
			return
		}
		if err := b.opts.Chat.Update(ctx, j.channel, placeholder, ProgressMsg(j.q.Target(), j.who.User, step)); err != nil {
			log.Debug("progress update failed", "err", err)
		}
	}
	if j.q.Capture == 0 {
		j.q.Capture = b.opts.Capture
	}
	dctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	start := time.Now()
	ans, err := b.opts.Diagnoser.Diagnose(dctx, j.q, progress)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: an alert's job is recovered at the next start
		}
		b.failed(ctx, j, placeholder, err)
		return
	}
	if ans.Finding.Pcap != nil {
		defer removePcaps(*ans.Finding.Pcap)
	}
	f := ans.Finding
	b.metrics.diagnosed(f.Class, f.Cause, j.source, time.Since(start))
	id := j.findingID
	if id == "" {
		id = store.NewID(b.opts.Now())
	}
	rec := &store.FindingRecord{
		FindingSummary: store.FindingSummary{ID: id, Target: j.q.Target(), Node: ans.Node, Source: j.source,
			Requester: j.who.User, Channel: j.channel, Thread: placeholder},
		Finding: f,
	}
	d := delivery{FindingID: id, GroupKey: j.groupKey, SummaryTS: placeholder, Command: j.command}
	if j.q.Kind == "pod" {
		d.CapturePod = j.q.Namespace + "/" + j.q.Name
	}
	payload, _ := json.Marshal(d)
	msg := &store.Message{ID: id, Channel: j.channel, Kind: kindFinding, Payload: payload}
	pcap := ""
	if f.Pcap != nil {
		// The file goes into the store and then into the thread under
		// this name; the path on the bot's disk is gone by then.
		pcap = *f.Pcap
		name := pcapName(id)
		f.Pcap = &name
	}
	if err := b.opts.Store.Record(ctx, rec, pcap, msg); err != nil {
		log.Error("could not store the finding; it is lost unless asked again", "err", err)
		b.failed(ctx, j, placeholder, fmt.Errorf("storing the finding: %w", err))
		return
	}
	b.audit(ctx, j, f.Class+"/"+f.Cause, id)
	log.Info("finding", "id", id, "verdict", f.Class+"/"+f.Cause, "confidence", f.Confidence, "took", time.Since(start).Round(time.Millisecond))
	b.deliver.Kick()
}

// failed tells the asker that no finding could be made, and why.
func (b *Bot) failed(ctx context.Context, j *job, placeholder string, err error) {
	text := fmt.Sprintf(":warning: could not diagnose %s: %s", esc(j.q.Target()), esc(err.Error()))
	result := "error: " + err.Error()
	if errors.Is(err, ErrQuestion) {
		text = fmt.Sprintf(":grey_question: %s", esc(err.Error()))
		result = "refused: " + err.Error()
	}
	b.log.Warn("no finding", "target", j.q.Target(), "err", err)
	b.metrics.failedDiagnosis(j.source)
	b.audit(ctx, j, result, "")
	if j.source == store.SourceAlert {
		// The alert's thread hears it: through the outbox, like a finding.
		b.enqueueText(ctx, j.channel, j.groupKey, "failed "+j.findingID, text)
		// The alert keeps why, so a restart does not run it again.
		al, aerr := b.opts.Store.Alert(ctx, j.alert)
		if aerr == nil && al.FindingID == j.findingID {
			al.Reason = "no finding: " + err.Error()
			aerr = b.opts.Store.PutAlert(ctx, al)
		}
		if aerr != nil {
			b.log.Error("recording why an alert has no finding", "alert", j.alert, "err", aerr)
		}
		return
	}
	if placeholder != "" {
		if err := b.opts.Chat.Update(ctx, j.channel, placeholder, PlainMsg(text)); err == nil {
			return
		}
	}
	if j.responseURL != "" {
		b.opts.Chat.Respond(ctx, j.responseURL, PlainMsg(text), true, false)
	}
}

func (b *Bot) audit(ctx context.Context, j *job, result, findingID string) {
	who := j.who
	if j.source == store.SourceAlert {
		who.User = "alertmanager"
	}
	b.auditEntry(ctx, store.AuditEntry{Who: who.User, What: j.command, Where: j.channel, Target: j.q.Target(), Result: result, FindingID: findingID})
}
