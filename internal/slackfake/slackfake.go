// Package slackfake is Slack as the bot's tests see it: slack-go's slacktest
// server with the endpoints it lacks, a record of every call, and outages on
// demand.
//
// The bot only ever talks to Slack through slack-go, so its tests hand
// slack-go this server (slack.OptionAPIURL(s.APIURL()), the bot token from
// BotToken, the app-level token from AppToken) and then assert on what Slack
// would have shown people: Messages, Thread, Files and Responses. Asserting
// on what arrived, rather than on what the bot meant to send, is what lets a
// test prove that nothing is lost and nothing is posted twice, and Outage and
// FailNext supply the failures (5xx, 429 with Retry-After) that make those
// proofs worth having. SendSlashCommand and SendInteraction play Slack's side
// of Socket Mode, so the bot's command handling runs over the same websocket
// protocol it uses in production.
//
// One listener on 127.0.0.1 stands in for Slack's several hosts, each under
// its own path so the split stays visible: Web API methods under /api/
// (slack.com/api/), upload URLs under /upload/v1/ (files.slack.com), response
// URLs under /commands/ (hooks.slack.com) and Socket Mode websockets under
// /link/ (wss-primary.slack.com/link/).
//
// Methods slackfake does not implement itself are passed to slacktest's own
// handlers (users.info, bots.info, conversations.info, reactions.add, ...),
// behind the same token check, outage and record; a method neither knows
// answers unknown_method, as Slack does, and is logged to the test.
//
// New ties a Server to a test; Start and Close run one in a program (the
// demo), and Render prints a message as the channel shows it.
package slackfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"
)

// The workspace the bot is installed in, as auth.test and Socket Mode
// payloads report it.
const (
	TeamID    = "T0FAKETEAM"
	TeamName  = "netdiag-test"
	BotUserID = "U0FAKEBOT"
	BotID     = "B0FAKEBOT"
	BotName   = "netdiag"
	AppID     = "A0FAKEAPP"
)

// Call.Method for calls that are not Web API methods.
const (
	CallUpload      = "upload"       // the POST of a file's bytes to its upload_url
	CallResponseURL = "response_url" // a POST to a response_url
	CallAck         = "socket_ack"   // a Socket Mode acknowledgement
)

const (
	apiPath      = "/api/"
	uploadPath   = "/upload/v1/"
	responsePath = "/commands/"
	socketPath   = "/link/"

	// Message timestamps count up from here, 100µs apart, so they look
	// like Slack's and sort as strings in the order they were posted.
	tsEpoch = 1700000000

	defaultPingInterval = time.Second
)

// Methods that take the app-level token; every other method takes the bot
// token, and each refuses the other kind as Slack does.
var appTokenMethods = map[string]bool{"apps.connections.open": true}

// Message is a message as it was posted. Later chat.update versions are in
// Updates, oldest first, so a test can check what people saw at each step.
type Message struct {
	Channel        string
	TS             string
	ThreadTS       string // the parent's ts for a reply, empty otherwise
	Text           string
	Blocks         json.RawMessage // the blocks array exactly as sent, nil without blocks
	ReplyBroadcast bool
	Ephemeral      bool   // posted with chat.postEphemeral
	User           string // the one user who sees an ephemeral message
	Updates        []Message
}

// Latest is the message as it reads now: its last update, or itself.
func (m Message) Latest() Message {
	if len(m.Updates) == 0 {
		return m
	}
	return m.Updates[len(m.Updates)-1]
}

// File is an uploaded file that files.completeUploadExternal shared.
type File struct {
	ID             string
	Name           string // filename given to files.getUploadURLExternal
	Title          string
	Channel        string // empty when the file was left private
	ThreadTS       string
	InitialComment string
	Bytes          []byte // exactly the bytes posted to the upload URL
}

// Response is one POST to a response_url.
type Response struct {
	ResponseType    string // "in_channel" or "ephemeral"; empty means ephemeral to Slack
	Text            string
	Blocks          json.RawMessage
	ReplaceOriginal bool
	DeleteOriginal  bool
	ThreadTS        string
}

// Call is one request the bot made, in arrival order, whether or not it
// succeeded.
type Call struct {
	Method  string // Web API method name, or CallUpload, CallResponseURL, CallAck
	Status  int    // HTTP status answered; 0 for acks
	Error   string // the Slack error code when the answer was ok:false
	Refused bool   // answered by Outage or FailNext without being looked at
}

