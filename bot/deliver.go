package bot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/netdiag/netdiag/store"
)

// Outbox message kinds.
const (
	kindFinding = "finding" // a finding: summary, evidence, pcap
	kindText    = "text"    // one message, in a group's thread if it names one
	kindThread  = "thread"  // the message that opens an alert group's thread
	kindHeader  = "header"  // a new text for an alert group's first message
	kindRaw     = "raw"     // a finding's raw evidence as a file
)

// delivery is a finding's way to the channel, step by step. Each step done
// is saved before the next, so a retry or a restart does not repeat it.
type delivery struct {
	FindingID string `json:"finding_id"`
	// GroupKey names the alert group whose thread the finding goes in.
	GroupKey string `json:"group_key,omitempty"`
	// Thread is where the summary goes (an alert group's thread); empty:
	// the channel itself, and the details go in the summary's thread.
	Thread string `json:"thread,omitempty"`
	// SummaryTS is the message that shows the summary: the progress
	// message, updated in place, or the one posted.
	SummaryTS    string `json:"summary_ts,omitempty"`
	Posted       bool   `json:"posted,omitempty"`
	EvidenceDone bool   `json:"evidence_done,omitempty"`
	PcapDone     bool   `json:"pcap_done,omitempty"`
	Command      string `json:"command,omitempty"`
	CapturePod   string `json:"capture_pod,omitempty"`
}

// textMsg is a kindText, kindThread or kindHeader payload.
type textMsg struct {
	GroupKey string `json:"group_key,omitempty"`
	Thread   string `json:"thread,omitempty"`
	Text     string `json:"text"`
}

// rawMsg is a kindRaw payload.
type rawMsg struct {
	FindingID string `json:"finding_id"`
	Thread    string `json:"thread,omitempty"`
}

// errNoThreadYet makes a message wait for its group's thread to be posted.
var errNoThreadYet = errors.New("the alert group's thread is not posted yet")

// Deliverer sends the outbox to Slack: one worker per channel keeps the
// channel's order and pace (Slack allows about one message a second in a
// channel), a 429 pauses the channel for its Retry-After, other failures
// back off, and a message leaves the outbox only once delivered, so an
// outage or a restart loses nothing and posts nothing twice.
type Deliverer struct {
	Store   *store.Store
	Chat    Chat
	Log     *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
	// Pace is the least time between two calls in one channel (default 1s).
	Pace time.Duration
	// GiveUpAfter is how many attempts a permanent failure (the bot not in
	// the channel) gets before the message is dropped and the loss logged
	// (default 3). Other failures are retried until they succeed.
	GiveUpAfter int

	once     sync.Once
	kick     chan struct{}
	mu       sync.Mutex
	channels map[string]*channelWorker
	inflight map[string]bool
}

type channelWorker struct {
	queue chan store.Message
	// next is when the channel may be written again.
	next time.Time
}

