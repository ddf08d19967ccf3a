package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// SocketOptions connect the bot to Slack in Socket Mode.
type SocketOptions struct {
	// AppToken is the app-level token (xapp-, connections:write) that opens
	// the websocket; BotToken is the bot's own (xoxb-).
	AppToken, BotToken string
	// APIURL is Slack's Web API (default https://slack.com/api/).
	APIURL string
	// Connected, when set, is told each time a websocket is up.
	Connected func()
}

// ErrSocketAuth is Slack refusing the app token: no retry can mend it.
var ErrSocketAuth = errors.New("slack refused the app token")

// RunSocket receives slash commands and button presses over Slack's Socket
// Mode websocket, for clusters with no public ingress, and answers them
// with the same handlers as /slack/commands and /slack/interactions. No
// signature is checked: only Slack holds the other end of a websocket the
// bot opened with its app token. It reconnects until ctx ends, and returns
// an error only when Slack refuses the token.
func (b *Bot) RunSocket(ctx context.Context, o SocketOptions) error {
	opts := []slack.Option{slack.OptionAppLevelToken(o.AppToken), slack.OptionHTTPClient(&http.Client{Timeout: 20 * time.Second})}
	if o.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(o.APIURL))
	}
	client := socketmode.New(slack.New(o.BotToken, opts...))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go b.socketEvents(ctx, client, o.Connected)
	for attempt := 0; ; attempt++ {
		err := client.RunContext(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if isAuthError(err) {
			return fmt.Errorf("%w: %v (slack.app_token must be an xapp- token with connections:write)", ErrSocketAuth, err)
		}
		wait := Backoff(attempt)
		b.log.Warn("slack socket mode: connection lost; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func isAuthError(err error) bool {
	var sc slack.StatusCodeError
	if errors.As(err, &sc) && (sc.Code == http.StatusNotFound || sc.Code == http.StatusUnauthorized || sc.Code == http.StatusForbidden) {
		return true
	}
	switch SlackError(err) {
	case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "not_allowed_token_type":
		return true
	}
	return false
}

// socketEvents handles what arrives over the websocket.
func (b *Bot) socketEvents(ctx context.Context, client *socketmode.Client, connected func()) {
	for {
		var evt socketmode.Event
		select {
		case <-ctx.Done():
			return
		case evt = <-client.Events:
		}
		switch evt.Type {
		case socketmode.EventTypeConnected:
			b.log.Info("slack socket mode: connected")
			if connected != nil {
				connected()
			}
		case socketmode.EventTypeConnectionError, socketmode.EventTypeIncomingError, socketmode.EventTypeErrorWriteFailed:
			b.log.Warn("slack socket mode", "event", string(evt.Type), "err", evt.Data)
		case socketmode.EventTypeSlashCommand, socketmode.EventTypeInteractive:
			b.socketRequest(ctx, client, evt)
		case socketmode.EventTypeEventsAPI:
			// netdiag subscribes to no events; acknowledge so Slack does not retry.
			if evt.Request != nil {
				client.AckCtx(ctx, evt.Request.EnvelopeID, nil)
			}
		}
	}
}

// socketRequest answers a slash command or a button press with the reply
// the HTTP endpoint would have written: Slack shows it as it would the HTTP
// response.
func (b *Bot) socketRequest(ctx context.Context, client *socketmode.Client, evt socketmode.Event) {
	handler, r, ok := "socket_commands", Reply{}, evt.Request != nil
	if evt.Type == socketmode.EventTypeInteractive {
		handler = "socket_interactions" // also when its payload is malformed
	}
	switch d := evt.Data.(type) {
	case slack.SlashCommand:
		if ok {
			r = b.Command(ctx, d)
		}
	case slack.InteractionCallback:
		if ok {
			r = b.Interaction(ctx, d)
		}
	default:
		ok = false
	}
	if !ok {
		b.metrics.request(handler, http.StatusBadRequest)
		return
	}
	b.ack(ctx, client, evt.Request, handler, r)
}

func (b *Bot) ack(ctx context.Context, client *socketmode.Client, req *socketmode.Request, handler string, r Reply) {
	var payload any
	if !r.Empty {
		payload = replyJSON(r)
	}
	if err := client.AckCtx(ctx, req.EnvelopeID, payload); err != nil {
		b.log.Warn("slack socket mode: acknowledgement not sent", "handler", handler, "err", err)
		return
	}
	b.metrics.request(handler, http.StatusOK)
}