// Server is a fake Slack for one test (New) or one program (Start). Its
// methods are safe for concurrent use.
type Server struct {
	logf      func(format string, args ...any) // nil: not logged
	closeOnce sync.Once
	st        *slacktest.Server
	base      string // http://127.0.0.1:port
	botToken  string
	appToken  string
	proxy     *httputil.ReverseProxy
	transport *http.Transport
	wg        sync.WaitGroup // socket handlers, which Stop does not wait for

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever the record grows
	closed    bool
	tsSeq     int
	idSeq     int
	messages  []*Message
	uploads   map[string]*upload
	shared    []*upload
	responses map[string][]Response // by full URL
	calls     []Call
	refused   int
	outage    *refusal
	failNext  int
	failWith  refusal
	tickets   map[string]bool
	conns     []*socketConn
	opened    int
	pending   map[string]chan json.RawMessage // envelope id -> ack payload
	pingEvery time.Duration
	groups    map[string][]string // user group ID -> member user IDs
}

type upload struct {
	File
	uploaded  bool
	completed bool
}

type refusal struct {
	status     int
	retryAfter time.Duration
}

// New starts a fake Slack on 127.0.0.1 and stops it when the test ends. A
// call that neither slackfake nor slacktest implements is logged to the
// test.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := start(t.Logf)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a fake Slack on 127.0.0.1 outside a test (the demo); Close
// stops it. A call that neither slackfake nor slacktest implements is not
// logged, only recorded (Calls, with Error "unknown_method").
func Start() (*Server, error) {
	return start(nil)
}

// start makes and starts a Server; logf, when not nil, hears of calls to
// methods nobody implements.
func start(logf func(format string, args ...any)) (s *Server, err error) {
	s = &Server{
		logf:      logf,
		botToken:  "xoxb-" + strconv.Itoa(tsEpoch) + "-" + rand.Text(),
		appToken:  "xapp-1-" + AppID + "-" + rand.Text(),
		changed:   make(chan struct{}),
		uploads:   map[string]*upload{},
		responses: map[string][]Response{},
		tickets:   map[string]bool{},
		pending:   map[string]chan json.RawMessage{},
		pingEvery: defaultPingInterval,
	}
	// httptest, under slacktest, panics when it finds no loopback port;
	// outside a test that is an error to return, not a crash.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("slackfake: %v", r)
		}
	}()
	// slacktest's Binder is its extension point: routes bound here are
	// registered before its defaults, on the same mux and listener.
	s.st = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle(apiPath, s.serveAPI)
		c.Handle(uploadPath, s.serveUpload)
		c.Handle(responsePath, s.serveResponseURL)
		c.Handle(socketPath, s.serveSocket)
	})
	if host, _, err := net.SplitHostPort(s.st.ServerAddr); err != nil || host != "127.0.0.1" {
		addr := s.st.ServerAddr
		s.st.Stop() // closes the listener of the server never started
		return nil, fmt.Errorf("slackfake: slacktest listens on %q, want 127.0.0.1", addr)
	}
	s.base = "http://" + s.st.ServerAddr
	// slacktest's defaults answer for this bot, not for its own.
	s.st.SetBotName(BotName)
	s.st.BotID = BotUserID

	// slacktest keeps its mux to itself and serves its defaults at the root
	// without any token check, so the only way to put them behind our gate
	// is to reach them over HTTP: /api/X, once admitted, is forwarded to
	// slacktest's /X on the same listener (never through an HTTP_PROXY
	// from the environment).
	s.transport = &http.Transport{Proxy: nil}
	target := &url.URL{Scheme: "http", Host: s.st.ServerAddr}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = "/" + strings.TrimPrefix(pr.In.URL.Path, apiPath)
			pr.Out.URL.RawPath = ""
		},
		Transport:      s.transport,
		ModifyResponse: s.fromSlacktest,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			noteOf(r.Context()).status = http.StatusBadGateway
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}

	s.st.Start()
	return s, nil
}

// Close stops the server: open Socket Mode connections are closed, and it
// returns once every request has been answered. New's servers are closed
// when their test ends; calling Close again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Server) close() {
	s.mu.Lock()
	s.closed = true
	conns := slices.Clone(s.conns)
	s.notifyLocked()
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.Close()
	}
	s.st.Stop()
	s.wg.Wait()
	s.transport.CloseIdleConnections()
}

// APIURL is what the bot passes to slack.OptionAPIURL. slack-go appends the
// method name to it, so it ends in a slash, like Slack's own
// https://slack.com/api/.
func (s *Server) APIURL() string { return s.base + apiPath }

// SetBaseURL makes the server give out its URLs (the API's, uploads',
// response URLs, Socket Mode's) under base, "http://HOST:PORT", instead of
// its loopback address: for a bot that reaches it through a forwarder, such
// as a pod on the lab's real cluster. Call it before the first request.
func (s *Server) SetBaseURL(base string) { s.base = strings.TrimSuffix(base, "/") }