func (d *Deliverer) init() {
	d.once.Do(func() {
		d.kick = make(chan struct{}, 1)
		d.channels = map[string]*channelWorker{}
		d.inflight = map[string]bool{}
		if d.Pace == 0 {
			d.Pace = time.Second
		}
		if d.GiveUpAfter == 0 {
			d.GiveUpAfter = 3
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Log == nil {
			d.Log = slog.Default()
		}
		if d.Metrics == nil {
			d.Metrics = NewMetrics()
		}
	})
}

// Kick makes the deliverer look at the outbox now.
func (d *Deliverer) Kick() {
	d.init()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (d *Deliverer) Run(ctx context.Context) {
	d.init()
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for round := 0; ; round++ {
		msgs, err := d.Store.Due(ctx, d.Now(), 200)
		if err != nil && ctx.Err() == nil {
			d.Log.Error("reading the outbox", "err", err)
		}
		for _, m := range msgs {
			d.mu.Lock()
			if d.inflight[m.ID] {
				d.mu.Unlock()
				continue
			}
			w := d.channels[m.Channel]
			if w == nil {
				w = &channelWorker{queue: make(chan store.Message, 256)}
				d.channels[m.Channel] = w
				wg.Add(1)
				go func() {
					defer wg.Done()
					d.work(ctx, w)
				}()
			}
			select {
			case w.queue <- m:
				d.inflight[m.ID] = true
			default: // the channel is busy; the next round has it
			}
			d.mu.Unlock()
		}
		if round%20 == 0 {
			d.Metrics.outbox(d.Store, ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
	}
}

func (d *Deliverer) work(ctx context.Context, w *channelWorker) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-w.queue:
			d.one(ctx, w, m)
			d.mu.Lock()
			delete(d.inflight, m.ID)
			d.mu.Unlock()
		}
	}
}

// one makes one attempt at a message and records what came of it.
func (d *Deliverer) one(ctx context.Context, w *channelWorker, m store.Message) {
	log := d.Log.With("message", m.ID, "kind", m.Kind, "channel", m.Channel)
	err := d.attempt(ctx, w, &m)
	if err == nil {
		if err := d.Store.Done(ctx, m.ID); err != nil && ctx.Err() == nil {
			log.Error("delivered, but not marked done: it may be posted again", "err", err)
		}
		d.Metrics.delivered(m.Kind)
		if m.Attempts > 0 {
			log.Info("delivered after retries", "attempts", m.Attempts+1)
		}
		return
	}
	if ctx.Err() != nil {
		return // stopping: the message stays in the outbox
	}
	attempt := m.Attempts + 1
	f := Failure{After: time.Second}
	if !errors.Is(err, errNoThreadYet) {
		f = Classify(err, attempt)
		d.Metrics.slackError(m.Kind)
	}
	if f.Permanent && attempt >= d.GiveUpAfter {
		log.Error("giving up on a message Slack refuses", "attempts", attempt, "err", err)
		d.Metrics.lost(m.Kind)
		d.Store.Done(ctx, m.ID)
		return
	}
	if f.After > d.Pace {
		// A 429 is about the channel (or the workspace), not the message.
		w.next = d.Now().Add(f.After)
	}
	log.Warn("delivery failed; will retry", "attempt", attempt, "retry_in", f.After, "err", err)
	if err := d.Store.Retry(ctx, m.ID, d.Now().Add(f.After), err.Error()); err != nil && ctx.Err() == nil {
		log.Error("recording the retry", "err", err)
	}
}

// pace waits for the channel's turn.
func (d *Deliverer) pace(ctx context.Context, w *channelWorker) error {
	if wait := w.next.Sub(d.Now()); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	w.next = d.Now().Add(d.Pace)
	return nil
}

// attempt runs the message's remaining steps, saving each one done.
func (d *Deliverer) attempt(ctx context.Context, w *channelWorker, m *store.Message) error {
	switch m.Kind {
	case kindFinding:
		var dl delivery
		if err := json.Unmarshal(m.Payload, &dl); err != nil {
			return d.drop(ctx, m, err)
		}
		return d.finding(ctx, w, m, &dl)
	case kindText, kindThread, kindHeader:
		var t textMsg
		if err := json.Unmarshal(m.Payload, &t); err != nil {
			return d.drop(ctx, m, err)
		}
		return d.text(ctx, w, m, &t)
	case kindDigest:
		var dm digestMsg
		if err := json.Unmarshal(m.Payload, &dm); err != nil {
			return d.drop(ctx, m, err)
		}
		return d.digest(ctx, w, m, &dm)
	case kindRaw:
		var r rawMsg
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			return d.drop(ctx, m, err)
		}
		rec, err := d.Store.Finding(ctx, r.FindingID, true)
		if err != nil {
			return d.drop(ctx, m, err)
		}
		var buf bytes.Buffer
		if err := rec.Finding.WriteJSON(&buf, true); err != nil {
			return d.drop(ctx, m, err)
		}
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		return d.Chat.Upload(ctx, m.Channel, r.Thread, "finding-"+rec.ID+".json", "raw evidence of finding "+rec.ID, buf.Bytes())
	}
	return d.drop(ctx, m, fmt.Errorf("unknown kind %q", m.Kind))
}

// drop gives up on a message that can never be delivered (written by
// another version, its finding gone): retrying cannot help.
func (d *Deliverer) drop(ctx context.Context, m *store.Message, err error) error {
	d.Log.Error("dropping an outbox message that cannot be delivered", "message", m.ID, "kind", m.Kind, "err", err)
	d.Metrics.lost(m.Kind)
	return nil
}

func (d *Deliverer) save(ctx context.Context, m *store.Message, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m.Payload = b
	_, err = d.Store.Enqueue(ctx, *m)
	return err
}

