package slackfake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The Web API methods slackfake answers itself, each run under s.mu with
// the token already checked.
var apiMethods = map[string]func(*Server, *apiRequest) reply{
	"auth.test":                    (*Server).authTest,
	"chat.postMessage":             (*Server).postMessage,
	"chat.update":                  (*Server).updateMessage,
	"chat.postEphemeral":           (*Server).postEphemeral,
	"files.getUploadURLExternal":   (*Server).getUploadURL,
	"files.completeUploadExternal": (*Server).completeUpload,
	"apps.connections.open":        (*Server).openConnection,
	"usergroups.users.list":        (*Server).groupMembers,
}

// apiRequest holds a method's arguments from whichever encoding the client
// chose: Slack takes form fields (slack-go's choice for every method here)
// or a JSON object, where blocks is an array rather than a string.
type apiRequest struct {
	bearer string
	form   url.Values
	json   map[string]json.RawMessage
}

func parseAPIRequest(r *http.Request, body []byte) (*apiRequest, reply, bool) {
	req := &apiRequest{form: r.URL.Query()}
	if token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found {
		req.bearer = strings.TrimSpace(token)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, reply{}, true
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType == "application/json" {
		if err := json.Unmarshal(body, &req.json); err != nil {
			return nil, fail("invalid_json"), false
		}
		return req, reply{}, true
	}
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fail("invalid_form_data"), false
	}
	for k, v := range values {
		req.form[k] = append(req.form[k], v...)
	}
	return req, reply{}, true
}

// str is an argument as text: a JSON string unquoted, any other JSON value
// as written (true, 42), a form field as sent.
func (r *apiRequest) str(name string) string {
	if raw, found := r.json[name]; found {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		if string(raw) == "null" {
			return ""
		}
		return string(raw)
	}
	return r.form.Get(name)
}

func (r *apiRequest) flag(name string) bool {
	v := r.str(name)
	return v == "true" || v == "1"
}

var errNotArray = errors.New("not a JSON array")

// array is a JSON-array argument (blocks, files): embedded in a JSON body,
// or a JSON string inside a form field. nil when absent.
func (r *apiRequest) array(name string) (json.RawMessage, error) {
	var raw []byte
	if j, found := r.json[name]; found && string(j) != "null" {
		raw = j
		var s string
		if json.Unmarshal(j, &s) == nil {
			raw = []byte(s)
		}
	} else if s := r.form.Get(name); s != "" {
		raw = []byte(s)
	}
	if raw == nil {
		return nil, nil
	}
	if !json.Valid(raw) || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		return nil, errNotArray
	}
	return bytes.Clone(raw), nil
}

func (s *Server) authTest(*apiRequest) reply {
	return ok(map[string]any{
		"url":                   s.base + "/",
		"team":                  TeamName,
		"user":                  BotName,
		"team_id":               TeamID,
		"user_id":               BotUserID,
		"bot_id":                BotID,
		"is_enterprise_install": false,
	})
}

func (s *Server) nextTSLocked() string {
	s.tsSeq++
	micros := s.tsSeq * 100
	return fmt.Sprintf("%d.%06d", tsEpoch+micros/1_000_000, micros%1_000_000)
}

// content reads the parts of a message chat.postMessage, chat.update and
// chat.postEphemeral share, with Slack's errors for the ways they go wrong.
func (r *apiRequest) content() (text string, blocks json.RawMessage, rep reply, good bool) {
	blocks, err := r.array("blocks")
	if err != nil {
		return "", nil, fail("invalid_blocks"), false
	}
	text = r.str("text")
	if text == "" && blocks == nil && r.str("attachments") == "" {
		return "", nil, fail("no_text"), false
	}
	return text, blocks, reply{}, true
}

// wire is a message as Slack echoes it back in a method's "message" field.
func (m *Message) wire() map[string]any {
	w := map[string]any{
		"type":   "message",
		"text":   m.Text,
		"ts":     m.TS,
		"user":   BotUserID,
		"bot_id": BotID,
		"app_id": AppID,
		"team":   TeamID,
	}
	if m.ThreadTS != "" {
		w["thread_ts"] = m.ThreadTS
	}
	if m.Blocks != nil {
		w["blocks"] = m.Blocks
	}
	return w
}

