package slackfake_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// sent is one HTTP request slack-go made, as it left the client.
type sent struct {
	path        string
	contentType string // media type only
	bearer      bool
}

// recorder sees slack-go's requests on their way out, so a test can pin
// down the encodings slackfake is built to read.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []sent
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	mediaType, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	r.mu.Lock()
	r.reqs = append(r.reqs, sent{
		path:        req.URL.Path,
		contentType: mediaType,
		bearer:      strings.HasPrefix(req.Header.Get("Authorization"), "Bearer "),
	})
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

func (r *recorder) since(n int) []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.reqs[n:]...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// client is slack-go's real client pointed at s, with its own transport so
// that no connection outlives the test.
func client(t *testing.T, s *slackfake.Server, token string, opts ...slack.Option) (*slack.Client, *recorder) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rec := &recorder{next: tr}
	opts = append([]slack.Option{
		slack.OptionAPIURL(s.APIURL()),
		slack.OptionHTTPClient(&http.Client{Transport: rec}),
	}, opts...)
	return slack.New(token, opts...), rec
}

func slackErr(err error) string {
	var e slack.SlackErrorResponse
	if errors.As(err, &e) {
		return e.Err
	}
	return ""
}

func section(text string) slack.Block {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil)
}

func TestAPIURL(t *testing.T) {
	s := slackfake.New(t)
	u, err := url.Parse(s.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" || u.Path != "/api/" {
		t.Errorf("APIURL() = %q, want http://127.0.0.1:PORT/api/", s.APIURL())
	}
}

func TestPostUpdateThreadAndUpload(t *testing.T) {
	s := slackfake.New(t)
	api, rec := client(t, s, s.BotToken())
	ctx := t.Context()

	auth, err := api.AuthTestContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if auth.UserID != slackfake.BotUserID || auth.BotID != slackfake.BotID || auth.TeamID != slackfake.TeamID {
		t.Errorf("auth.test = %+v", auth)
	}

	blocks := []slack.Block{section("*disk full* on node-3")}
	wantBlocks, _ := json.Marshal(blocks)
	channel, ts, err := api.PostMessageContext(ctx, "C0ALERTS",
		slack.MsgOptionText("disk full on node-3", false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		t.Fatal(err)
	}
	if channel != "C0ALERTS" || ts == "" {
		t.Fatalf("postMessage answered channel %q ts %q", channel, ts)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText("resolved", false)); err != nil {
		t.Fatal(err)
	}
	_, replyTS, err := api.PostMessageContext(ctx, channel,
		slack.MsgOptionText("capture attached", false), slack.MsgOptionTS(ts), slack.MsgOptionBroadcast())
	if err != nil {
		t.Fatal(err)
	}
	ephTS, err := api.PostEphemeralContext(ctx, channel, "U0OPERATOR",
		slack.MsgOptionText("only you", false), slack.MsgOptionTS(ts))
	if err != nil {
		t.Fatal(err)
	}
	if !(ts < replyTS && replyTS < ephTS) {
		t.Errorf("timestamps %q, %q, %q do not increase", ts, replyTS, ephTS)
	}

	// Every byte value, so that nothing on the way may treat it as text.
	content := make([]byte, 70_000)
	_, _ = rand.Read(content)
	for i := range 256 {
		content[i] = byte(i)
	}
	before := rec.count()
	summary, err := api.UploadFileContext(ctx, slack.UploadFileParameters{
		Reader:          bytes.NewReader(content),
		FileSize:        len(content),
		Filename:        "node-3.pcap",
		Title:           "node-3 capture",
		Channel:         channel,
		ThreadTimestamp: ts,
		InitialComment:  "the capture",
	})
	if err != nil {
		t.Fatal(err)
	}
	if summary.Title != "node-3 capture" {
		t.Errorf("upload summary = %+v", summary)
	}

	// The three requests slack-go v0.19.0 makes for one upload.
	uploadCalls := rec.since(before)
	want := []sent{
		{"/api/files.getUploadURLExternal", "application/x-www-form-urlencoded", false},
		{"/upload/v1/" + summary.ID, "multipart/form-data", true},
		{"/api/files.completeUploadExternal", "application/x-www-form-urlencoded", false},
	}
	if fmt.Sprint(uploadCalls) != fmt.Sprint(want) {
		t.Errorf("upload requests:\n got %v\nwant %v", uploadCalls, want)
	}

	msgs := s.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages recorded, want 3: %+v", len(msgs), msgs)
	}
	parent := msgs[0]
	if parent.Text != "disk full on node-3" || string(parent.Blocks) != string(wantBlocks) {
		t.Errorf("parent = %q %s, want blocks %s", parent.Text, parent.Blocks, wantBlocks)
	}
	if len(parent.Updates) != 1 || parent.Latest().Text != "resolved" || parent.Latest().Blocks != nil {
		t.Errorf("parent updates = %+v", parent.Updates)
	}
	thread := s.Thread(channel, ts)
	if len(thread) != 3 || thread[1].TS != replyTS || thread[1].ThreadTS != ts || !thread[1].ReplyBroadcast {
		t.Errorf("thread = %+v", thread)
	}
	if eph := thread[2]; !eph.Ephemeral || eph.User != "U0OPERATOR" || eph.TS != ephTS {
		t.Errorf("ephemeral = %+v", eph)
	}

	files := s.Files()
	if len(files) != 1 {
		t.Fatalf("%d files recorded, want 1", len(files))
	}
	f := files[0]
	if f.ID != summary.ID || f.Name != "node-3.pcap" || f.Title != "node-3 capture" ||
		f.Channel != channel || f.ThreadTS != ts || f.InitialComment != "the capture" {
		t.Errorf("file = %+v", f)
	}
	if !bytes.Equal(f.Bytes, content) {
		t.Errorf("recorded %d bytes differ from the %d sent", len(f.Bytes), len(content))
	}
}