// Addr is the loopback address the server listens on.
func (s *Server) Addr() string { return s.st.ServerAddr }

// BotToken is the only bot token (xoxb-) the Web API methods accept.
func (s *Server) BotToken() string { return s.botToken }

// AppToken is the only app-level token (xapp-) apps.connections.open
// accepts.
func (s *Server) AppToken() string { return s.appToken }

// NewResponseURL returns a response_url that was never handed out before;
// posts to it are kept apart from posts to any other.
func (s *Server) NewResponseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newResponseURLLocked()
}

func (s *Server) newResponseURLLocked() string {
	s.idSeq++
	u := fmt.Sprintf("%s%s%s/%d/%s", s.base, responsePath, TeamID, s.idSeq, rand.Text())
	s.responses[u] = nil
	return u
}

// SetGroupMembers makes a Slack user group (S0...) with these members, as
// usergroups.users.list answers it.
func (s *Server) SetGroupMembers(group string, users ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = map[string][]string{}
	}
	s.groups[group] = users
}

// Messages returns every message posted, in posting order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, 0, len(s.messages))
	for _, m := range s.messages {
		out = append(out, m.clone())
	}
	return out
}

// Thread returns the message channel/ts followed by its replies, in posting
// order; ts must be the parent's, as in Slack.
func (s *Server) Thread(channel, ts string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages {
		if m.Channel == channel && (m.TS == ts || m.ThreadTS == ts) {
			out = append(out, m.clone())
		}
	}
	return out
}

// Files returns the files shared by files.completeUploadExternal, in the
// order they were completed. Files uploaded but never completed are not
// here: Slack discards them.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]File, 0, len(s.shared))
	for _, u := range s.shared {
		f := u.File
		f.Bytes = bytes.Clone(f.Bytes)
		out = append(out, f)
	}
	return out
}

// Responses returns what was posted to a URL from NewResponseURL, in order.
func (s *Server) Responses(responseURL string) []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.responses[responseURL])
	for i := range out {
		out[i].Blocks = bytes.Clone(out[i].Blocks)
	}
	return out
}

// Calls returns every call the bot made, refused ones included.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Refused is how many calls Outage and FailNext turned away.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// WaitFor returns once cond holds, or with an error when ctx ends first. It
// checks cond now and again after every call and every Socket Mode
// connection change, so a test waits exactly as long as the bot takes.
// cond runs without any lock held and may call the Server's methods.
func (s *Server) WaitFor(ctx context.Context, cond func(*Server) bool) error {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		// Taking changed before evaluating cond means a change made while
		// cond runs still wakes us.
		if cond(s) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("slackfake: condition not met: %w", context.Cause(ctx))
		}
	}
}

// Outage makes every call the bot makes over HTTP (Web API methods, upload
// URLs, response URLs) answer status until Restore, the way Slack answers
// when it is down (5xx) or rate limiting (429, with Retry-After in whole
// seconds, rounded up, and {"ok":false,"error":"ratelimited"}). Socket Mode
// connections already open are left alone; new ones fail at
// apps.connections.open.
func (s *Server) Outage(status int, retryAfter time.Duration) {
	checkStatus(status)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = &refusal{status: status, retryAfter: retryAfter}
}

// FailNext makes the next n calls fail as Outage would, then lets calls
// through again. It replaces any earlier FailNext still pending.
func (s *Server) FailNext(n int, status int, retryAfter time.Duration) {
	checkStatus(status)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
	s.failWith = refusal{status: status, retryAfter: retryAfter}
}

// Restore ends an Outage and cancels what is left of a FailNext.
func (s *Server) Restore() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = nil
	s.failNext = 0
}