func (d *Deliverer) groupThread(ctx context.Context, groupKey string) (string, error) {
	t, err := d.Store.Thread(ctx, groupKey)
	if errors.Is(err, store.ErrNotFound) {
		return "", errNoThreadYet
	}
	return t.TS, err
}

func (d *Deliverer) finding(ctx context.Context, w *channelWorker, m *store.Message, dl *delivery) error {
	if dl.GroupKey != "" && dl.Thread == "" {
		ts, err := d.groupThread(ctx, dl.GroupKey)
		if err != nil {
			return err
		}
		dl.Thread = ts
	}
	// The raw evidence only while the evidence step is still to do.
	rec, err := d.Store.Finding(ctx, dl.FindingID, !dl.EvidenceDone)
	if err != nil {
		return d.drop(ctx, m, err)
	}
	if !dl.Posted {
		msg := FindingMsg(rec.Finding, rec.ID, dl.Command, dl.CapturePod, true)
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		if dl.SummaryTS != "" {
			err := d.Chat.Update(ctx, m.Channel, dl.SummaryTS, msg)
			if SlackError(err) == "message_not_found" || SlackError(err) == "cant_update_message" {
				dl.SummaryTS, err = "", nil // deleted meanwhile: post anew
			}
			if err != nil {
				return err
			}
		}
		if dl.SummaryTS == "" {
			ts, err := d.Chat.Post(ctx, m.Channel, dl.Thread, msg)
			if err != nil {
				return err
			}
			dl.SummaryTS = ts
		}
		dl.Posted = true
		if err := d.save(ctx, m, dl); err != nil {
			return err
		}
	}
	details := dl.Thread
	if details == "" {
		details = dl.SummaryTS
	}
	if !dl.EvidenceDone {
		text := EvidenceText(rec.Finding)
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		if msg, whole := Preformatted(text, ""); whole {
			_, err = d.Chat.Post(ctx, m.Channel, details, msg)
		} else {
			err = d.Chat.Upload(ctx, m.Channel, details, "finding-"+rec.ID+".txt", "evidence of finding "+rec.ID, []byte(text))
		}
		if err != nil {
			return err
		}
		dl.EvidenceDone = true
		if err := d.save(ctx, m, dl); err != nil {
			return err
		}
	}
	if !dl.PcapDone {
		pcap, err := d.Store.Pcap(ctx, dl.FindingID)
		if err == nil {
			if err := d.pace(ctx, w); err != nil {
				return err
			}
			if err := d.Chat.Upload(ctx, m.Channel, details, pcapName(rec.ID), "capture of finding "+rec.ID+" (open with Wireshark)", pcap); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		} else if rec.PcapNote != "" {
			if err := d.pace(ctx, w); err != nil {
				return err
			}
			if _, err := d.Chat.Post(ctx, m.Channel, details, PlainMsg(esc(rec.PcapNote))); err != nil {
				return err
			}
		}
		dl.PcapDone = true
	}
	return nil
}

func (d *Deliverer) text(ctx context.Context, w *channelWorker, m *store.Message, t *textMsg) error {
	switch m.Kind {
	case kindThread:
		if _, err := d.Store.Thread(ctx, t.GroupKey); err == nil {
			return nil // opened before a restart
		}
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		ts, err := d.Chat.Post(ctx, m.Channel, "", PlainMsg(t.Text))
		if err != nil {
			return err
		}
		return d.Store.PutThread(ctx, t.GroupKey, store.ThreadRef{Channel: m.Channel, TS: ts})
	case kindHeader:
		ts, err := d.groupThread(ctx, t.GroupKey)
		if err != nil {
			return err
		}
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		return d.Chat.Update(ctx, m.Channel, ts, PlainMsg(t.Text))
	}
	thread := t.Thread
	if t.GroupKey != "" {
		ts, err := d.groupThread(ctx, t.GroupKey)
		if err != nil {
			return err
		}
		thread = ts
	}
	if err := d.pace(ctx, w); err != nil {
		return err
	}
	_, err := d.Chat.Post(ctx, m.Channel, thread, PlainMsg(t.Text))
	return err
}

// pcapName is a finding's capture as the thread shows it.
func pcapName(findingID string) string { return "finding-" + findingID + ".pcap" }