func TestMethodErrors(t *testing.T) {
	s := slackfake.New(t)
	api, _ := client(t, s, s.BotToken())
	ctx := t.Context()
	_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("first", false))
	if err != nil {
		t.Fatal(err)
	}
	ephTS, err := api.PostEphemeralContext(ctx, "C1", "U1", slack.MsgOptionText("psst", false))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"update unknown ts", func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, "C1", "1600000000.000100", slack.MsgOptionText("x", false))
			return err
		}, "message_not_found"},
		{"update in another channel", func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, "C2", ts, slack.MsgOptionText("x", false))
			return err
		}, "message_not_found"},
		{"update an ephemeral message", func() error {
			_, _, _, err := api.UpdateMessageContext(ctx, "C1", ephTS, slack.MsgOptionText("x", false))
			return err
		}, "message_not_found"},
		{"post without text", func() error {
			_, _, err := api.PostMessageContext(ctx, "C1")
			return err
		}, "no_text"},
		{"post without channel", func() error {
			_, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionText("x", false))
			return err
		}, "channel_not_found"},
		{"complete an unknown file", func() error {
			_, err := api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{
				Files: []slack.FileSummary{{ID: "F0NOSUCH"}}, Channel: "C1",
			})
			return err
		}, "file_not_found"},
		{"complete a file never uploaded", func() error {
			u, err := api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{FileName: "a.txt", FileSize: 3})
			if err != nil {
				return err
			}
			_, err = api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{
				Files: []slack.FileSummary{{ID: u.FileID}}, Channel: "C1",
			})
			return err
		}, "file_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slackErr(tt.call()); got != tt.want {
				t.Errorf("error = %q, want %q", got, tt.want)
			}
		})
	}
	if n := len(s.Messages()); n != 2 {
		t.Errorf("%d messages recorded, want the 2 that succeeded", n)
	}
	if len(s.Files()) != 0 {
		t.Errorf("files recorded: %+v", s.Files())
	}
}

// rawPost calls the API without slack-go, for what slack-go never does.
func rawPost(t *testing.T, s *slackfake.Server, method, contentType, bearer, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL()+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s answered %s, not JSON: %v", method, resp.Status, err)
	}
	return out
}