func (s *Server) postMessage(r *apiRequest) reply {
	channel := r.str("channel")
	if channel == "" {
		return fail("channel_not_found")
	}
	text, blocks, rep, good := r.content()
	if !good {
		return rep
	}
	m := &Message{
		Channel:        channel,
		TS:             s.nextTSLocked(),
		ThreadTS:       r.str("thread_ts"),
		Text:           text,
		Blocks:         blocks,
		ReplyBroadcast: r.flag("reply_broadcast"),
	}
	s.messages = append(s.messages, m)
	return ok(map[string]any{"channel": channel, "ts": m.TS, "message": m.wire()})
}

func (s *Server) updateMessage(r *apiRequest) reply {
	channel, ts := r.str("channel"), r.str("ts")
	var orig *Message
	for _, m := range s.messages {
		// Ephemeral messages belong to the user's client; Slack cannot
		// find them to update.
		if m.Channel == channel && m.TS == ts && !m.Ephemeral {
			orig = m
			break
		}
	}
	if orig == nil {
		return fail("message_not_found")
	}
	text, blocks, rep, good := r.content()
	if !good {
		return rep
	}
	u := Message{Channel: channel, TS: ts, ThreadTS: orig.ThreadTS, Text: text, Blocks: blocks}
	orig.Updates = append(orig.Updates, u)
	return ok(map[string]any{"channel": channel, "ts": ts, "text": text, "message": u.wire()})
}

func (s *Server) postEphemeral(r *apiRequest) reply {
	channel, user := r.str("channel"), r.str("user")
	if channel == "" {
		return fail("channel_not_found")
	}
	if user == "" {
		return fail("user_not_found")
	}
	text, blocks, rep, good := r.content()
	if !good {
		return rep
	}
	m := &Message{
		Channel:   channel,
		TS:        s.nextTSLocked(),
		ThreadTS:  r.str("thread_ts"),
		Text:      text,
		Blocks:    blocks,
		Ephemeral: true,
		User:      user,
	}
	s.messages = append(s.messages, m)
	return ok(map[string]any{"message_ts": m.TS})
}

func (s *Server) getUploadURL(r *apiRequest) reply {
	name := r.str("filename")
	length, err := strconv.Atoi(r.str("length"))
	if name == "" || err != nil || length <= 0 {
		return fail("invalid_arguments")
	}
	s.idSeq++
	id := fmt.Sprintf("F%010d", s.idSeq)
	s.uploads[id] = &upload{File: File{ID: id, Name: name}}
	return ok(map[string]any{"upload_url": s.base + uploadPath + id, "file_id": id})
}

func (s *Server) completeUpload(r *apiRequest) reply {
	raw, err := r.array("files")
	var files []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err != nil || raw == nil || json.Unmarshal(raw, &files) != nil || len(files) == 0 {
		return fail("invalid_arguments")
	}
	// All or nothing, and each upload completes once: Slack documents the
	// method as callable only once, and a file whose bytes never reached
	// the upload URL has nothing to share.
	seen := map[string]bool{}
	for _, f := range files {
		u := s.uploads[f.ID]
		if u == nil || !u.uploaded || u.completed || seen[f.ID] {
			return fail("file_not_found")
		}
		seen[f.ID] = true
	}
	channel := r.str("channel_id")
	if channel == "" {
		channel, _, _ = strings.Cut(r.str("channels"), ",")
	}
	out := make([]map[string]any, 0, len(files))
	for _, f := range files {
		u := s.uploads[f.ID]
		u.completed = true
		u.Title = f.Title
		if u.Title == "" {
			u.Title = u.Name
		}
		u.Channel = channel
		u.ThreadTS = r.str("thread_ts")
		u.InitialComment = r.str("initial_comment")
		s.shared = append(s.shared, u)
		out = append(out, map[string]any{"id": u.ID, "title": u.Title})
	}
	return ok(map[string]any{"files": out})
}

