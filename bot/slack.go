package bot

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"
)

// Chat is what the bot does in Slack. Delivery (pace, retries, the outbox)
// is the Deliverer's, not Chat's: a Chat call is one attempt.
type Chat interface {
	Post(ctx context.Context, channel, thread string, m Msg) (ts string, err error)
	Update(ctx context.Context, channel, ts string, m Msg) error
	Ephemeral(ctx context.Context, channel, user string, m Msg) error
	Upload(ctx context.Context, channel, thread, filename, title string, data []byte) error
	// Respond answers through a slash command's or a button's response_url.
	Respond(ctx context.Context, responseURL string, m Msg, ephemeral, replace bool) error
	Members
}

// SlackChat is Chat on Slack's Web API.
type SlackChat struct {
	API *slack.Client
}

// NewSlackChat makes a Chat with a bot token; apiURL is Slack's API
// ("https://slack.com/api/") or a test server's.
func NewSlackChat(token, apiURL string) *SlackChat {
	hc := &http.Client{Timeout: 20 * time.Second}
	return &SlackChat{API: slack.New(token, slack.OptionAPIURL(apiURL), slack.OptionHTTPClient(hc))}
}

func msgOptions(m Msg) []slack.MsgOption {
	opts := []slack.MsgOption{slack.MsgOptionText(m.Text, false)}
	if len(m.Blocks) > 0 {
		opts = append(opts, slack.MsgOptionBlocks(m.Blocks...))
	}
	return opts
}

func (c *SlackChat) Post(ctx context.Context, channel, thread string, m Msg) (string, error) {
	opts := msgOptions(m)
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	_, ts, err := c.API.PostMessageContext(ctx, channel, opts...)
	return ts, err
}

func (c *SlackChat) Update(ctx context.Context, channel, ts string, m Msg) error {
	_, _, _, err := c.API.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...)
	return err
}

func (c *SlackChat) Ephemeral(ctx context.Context, channel, user string, m Msg) error {
	_, err := c.API.PostEphemeralContext(ctx, channel, user, msgOptions(m)...)
	return err
}

func (c *SlackChat) Upload(ctx context.Context, channel, thread, filename, title string, data []byte) error {
	_, err := c.API.UploadFileContext(ctx, slack.UploadFileParameters{
		Reader: bytes.NewReader(data), FileSize: len(data), Filename: filename, Title: title,
		Channel: channel, ThreadTimestamp: thread,
	})
	return err
}

func (c *SlackChat) Respond(ctx context.Context, responseURL string, m Msg, ephemeral, replace bool) error {
	rt := slack.ResponseTypeInChannel
	if ephemeral {
		rt = slack.ResponseTypeEphemeral
	}
	wm := &slack.WebhookMessage{Text: m.Text, ResponseType: rt, ReplaceOriginal: replace}
	if len(m.Blocks) > 0 {
		wm.Blocks = &slack.Blocks{BlockSet: m.Blocks}
	}
	return slack.PostWebhookContext(ctx, responseURL, wm)
}

func (c *SlackChat) GroupMembers(ctx context.Context, group string) ([]string, error) {
	return c.API.GetUserGroupMembersContext(ctx, group)
}

// Failure is how a failed Slack call is retried.
type Failure struct {
	// After is when to try again: Slack's Retry-After for a 429, else a
	// backoff.
	After time.Duration
	// Permanent is true when trying again cannot help (the bot is not in
	// the channel, the channel is gone); the message is given up after a
	// few attempts and the loss logged.
	Permanent bool
}

// permanentErrors are Slack's answers that do not change by waiting.
var permanentErrors = map[string]bool{
	"channel_not_found": true, "not_in_channel": true, "is_archived": true, "msg_too_long": true,
	"invalid_blocks": true, "no_text": true, "too_many_attachments": true, "restricted_action": true,
	"message_not_found": true, "cant_update_message": true, "edit_window_closed": true,
	"invalid_arguments": true, "invalid_thread_ts": true, "file_upload_size_exceeded": true,
}

// Classify tells a retry of a failed call: Slack's 429 with its Retry-After,
// 5xx and network errors with backoff(attempt), and its permanent errors as
// such.
func Classify(err error, attempt int) Failure {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		after := rl.RetryAfter
		if after <= 0 {
			after = time.Second
		}
		return Failure{After: after}
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) && permanentErrors[se.Err] {
		return Failure{After: Backoff(attempt), Permanent: true}
	}
	// 5xx, timeouts, a connection refused: Slack or the way to it is
	// down for a while.
	return Failure{After: Backoff(attempt)}
}

// Backoff is the wait before attempt n+1: 1s doubling to at most 5 minutes.
func Backoff(attempt int) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// SlackError is the error code Slack answered ("not_in_channel"), or "".
func SlackError(err error) string {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return ""
}

// Signature errors.
var (
	ErrNoSignature  = errors.New("no X-Slack-Signature or X-Slack-Request-Timestamp header")
	ErrStale        = errors.New("request timestamp more than 5 minutes away from now")
	ErrBadSignature = errors.New("signature does not match the signing secret")
)

// VerifySlack checks a request's signature as Slack documents it: HMAC-SHA256
// of "v0:TIMESTAMP:BODY" with the signing secret, hex, after "v0=", and a
// timestamp within 5 minutes of now (no replays).
func VerifySlack(h http.Header, body []byte, secret string, now time.Time) error {
	if secret == "" {
		// An empty key is one anybody can sign with.
		return ErrBadSignature
	}
	sig, ts := h.Get("X-Slack-Signature"), h.Get("X-Slack-Request-Timestamp")
	if sig == "" || ts == "" {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: X-Slack-Request-Timestamp %q is not a Unix time", ErrNoSignature, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return ErrStale
	}
	got, err := hex.DecodeString(strings.TrimPrefix(sig, "v0="))
	if err != nil || !strings.HasPrefix(sig, "v0=") {
		return ErrBadSignature
	}
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:", ts)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), got) {
		return ErrBadSignature
	}
	return nil
}