func TestTokens(t *testing.T) {
	s := slackfake.New(t)
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name string
		call func(t *testing.T) string // the Slack error, "" for ok
		want string
	}{
		{"bot token", func(t *testing.T) string {
			api, _ := client(t, s, s.BotToken())
			_, err := api.AuthTestContext(t.Context())
			return slackErr(err)
		}, ""},
		{"wrong token", func(t *testing.T) string {
			api, _ := client(t, s, "xoxb-1-not-this-one")
			_, _, err := api.PostMessageContext(t.Context(), "C1", slack.MsgOptionText("x", false))
			return slackErr(err)
		}, "invalid_auth"},
		{"app token for a bot method", func(t *testing.T) string {
			api, _ := client(t, s, s.AppToken())
			_, _, err := api.PostMessageContext(t.Context(), "C1", slack.MsgOptionText("x", false))
			return slackErr(err)
		}, "not_allowed_token_type"},
		{"bot token for apps.connections.open", func(t *testing.T) string {
			api, _ := client(t, s, s.BotToken(), slack.OptionAppLevelToken(s.BotToken()))
			_, _, err := api.StartSocketModeContext(t.Context())
			return slackErr(err)
		}, "not_allowed_token_type"},
		{"wrong token for slacktest's own users.info", func(t *testing.T) string {
			api, _ := client(t, s, "xoxb-1-not-this-one")
			_, err := api.GetUserInfoContext(t.Context(), "W012A3CDE")
			return slackErr(err)
		}, "invalid_auth"},
		{"slacktest's own users.info", func(t *testing.T) string {
			api, _ := client(t, s, s.BotToken())
			_, err := api.GetUserInfoContext(t.Context(), "W012A3CDE")
			return slackErr(err)
		}, ""},
		{"no token", func(t *testing.T) string {
			out, _ := rawPost(t, s, "chat.postMessage", form, "", "channel=C1&text=x")["error"].(string)
			return out
		}, "not_authed"},
		{"token in the header of a form post", func(t *testing.T) string {
			out, _ := rawPost(t, s, "auth.test", form, s.BotToken(), "")["error"].(string)
			return out
		}, ""},
		{"unknown method", func(t *testing.T) string {
			out, _ := rawPost(t, s, "chat.nosuch", form, s.BotToken(), "")["error"].(string)
			return out
		}, "unknown_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.call(t); got != tt.want {
				t.Errorf("error = %q, want %q", got, tt.want)
			}
		})
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("%d messages recorded from refused calls", n)
	}
}

func TestJSONBody(t *testing.T) {
	s := slackfake.New(t)
	body := `{"channel":"C1","text":"from JSON","blocks":[{"type":"divider"}],"thread_ts":"1700000000.000100","reply_broadcast":true}`
	out := rawPost(t, s, "chat.postMessage", "application/json; charset=utf-8", s.BotToken(), body)
	if out["ok"] != true || out["channel"] != "C1" {
		t.Fatalf("chat.postMessage answered %v", out)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages recorded", len(msgs))
	}
	m := msgs[0]
	if m.Text != "from JSON" || string(m.Blocks) != `[{"type":"divider"}]` || m.ThreadTS != "1700000000.000100" || !m.ReplyBroadcast {
		t.Errorf("message = %+v", m)
	}
	if m.TS != out["ts"] {
		t.Errorf("recorded ts %q, answered %v", m.TS, out["ts"])
	}
}

