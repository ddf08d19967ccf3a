package bot

import (
	"context"
	"encoding/json"

	"github.com/netdiag/netdiag/bot/digest"
	"github.com/netdiag/netdiag/store"
)

const kindDigest = "digest"

// digestMsg is a kindDigest payload: the digest's text and chart, and how
// far its delivery got.
type digestMsg struct {
	Name      string `json:"name"`
	Text      string `json:"text"`
	Chart     []byte `json:"chart,omitempty"`
	TS        string `json:"ts,omitempty"`
	FileDone  bool   `json:"file_done,omitempty"`
	ChartDone bool   `json:"chart_done,omitempty"`
}

// DigestPoster hands digests to the outbox: once PostDigest returns, the
// digest is on disk and will reach the channel, so the scheduler may count
// its slot as done even while Slack is down.
type DigestPoster struct {
	Store   *store.Store
	Deliver interface{ Kick() }
}

// PostDigest queues the digest.
func (p *DigestPoster) PostDigest(ctx context.Context, spec digest.Spec, d *digest.Digest, chart []byte) error {
	payload, err := json.Marshal(digestMsg{Name: spec.Key(), Text: d.Text(), Chart: chart})
	if err != nil {
		return err
	}
	if _, err := p.Store.Enqueue(ctx, store.Message{Channel: spec.Channel, Kind: kindDigest, Payload: payload}); err != nil {
		return err
	}
	if p.Deliver != nil {
		p.Deliver.Kick()
	}
	return nil
}

// DigestPoster gives the bot's poster for the digest service.
func (b *Bot) DigestPoster() *DigestPoster {
	return &DigestPoster{Store: b.opts.Store, Deliver: b.deliver}
}

func (d *Deliverer) digest(ctx context.Context, w *channelWorker, m *store.Message, dm *digestMsg) error {
	if dm.TS == "" {
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		msg, whole := Preformatted(dm.Text, "_The whole digest is in the thread, as a file._")
		ts, err := d.Chat.Post(ctx, m.Channel, "", msg)
		if err != nil {
			return err
		}
		dm.TS, dm.FileDone = ts, whole
		if err := d.save(ctx, m, dm); err != nil {
			return err
		}
	}
	if !dm.FileDone {
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		name := d.digestFile(".txt")
		if err := d.Chat.Upload(ctx, m.Channel, dm.TS, name, "the whole digest", []byte(dm.Text)); err != nil {
			return err
		}
		dm.FileDone = true
		if err := d.save(ctx, m, dm); err != nil {
			return err
		}
	}
	if len(dm.Chart) > 0 && !dm.ChartDone {
		if err := d.pace(ctx, w); err != nil {
			return err
		}
		name := d.digestFile(".png")
		if err := d.Chat.Upload(ctx, m.Channel, dm.TS, name, "findings per day by class", dm.Chart); err != nil {
			return err
		}
	}
	return nil
}

// digestFile names a file of a digest posted today.
func (d *Deliverer) digestFile(ext string) string {
	return "digest-" + d.Now().UTC().Format("2006-01-02") + ext
}
