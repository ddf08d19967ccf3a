package bot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/slack-go/slack"
)

// maxSlackBody bounds what Slack posts to the bot (a slash command is a
// few hundred bytes, an interaction a few KB).
const maxSlackBody = 256 << 10

// Handler serves /alertmanager, /slack/commands, /slack/interactions,
// /healthz, /readyz and /metrics.
func (b *Bot) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/alertmanager", b.handleAlertmanager)
	if b.opts.SigningSecret != "" {
		b.slackRoutes(mux)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-b.ready:
		default:
			http.Error(w, "starting: recovering interrupted work", http.StatusServiceUnavailable)
			return
		}
		if _, err := b.opts.Store.Usage(r.Context()); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", b.metrics.Handler())
	return mux
}

// slackRoutes are the endpoints Slack posts to in HTTP mode. Without a
// signing secret (Socket Mode) there are none: nothing could tell Slack's
// requests from anyone else's.
func (b *Bot) slackRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/slack/commands", b.slackHandler("commands", func(r *http.Request, form url.Values, body []byte) (Reply, error) {
		sc, err := slack.SlashCommandParse(withBody(r, body))
		if err != nil {
			return Reply{}, err
		}
		return b.Command(r.Context(), sc), nil
	}))
	mux.HandleFunc("/slack/interactions", b.slackHandler("interactions", func(r *http.Request, form url.Values, body []byte) (Reply, error) {
		var ic slack.InteractionCallback
		if err := json.Unmarshal([]byte(form.Get("payload")), &ic); err != nil {
			return Reply{}, fmt.Errorf("payload: %w", err)
		}
		return b.Interaction(r.Context(), ic), nil
	}))
}

func withBody(r *http.Request, body []byte) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.Form, r2.PostForm = nil, nil
	return r2
}

// slackHandler verifies a request's signature before anything reads it:
// a request that is not Slack's reaches no handler.
func (b *Bot) slackHandler(name string, h func(r *http.Request, form url.Values, body []byte) (Reply, error)) http.HandlerFunc {
	handler := "slack_" + name
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			b.metrics.request(handler, http.StatusMethodNotAllowed)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSlackBody))
		if err != nil {
			b.metrics.request(handler, http.StatusRequestEntityTooLarge)
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := VerifySlack(r.Header, body, b.opts.SigningSecret, b.opts.Now()); err != nil {
			b.metrics.request(handler, http.StatusUnauthorized)
			b.log.Warn("slack request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err)
			http.Error(w, "not signed by Slack: "+err.Error(), http.StatusUnauthorized)
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			b.metrics.request(handler, http.StatusBadRequest)
			http.Error(w, "not a form", http.StatusBadRequest)
			return
		}
		reply, err := h(r, form, body)
		if err != nil {
			b.metrics.request(handler, http.StatusBadRequest)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.metrics.request(handler, http.StatusOK)
		writeReply(w, reply)
	}
}

func writeReply(w http.ResponseWriter, r Reply) {
	if r.Empty {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(replyJSON(r))
}

// replyJSON is a Reply as Slack takes it in an HTTP response or a Socket
// Mode acknowledgement.
func replyJSON(r Reply) *slack.Msg {
	m := &slack.Msg{Text: r.Msg.Text, ResponseType: slack.ResponseTypeInChannel}
	if r.Ephemeral {
		m.ResponseType = slack.ResponseTypeEphemeral
	}
	if len(r.Msg.Blocks) > 0 {
		m.Blocks = slack.Blocks{BlockSet: r.Msg.Blocks}
	}
	return m
}