func TestOutage(t *testing.T) {
	tests := []struct {
		status     int
		retryAfter time.Duration
		check      func(t *testing.T, err error)
	}{
		{http.StatusTooManyRequests, 3 * time.Second, wantRateLimited(3 * time.Second)},
		{http.StatusTooManyRequests, 1500 * time.Millisecond, wantRateLimited(2 * time.Second)},
		{http.StatusInternalServerError, 0, wantStatus(http.StatusInternalServerError)},
		{http.StatusServiceUnavailable, 0, wantStatus(http.StatusServiceUnavailable)},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_%s", tt.status, tt.retryAfter), func(t *testing.T) {
			s := slackfake.New(t)
			api, _ := client(t, s, s.BotToken())
			ctx := t.Context()

			s.Outage(tt.status, tt.retryAfter)
			_, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("lost?", false))
			tt.check(t, err)
			_, err = api.UploadFileContext(ctx, slack.UploadFileParameters{Content: "abc", FileSize: 3, Filename: "a.txt", Channel: "C1"})
			tt.check(t, err)
			if _, err := api.AuthTestContext(ctx); err == nil {
				t.Error("auth.test succeeded during the outage")
			}
			if s.Refused() != 3 || len(s.Messages()) != 0 || len(s.Files()) != 0 {
				t.Errorf("during outage: refused %d, messages %v, files %v", s.Refused(), s.Messages(), s.Files())
			}

			s.Restore()
			if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("after", false)); err != nil {
				t.Fatalf("after Restore: %v", err)
			}
			if msgs := s.Messages(); len(msgs) != 1 || msgs[0].Text != "after" {
				t.Errorf("after Restore: messages %+v", msgs)
			}
			var refused int
			for _, c := range s.Calls() {
				if c.Refused {
					refused++
					if c.Status != tt.status {
						t.Errorf("refused call %+v, want status %d", c, tt.status)
					}
				}
			}
			if refused != 3 || s.Refused() != 3 {
				t.Errorf("Calls has %d refused, Refused() = %d, want 3", refused, s.Refused())
			}
		})
	}
}

func wantRateLimited(retryAfter time.Duration) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var rl *slack.RateLimitedError
		if !errors.As(err, &rl) || rl.RetryAfter != retryAfter {
			t.Errorf("error = %v, want *slack.RateLimitedError retrying after %s", err, retryAfter)
		}
	}
}

func wantStatus(code int) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var sc slack.StatusCodeError
		if !errors.As(err, &sc) || sc.Code != code {
			t.Errorf("error = %v, want slack.StatusCodeError %d", err, code)
		}
	}
}

func TestFailNext(t *testing.T) {
	s := slackfake.New(t)
	api, _ := client(t, s, s.BotToken())
	ctx := t.Context()

	s.FailNext(2, http.StatusTooManyRequests, time.Second)
	for i := range 2 {
		_, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("report", false))
		wantRateLimited(time.Second)(t, err)
		if i == 0 && len(s.Messages()) != 0 {
			t.Fatal("a refused post was recorded")
		}
	}
	if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("report", false)); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Messages()); n != 1 || s.Refused() != 2 {
		t.Errorf("%d messages, %d refused; want 1 and 2", n, s.Refused())
	}

	// The upload URL is behind the same gate: a failed upload of the bytes
	// can be retried, and only the completed file counts.
	u, err := api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{FileName: "r.txt", FileSize: 6})
	if err != nil {
		t.Fatal(err)
	}
	s.FailNext(1, http.StatusInternalServerError, 0)
	up := slack.UploadToURLParameters{UploadURL: u.UploadURL, Content: "report", Filename: "r.txt"}
	wantStatus(http.StatusInternalServerError)(t, api.UploadToURL(ctx, up))
	if err := api.UploadToURL(ctx, up); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{
		Files: []slack.FileSummary{{ID: u.FileID}}, Channel: "C1",
	}); err != nil {
		t.Fatal(err)
	}
	if files := s.Files(); len(files) != 1 || string(files[0].Bytes) != "report" || files[0].Title != "r.txt" {
		t.Errorf("files = %+v", files)
	}
}