func checkStatus(status int) {
	// A status that is not an error would be recorded as refused while the
	// bot saw success; that is a broken test, not an outage.
	if status < 400 || status > 599 {
		panic(fmt.Sprintf("slackfake: outage status %d is not an HTTP error", status))
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) recordLocked(c Call) {
	s.calls = append(s.calls, c)
	s.notifyLocked()
}

// refuseLocked applies Outage and FailNext to one call.
func (s *Server) refuseLocked(method string) (reply, bool) {
	var r refusal
	switch {
	case s.outage != nil:
		r = *s.outage
	case s.failNext > 0:
		s.failNext--
		r = s.failWith
	default:
		return reply{}, false
	}
	s.refused++
	rep := r.reply()
	s.recordLocked(Call{Method: method, Status: rep.status, Error: rep.slackErr, Refused: true})
	return rep, true
}

func (r refusal) reply() reply {
	if r.status == http.StatusTooManyRequests {
		rep := fail("ratelimited")
		rep.status = r.status
		// slack-go parses Retry-After as an integer number of seconds.
		rep.retryAfter = strconv.FormatFloat(math.Ceil(max(r.retryAfter, 0).Seconds()), 'f', 0, 64)
		return rep
	}
	// Slack's 5xx bodies are not JSON, and slack-go does not read them.
	return reply{
		status:      r.status,
		contentType: "text/plain; charset=utf-8",
		body:        []byte(http.StatusText(r.status) + "\n"),
	}
}

// reply is an answer worked out under the lock and written after it, so a
// slow client never holds up other calls.
type reply struct {
	status      int
	retryAfter  string
	contentType string
	body        []byte
	slackErr    string
}

func (r reply) write(w http.ResponseWriter) {
	if r.retryAfter != "" {
		w.Header().Set("Retry-After", r.retryAfter)
	}
	w.Header().Set("Content-Type", r.contentType)
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
}

func ok(fields map[string]any) reply {
	fields["ok"] = true
	return jsonReply(fields, "")
}

func fail(code string) reply {
	return jsonReply(map[string]any{"ok": false, "error": code}, code)
}

func jsonReply(v any, slackErr string) reply {
	body, err := json.Marshal(v)
	if err != nil {
		// Every value marshalled here is built in this package.
		panic("slackfake: " + err.Error())
	}
	return reply{
		status:      http.StatusOK,
		contentType: "application/json; charset=utf-8",
		body:        append(body, '\n'),
		slackErr:    slackErr,
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, apiPath)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}

	s.mu.Lock()
	if rep, refused := s.refuseLocked(method); refused {
		s.mu.Unlock()
		rep.write(w)
		return
	}
	handle, known := apiMethods[method]
	req, rep, good := parseAPIRequest(r, body)
	if good {
		rep, good = s.authorize(method, req)
	}
	if good && known {
		rep = handle(s, req)
	}
	if !good || known {
		s.recordLocked(Call{Method: method, Status: rep.status, Error: rep.slackErr})
		s.mu.Unlock()
		rep.write(w)
		return
	}
	s.mu.Unlock()

	note := &proxyNote{}
	r = r.WithContext(context.WithValue(r.Context(), proxyNoteKey{}, note))
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	s.proxy.ServeHTTP(w, r)
	if note.slackErr == "unknown_method" && s.logf != nil {
		s.logf("slackfake: the bot called %s, which neither slackfake nor slacktest implements", method)
	}
	s.mu.Lock()
	s.recordLocked(Call{Method: method, Status: note.status, Error: note.slackErr})
	s.mu.Unlock()
}

type proxyNoteKey struct{}

// proxyNote carries what the proxy saw back to serveAPI, for the record.
type proxyNote struct {
	status   int
	slackErr string
}

func noteOf(ctx context.Context) *proxyNote {
	if n, found := ctx.Value(proxyNoteKey{}).(*proxyNote); found {
		return n
	}
	return &proxyNote{}
}

// fromSlacktest turns slacktest's 404 for a route it lacks into Slack's
// answer for a method that does not exist.
func (s *Server) fromSlacktest(resp *http.Response) error {
	note := noteOf(resp.Request.Context())
	note.status = resp.StatusCode
	if resp.StatusCode != http.StatusNotFound {
		return nil
	}
	_ = resp.Body.Close()
	rep := fail("unknown_method")
	note.status, note.slackErr = rep.status, rep.slackErr
	resp.StatusCode = rep.status
	resp.Status = fmt.Sprintf("%d %s", rep.status, http.StatusText(rep.status))
	resp.Body = io.NopCloser(bytes.NewReader(rep.body))
	resp.ContentLength = int64(len(rep.body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(rep.body)))
	resp.Header.Set("Content-Type", rep.contentType)
	return nil
}

// authorize checks the token the way Slack does: from the Authorization
// header, or else from a token form field, which is where slack-go puts it
// for every form-encoded method.
func (s *Server) authorize(method string, req *apiRequest) (reply, bool) {
	token := req.bearer
	if token == "" {
		token = req.form.Get("token")
	}
	want, other := s.botToken, s.appToken
	if appTokenMethods[method] {
		want, other = s.appToken, s.botToken
	}
	switch token {
	case want:
		return reply{}, true
	case "":
		return fail("not_authed"), false
	case other:
		return fail("not_allowed_token_type"), false
	default:
		return fail("invalid_auth"), false
	}
}

func (m *Message) clone() Message {
	c := *m
	c.Blocks = bytes.Clone(m.Blocks)
	c.Updates = make([]Message, len(m.Updates))
	for i := range m.Updates {
		c.Updates[i] = m.Updates[i].clone()
	}
	if len(c.Updates) == 0 {
		c.Updates = nil
	}
	return c
}