// groupMembers answers usergroups.users.list from SetGroupMembers; a
// group never set is one Slack does not know.
func (s *Server) groupMembers(r *apiRequest) reply {
	users, found := s.groups[r.str("usergroup")]
	if !found {
		return fail("no_such_subteam")
	}
	return ok(map[string]any{"users": append([]string{}, users...)})
}

func (s *Server) openConnection(*apiRequest) reply {
	return ok(map[string]any{"url": s.socketURLLocked()})
}

// serveUpload takes a file's bytes at its upload URL. The URL itself is the
// credential, as Slack's are pre-signed, so no token is checked.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "upload with POST", http.StatusMethodNotAllowed)
		return
	}
	data, err := uploadedBytes(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, uploadPath)

	s.mu.Lock()
	if rep, refused := s.refuseLocked(CallUpload); refused {
		s.mu.Unlock()
		rep.write(w)
		return
	}
	u := s.uploads[id]
	if u == nil || u.completed {
		s.recordLocked(Call{Method: CallUpload, Status: http.StatusNotFound})
		s.mu.Unlock()
		http.Error(w, "no such upload", http.StatusNotFound)
		return
	}
	// A repeated POST replaces the bytes: retrying an upload is harmless
	// until the file is completed.
	u.Bytes = data
	u.uploaded = true
	s.recordLocked(Call{Method: CallUpload, Status: http.StatusOK})
	s.mu.Unlock()

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "OK - %d", len(data))
}

// uploadedBytes takes the file from a multipart form, which is how slack-go
// sends it (one part named "file"), or else the raw body, which Slack also
// accepts.
func uploadedBytes(r *http.Request) ([]byte, error) {
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "multipart/form-data" {
		return io.ReadAll(r.Body)
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil, errors.New("multipart upload has no file part")
		}
		if err != nil {
			return nil, err
		}
		if part.FormName() == "file" || part.FileName() != "" {
			return io.ReadAll(part)
		}
	}
}

// flexBool reads true/false whether sent as a JSON bool or string, as
// clients other than slack-go do.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(data), `"`)
	*b = s == "true" || s == "1"
	return nil
}

// serveResponseURL takes the delayed answers to a slash command or an
// interaction. Like Slack's, the URL is the credential.
func (s *Server) serveResponseURL(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	key := s.base + r.URL.Path

	s.mu.Lock()
	if rep, refused := s.refuseLocked(CallResponseURL); refused {
		s.mu.Unlock()
		rep.write(w)
		return
	}
	if _, found := s.responses[key]; r.Method != http.MethodPost || !found {
		s.recordLocked(Call{Method: CallResponseURL, Status: http.StatusNotFound})
		s.mu.Unlock()
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	var msg struct {
		ResponseType    string          `json:"response_type"`
		Text            string          `json:"text"`
		Blocks          json.RawMessage `json:"blocks"`
		ReplaceOriginal flexBool        `json:"replace_original"`
		DeleteOriginal  flexBool        `json:"delete_original"`
		ThreadTS        string          `json:"thread_ts"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		s.recordLocked(Call{Method: CallResponseURL, Status: http.StatusBadRequest, Error: "invalid_payload"})
		s.mu.Unlock()
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	// slack-go always sends "blocks", as null when there are none.
	if string(msg.Blocks) == "null" {
		msg.Blocks = nil
	}
	s.responses[key] = append(s.responses[key], Response{
		ResponseType:    msg.ResponseType,
		Text:            msg.Text,
		Blocks:          msg.Blocks,
		ReplaceOriginal: bool(msg.ReplaceOriginal),
		DeleteOriginal:  bool(msg.DeleteOriginal),
		ThreadTS:        msg.ThreadTS,
	})
	rep := ok(map[string]any{})
	s.recordLocked(Call{Method: CallResponseURL, Status: rep.status})
	s.mu.Unlock()
	rep.write(w)
}