// slack-go's own retry resends the form body after a 429; the fake must
// see one post, not two.
func TestFailNextWithSlackGoRetry(t *testing.T) {
	s := slackfake.New(t)
	cfg := slack.DefaultRetryConfig()
	cfg.MaxRetries = 2
	cfg.RetryAfterJitter = 0
	api, _ := client(t, s, s.BotToken(), slack.OptionRetryConfig(cfg))

	s.FailNext(1, http.StatusTooManyRequests, 0)
	if _, _, err := api.PostMessageContext(t.Context(), "C1", slack.MsgOptionText("once", false)); err != nil {
		t.Fatal(err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].Text != "once" || s.Refused() != 1 {
		t.Errorf("messages %+v, refused %d", msgs, s.Refused())
	}
}

func TestResponseURL(t *testing.T) {
	s := slackfake.New(t)
	api, _ := client(t, s, s.BotToken())
	ctx := t.Context()

	first, second := s.NewResponseURL(), s.NewResponseURL()
	if first == second {
		t.Fatalf("NewResponseURL returned %q twice", first)
	}
	if _, _, err := api.PostMessageContext(ctx, "",
		slack.MsgOptionResponseURL(first, slack.ResponseTypeInChannel), slack.MsgOptionText("checking", false)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.PostMessageContext(ctx, "",
		slack.MsgOptionReplaceOriginal(second), slack.MsgOptionText("done", false), slack.MsgOptionBlocks(section("done"))); err != nil {
		t.Fatal(err)
	}

	got := s.Responses(first)
	if len(got) != 1 || got[0].ResponseType != "in_channel" || got[0].Text != "checking" || got[0].ReplaceOriginal || got[0].Blocks != nil {
		t.Errorf("Responses(first) = %+v", got)
	}
	got = s.Responses(second)
	if len(got) != 1 || !got[0].ReplaceOriginal || got[0].Text != "done" || !bytes.Contains(got[0].Blocks, []byte(`"section"`)) {
		t.Errorf("Responses(second) = %+v", got)
	}

	_, _, err := api.PostMessageContext(ctx, "",
		slack.MsgOptionResponseURL(first+"x", slack.ResponseTypeEphemeral), slack.MsgOptionText("?", false))
	wantStatus(http.StatusNotFound)(t, err)
}

func TestWaitFor(t *testing.T) {
	s := slackfake.New(t)
	api, _ := client(t, s, s.BotToken())

	const posters, each = 8, 10
	errs := make(chan error, posters)
	for p := range posters {
		go func() {
			for i := range each {
				if _, _, err := api.PostMessageContext(t.Context(), fmt.Sprintf("C%d", p%2),
					slack.MsgOptionText(fmt.Sprintf("%d/%d", p, i), false)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, func(s *slackfake.Server) bool { return len(s.Messages()) == posters*each }); err != nil {
		t.Fatal(err)
	}
	for range posters {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, m := range s.Messages() {
		if seen[m.Channel+"/"+m.TS] {
			t.Errorf("ts %s used twice in %s", m.TS, m.Channel)
		}
		seen[m.Channel+"/"+m.TS] = true
	}

	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := s.WaitFor(short, func(*slackfake.Server) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor on a condition never met = %v", err)
	}
}

// bot is a minimal Socket Mode app: it acks slash commands with an
// immediate answer and then posts a delayed one to the response_url, and
// acks interactions bare.
type bot struct {
	api    *slack.Client
	client *socketmode.Client
	mu     sync.Mutex
	hellos []socketmode.Request
	cmds   []slack.SlashCommand
	clicks []slack.InteractionCallback
}

func startBot(t *testing.T, s *slackfake.Server) *bot {
	t.Helper()
	api, _ := client(t, s, s.BotToken(), slack.OptionAppLevelToken(s.AppToken()))
	b := &bot{api: api, client: socketmode.New(api)}
	ctx, cancel := context.WithCancel(context.Background())
	run := make(chan error, 1)
	go func() { run <- b.client.RunContext(ctx) }()
	go b.handle(ctx)
	t.Cleanup(func() {
		cancel()
		if err := <-run; !errors.Is(err, context.Canceled) {
			t.Errorf("socketmode client stopped with %v", err)
		}
	})
	return b
}

func (b *bot) handle(ctx context.Context) {
	for {
		var evt socketmode.Event
		select {
		case <-ctx.Done():
			return
		case evt = <-b.client.Events:
		}
		switch evt.Type {
		case socketmode.EventTypeHello:
			b.mu.Lock()
			b.hellos = append(b.hellos, *evt.Request)
			b.mu.Unlock()
		case socketmode.EventTypeSlashCommand:
			cmd := evt.Data.(slack.SlashCommand)
			b.mu.Lock()
			b.cmds = append(b.cmds, cmd)
			b.mu.Unlock()
			b.client.Ack(*evt.Request, map[string]any{"response_type": "ephemeral", "text": "checking " + cmd.Text})
			_, _, _ = b.api.PostMessageContext(ctx, "",
				slack.MsgOptionResponseURL(cmd.ResponseURL, slack.ResponseTypeInChannel), slack.MsgOptionText(cmd.Text+" is fine", false))
		case socketmode.EventTypeInteractive:
			b.mu.Lock()
			b.clicks = append(b.clicks, evt.Data.(slack.InteractionCallback))
			b.mu.Unlock()
			b.client.Ack(*evt.Request)
		}
	}
}

func TestSocketMode(t *testing.T) {
	s := slackfake.New(t)
	b := startBot(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	slash := func(text string) {
		t.Helper()
		respURL := s.NewResponseURL()
		ack, err := s.SendSlashCommand(ctx, slack.SlashCommand{
			Command: "/netdiag", Text: text, ChannelID: "C1", UserID: "U0OPERATOR", ResponseURL: respURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		var immediate struct{ ResponseType, Text string }
		if err := json.Unmarshal(ack, &immediate); err != nil || immediate.Text != "checking "+text {
			t.Errorf("ack payload %s (%v)", ack, err)
		}
		if err := s.WaitFor(ctx, func(s *slackfake.Server) bool { return len(s.Responses(respURL)) == 1 }); err != nil {
			t.Fatal(err)
		}
		if r := s.Responses(respURL)[0]; r.Text != text+" is fine" || r.ResponseType != "in_channel" {
			t.Errorf("delayed response %+v", r)
		}
	}

	slash("node-3")
	b.mu.Lock()
	cmd, hello := b.cmds[0], b.hellos[0]
	b.mu.Unlock()
	if cmd.Command != "/netdiag" || cmd.TeamID != slackfake.TeamID || cmd.APIAppID != slackfake.AppID || cmd.TriggerID == "" {
		t.Errorf("bot received %+v", cmd)
	}
	if hello.NumConnections != 1 || hello.ConnectionInfo.AppID != slackfake.AppID {
		t.Errorf("hello = %+v", hello)
	}

	ack, err := s.SendInteraction(ctx, slack.InteractionCallback{
		Type: slack.InteractionTypeBlockActions,
		ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{
			{ActionID: "rerun", Value: "node-3"},
		}},
	})
	if err != nil || ack != nil {
		t.Fatalf("interaction ack %s, %v; want a bare ack", ack, err)
	}
	b.mu.Lock()
	click := b.clicks[0]
	b.mu.Unlock()
	if acts := click.ActionCallback.BlockActions; len(acts) != 1 || acts[0].ActionID != "rerun" || click.Team.ID != slackfake.TeamID {
		t.Errorf("bot received %+v", click)
	}

	// Slack goes away both ways; socketmode.Client comes back each time.
	for i, cut := range []func(){s.DropSockets, func() { s.Disconnect("refresh_requested") }} {
		cut()
		if err := s.WaitFor(ctx, func(s *slackfake.Server) bool { return s.SocketsOpened() == i+2 && s.Sockets() == 1 }); err != nil {
			t.Fatalf("no reconnect after cut %d: %v", i, err)
		}
		slash(fmt.Sprintf("node-%d", i))
	}

	var acks int
	for _, c := range s.Calls() {
		if c.Method == slackfake.CallAck && c.Error == "" {
			acks++
		}
	}
	if acks != 4 {
		t.Errorf("%d acks recorded, want 4", acks)
	}
}

func TestSendWithoutConnection(t *testing.T) {
	s := slackfake.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.SendSlashCommand(ctx, slack.SlashCommand{Command: "/netdiag"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("SendSlashCommand with no bot connected = %v", err)
	}
}
