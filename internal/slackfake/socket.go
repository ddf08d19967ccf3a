package slackfake

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	"github.com/slack-go/slack/socketmode"
)

// Slack's approximate_connection_time in hello: how long it keeps a
// connection before asking the client to refresh it, shorter with
// debug_reconnects=true. slackfake reports it but never refreshes on its
// own; tests call Disconnect.
const (
	connectionSeconds      = 18060
	debugConnectionSeconds = 360
	writeTimeout           = 5 * time.Second
)

// socketConn is one Socket Mode websocket. gorilla/websocket allows one
// writer at a time, except for control frames, hence wmu.
type socketConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{} // closed once the connection is gone
}

func (c *socketConn) writeJSON(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return c.ws.WriteJSON(v)
}

// envelope is a Socket Mode message from Slack to the app.
type envelope struct {
	Type                   string          `json:"type"`
	EnvelopeID             string          `json:"envelope_id,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	AcceptsResponsePayload bool            `json:"accepts_response_payload"`
}

// SocketURL returns a fresh single-use websocket URL, as
// apps.connections.open does, for tests that dial Socket Mode themselves.
func (s *Server) SocketURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socketURLLocked()
}

func (s *Server) socketURLLocked() string {
	ticket := rand.Text()
	s.tickets[ticket] = true
	q := url.Values{"ticket": {ticket}, "app_id": {AppID}}
	return "ws://" + strings.TrimPrefix(s.base, "http://") + socketPath + "?" + q.Encode()
}

// SetPingInterval sets how often connections opened from now on get a
// websocket ping (default 1s). socketmode.Client reconnects when pings stop
// for longer than its OptionPingInterval (default 30s), so this must stay
// below what the bot configures there.
func (s *Server) SetPingInterval(d time.Duration) {
	if d <= 0 {
		panic(fmt.Sprintf("slackfake: ping interval %s is not positive", d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pingEvery = d
}

// Sockets is how many Socket Mode connections are open now.
func (s *Server) Sockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// SocketsOpened is how many Socket Mode connections were ever accepted, so
// a test can wait for a reconnect.
func (s *Server) SocketsOpened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// Disconnect sends Slack's disconnect envelope on every open connection, as
// Slack does before it refreshes one; socketmode.Client reconnects.
// reason is Slack's: "refresh_requested", "warning", "link_disabled".
func (s *Server) Disconnect(reason string) {
	s.mu.Lock()
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.writeJSON(map[string]any{
			"type":       socketmode.RequestTypeDisconnect,
			"reason":     reason,
			"debug_info": map[string]any{"host": "slackfake"},
		})
	}
}

// DropSockets cuts every open connection without a close frame, as a
// network failure would.
func (s *Server) DropSockets() {
	s.mu.Lock()
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.Close()
	}
}

func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	if s.closed || !s.tickets[q.Get("ticket")] {
		s.mu.Unlock()
		http.Error(w, "invalid ticket", http.StatusUnauthorized)
		return
	}
	delete(s.tickets, q.Get("ticket"))
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	approx := connectionSeconds
	if q.Get("debug_reconnects") == "true" {
		approx = debugConnectionSeconds
	}
	// slacktest's upgrader accepts any Origin; socketmode.Client sends
	// "https://api.slack.com", which gorilla's default check would refuse
	// on 127.0.0.1.
	slacktest.Websocket(func(ws *websocket.Conn) { s.runSocket(ws, approx) })(w, r)
}

func (s *Server) runSocket(ws *websocket.Conn, approx int) {
	c := &socketConn{ws: ws, done: make(chan struct{})}
	defer close(c.done)

	s.mu.Lock()
	n := len(s.conns) + 1
	every := s.pingEvery
	s.mu.Unlock()
	hello := map[string]any{
		"type":            socketmode.RequestTypeHello,
		"num_connections": n,
		"debug_info": map[string]any{
			"host":                        "slackfake",
			"build_number":                1,
			"approximate_connection_time": approx,
		},
		"connection_info": map[string]any{"app_id": AppID},
	}
	if err := c.writeJSON(hello); err != nil {
		return
	}

	// Only a connection that has said hello takes envelopes, as with Slack.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.conns = append(s.conns, c)
	s.opened++
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conns = slices.DeleteFunc(s.conns, func(o *socketConn) bool { return o == c })
		s.notifyLocked()
		s.mu.Unlock()
	}()

	stopPing := make(chan struct{})
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			// socketmode.Client treats a connection without pings as dead.
			if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)) != nil {
				return
			}
			select {
			case <-stopPing:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		close(stopPing)
		_ = ws.Close()
		<-pingDone
	}()

	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		call := Call{Method: CallAck}
		if json.Unmarshal(data, &ack) != nil || ack.EnvelopeID == "" {
			call.Error = "invalid_ack"
		}
		if string(ack.Payload) == "null" {
			ack.Payload = nil
		}
		s.mu.Lock()
		waiting, found := s.pending[ack.EnvelopeID]
		delete(s.pending, ack.EnvelopeID)
		if !found && call.Error == "" {
			call.Error = "unknown_envelope"
		}
		s.recordLocked(call)
		s.mu.Unlock()
		if found {
			waiting <- ack.Payload
		}
	}
}

// SendSlashCommand delivers cmd to the bot as Slack does in Socket Mode: a
// "slash_commands" envelope on an open connection (waiting for one if none
// is open yet), answered by the bot's ack. It returns the ack's payload,
// the immediate response the user would see, or nil for a bare ack.
// Empty TeamID, TeamDomain, APIAppID, TriggerID and ResponseURL are filled
// in as Slack would; set ResponseURL from NewResponseURL to look at the
// delayed responses.
func (s *Server) SendSlashCommand(ctx context.Context, cmd slack.SlashCommand) (json.RawMessage, error) {
	s.mu.Lock()
	if cmd.TeamID == "" {
		cmd.TeamID = TeamID
	}
	if cmd.TeamDomain == "" {
		cmd.TeamDomain = TeamName
	}
	if cmd.APIAppID == "" {
		cmd.APIAppID = AppID
	}
	if cmd.TriggerID == "" {
		cmd.TriggerID = rand.Text()
	}
	if cmd.ResponseURL == "" {
		cmd.ResponseURL = s.newResponseURLLocked()
	}
	s.mu.Unlock()
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return s.push(ctx, socketmode.RequestTypeSlashCommands, payload, true)
}

// SendInteraction delivers a button press, menu choice, modal submission
// or shortcut as an "interactive" envelope and returns the ack's payload.
// Slack lets only view submissions answer in the ack (a response_action),
// so only those are marked accepts_response_payload.
func (s *Server) SendInteraction(ctx context.Context, payload slack.InteractionCallback) (json.RawMessage, error) {
	if payload.APIAppID == "" {
		payload.APIAppID = AppID
	}
	if payload.Team.ID == "" {
		payload.Team.ID = TeamID
	}
	// InteractionCallback's MarshalJSON has a pointer receiver; marshalling
	// the value would skip it and lose the block_actions state.
	data, err := json.Marshal(&payload)
	if err != nil {
		return nil, err
	}
	return s.push(ctx, socketmode.RequestTypeInteractive, data, payload.Type == slack.InteractionTypeViewSubmission)
}

func (s *Server) push(ctx context.Context, kind string, payload json.RawMessage, acceptsResponse bool) (json.RawMessage, error) {
	var c *socketConn
	var closed bool
	err := s.WaitFor(ctx, func(s *Server) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		closed = s.closed
		if len(s.conns) > 0 {
			// The newest connection: an older one may be on its way out
			// after a disconnect.
			c = s.conns[len(s.conns)-1]
		}
		return closed || c != nil
	})
	if err != nil {
		return nil, fmt.Errorf("slackfake: no Socket Mode connection for %s: %w", kind, err)
	}
	if closed {
		return nil, errors.New("slackfake: server closed")
	}

	env := envelope{Type: kind, EnvelopeID: newEnvelopeID(), Payload: payload, AcceptsResponsePayload: acceptsResponse}
	acked := make(chan json.RawMessage, 1)
	s.mu.Lock()
	s.pending[env.EnvelopeID] = acked
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, env.EnvelopeID)
		s.mu.Unlock()
	}()

	if err := c.writeJSON(env); err != nil {
		return nil, fmt.Errorf("slackfake: sending %s envelope: %w", kind, err)
	}
	select {
	case p := <-acked:
		return p, nil
	case <-c.done:
		// The ack may have raced the close.
		select {
		case p := <-acked:
			return p, nil
		default:
		}
		return nil, fmt.Errorf("slackfake: connection closed before the ack of %s envelope %s", kind, env.EnvelopeID)
	case <-ctx.Done():
		return nil, fmt.Errorf("slackfake: no ack of %s envelope %s: %w", kind, env.EnvelopeID, context.Cause(ctx))
	}
}

// newEnvelopeID makes a random UUID, the form Slack's envelope ids take.
func newEnvelopeID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
