package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/podns"
	"github.com/netdiag/netdiag/diagnose"
)

// Config is an agent's configuration.
type Config struct {
	// Node is the node the agent runs on; it refuses parts for others.
	Node string
	Auth Auth
	// Pods, when set, says where a pod runs: the agent refuses a pod that
	// the cluster places on another node (a stale view on the caller's
	// side, or a caller trying its luck). Nil where there is no cluster.
	Pods PodLocator
	// FindPod finds a pod's namespace on this node; default a
	// podns.Finder with CRISockets, CgroupRoot and ScanPrefix.
	FindPod    func(ctx context.Context, p podns.PodRef) (*podns.Found, error)
	CRISockets []string
	CgroupRoot string
	// ScanPrefix limits the search by IP to the named namespaces with
	// this prefix: for nodes that share a kernel (the lab).
	ScanPrefix string
	// NodeNetns is the node's own namespace: the agent's (host network).
	NodeNetns string
	// MaxCaptures bounds the captures running at once on the node (2);
	// MaxSessions the runs and watches (16).
	MaxCaptures, MaxSessions int
	// MaxDeadline bounds any call (capture limit + 1 min); a caller's
	// ?timeout= may only shorten it. DefaultDeadline applies without one.
	MaxDeadline, DefaultDeadline time.Duration
	Log                          *slog.Logger
}

// PodLocator says on which node a pod runs, and its UID.
type PodLocator interface {
	PodNode(ctx context.Context, namespace, name string) (node, uid string, err error)
}

// Server is the agent's HTTP API.
type Server struct {
	cfg      Config
	log      *slog.Logger
	captures chan struct{}
	runs     chan struct{}
	mu       sync.Mutex
	sessions map[string]*session
	idle     *time.Timer
}

type session struct {
	owner   string
	w       diagnose.Watching
	cancel  context.CancelFunc
	release func()
	done    chan struct{}
}

// New checks the configuration and makes the server.
func New(cfg Config) (*Server, error) {
	if cfg.Node == "" {
		return nil, errors.New("agent: no node name (give --node, or NODE_NAME from the downward API)")
	}
	if cfg.Auth == nil {
		return nil, errors.New("agent: no way to authenticate callers (give a cluster to ask, or --token-file)")
	}
	if cfg.NodeNetns == "" {
		cfg.NodeNetns = "/proc/self/ns/net"
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.CRISockets == nil {
		cfg.CRISockets = podns.DefaultCRISockets
	}
	if cfg.FindPod == nil {
		cfg.FindPod = podns.Finder{CRISockets: cfg.CRISockets, CgroupRoot: cfg.CgroupRoot, ScanPrefix: cfg.ScanPrefix}.Find
	}
	if cfg.MaxCaptures <= 0 {
		cfg.MaxCaptures = 2
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 16
	}
	if cfg.MaxDeadline <= 0 {
		cfg.MaxDeadline = collectors.MaxCaptureDuration + time.Minute
	}
	if cfg.DefaultDeadline <= 0 {
		cfg.DefaultDeadline = 2 * time.Minute
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log.With("node", cfg.Node),
		captures: make(chan struct{}, cfg.MaxCaptures), runs: make(chan struct{}, cfg.MaxSessions),
		sessions: map[string]*session{}}, nil
}

// httpError is an error with the status it answers.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func fail(status int, format string, a ...any) error {
	return &httpError{status, fmt.Errorf(format, a...)}
}

func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	// A bug in one call must not take the agent down or leave the caller
	// with a cut connection: it is a 500 that says so, and a log line.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("agent call panicked", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !w.wrote {
				http.Error(w, fmt.Sprintf("agent: internal error (a bug): %v", p), http.StatusInternalServerError)
			}
		}
	}()
	if r.URL.Path == PathHealth {
		w.Write([]byte("ok\n"))
		return
	}
	user, err := s.cfg.Auth.Authenticate(r.Context(), r)
	if err != nil {
		status := http.StatusUnauthorized
		if !errors.Is(err, ErrUnauthenticated) {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="netdiag-agent"`)
		s.answer(w, r, start, "", &httpError{status, err})
		return
	}
	switch {
	case r.URL.Path == PathPrepare || r.URL.Path == PathRun || r.URL.Path == PathWatch:
		if r.Method != http.MethodPost {
			s.answer(w, r, start, user.Name, fail(http.StatusMethodNotAllowed, "%s takes POST", r.URL.Path))
			return
		}
		err = s.part(w, r, user)
	case strings.HasPrefix(r.URL.Path, PathWatch+"/"):
		err = s.session(w, r, user)
	default:
		err = fail(http.StatusNotFound, "no such call %s (calls: POST %s, %s, %s, %s/ID/finish; DELETE %s/ID)", r.URL.Path, PathPrepare, PathRun, PathWatch, PathWatch, PathWatch)
	}
	s.answer(w, r, start, user.Name, err)
}

// answer logs the call and, when it failed before any answer was written,
// writes the error.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, start time.Time, user string, err error) {
	status := http.StatusOK
	if err != nil {
		status = http.StatusInternalServerError
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "5")
		}
		if sw, ok := w.(*statusWriter); !ok || !sw.wrote {
			http.Error(w, err.Error(), status)
		}
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "user", user, "status", status, "took_ms", time.Since(start).Milliseconds()}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.log.Log(r.Context(), level, "agent call", attrs...)
}

// statusWriter remembers whether an answer started, after which an error
// can only end the stream.
type statusWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// part serves prepare, run and watch: read, check, authorise, find, run.
func (s *Server) part(w http.ResponseWriter, r *http.Request, user *User) error {
	timeout, err := s.deadline(r)
	if err != nil {
		return err
	}
	var p diagnose.Part
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(http.StatusRequestEntityTooLarge, "the part is larger than %d bytes", MaxBody)
		}
		return fail(http.StatusBadRequest, "the part is not valid JSON: %v", err)
	}
	if err := checkPart(&p, s.cfg.Node); err != nil {
		return fail(http.StatusBadRequest, "%v", err)
	}
	if err := s.authorize(r.Context(), user, &p); err != nil {
		return err
	}
	release, err := s.admit(&p, r.URL.Path != PathPrepare)
	if err != nil {
		return err
	}
	// A watch outlives this call: its own context, ended by finish, abort
	// or its deadline.
	if r.URL.Path == PathWatch {
		return s.watch(w, r, user, &p, timeout, release)
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	local, done, err := s.locate(ctx, &p)
	if err != nil {
		return err
	}
	defer done()
	site := &diagnose.LocalSite{}
	if r.URL.Path == PathPrepare {
		params, err := site.Prepare(ctx, local)
		if err != nil {
			return fail(http.StatusInternalServerError, "prepare: %v", err)
		}
		return writeJSON(w, record{Params: params})
	}
	evs, err := site.Run(ctx, local)
	if err != nil {
		return fail(http.StatusInternalServerError, "run: %v", err)
	}
	return s.stream(w, evs)
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request, user *User, p *diagnose.Part, timeout time.Duration, release func()) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	local, done, err := s.locate(ctx, p)
	if err != nil {
		cancel()
		release()
		return err
	}
	release = func(r func()) func() { return func() { done(); r() } }(release)
	wt, err := (&diagnose.LocalSite{}).Watch(ctx, local)
	if err != nil {
		cancel()
		release()
		return fail(http.StatusInternalServerError, "watch: %v", err)
	}
	id := newID()
	ss := &session{owner: user.Name, w: wt, cancel: cancel, release: release, done: make(chan struct{})}
	s.mu.Lock()
	s.sessions[id] = ss
	s.mu.Unlock()
	// A watch that is never finished ends at its deadline.
	go func() {
		select {
		case <-ctx.Done():
			if s.take(id) != nil {
				s.log.Warn("watch never finished: ended at its deadline", "session", id, "user", user.Name)
				ss.end(context.Background())
			}
		case <-ss.done:
		}
	}()
	return writeJSON(w, record{Session: id})
}

// end finishes a session's watches and frees its slots.
func (ss *session) end(ctx context.Context) ([]collectors.Evidence, error) {
	defer close(ss.done)
	defer ss.release()
	defer ss.cancel()
	return ss.w.Finish(ctx)
}

func (s *Server) take(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	delete(s.sessions, id)
	return ss
}

// session serves finish and abort of a watch.
func (s *Server) session(w http.ResponseWriter, r *http.Request, user *User) error {
	rest := strings.TrimPrefix(r.URL.Path, PathWatch+"/")
	id, action, _ := strings.Cut(rest, "/")
	switch {
	case r.Method == http.MethodPost && action == "finish":
	case r.Method == http.MethodDelete && action == "":
	default:
		return fail(http.StatusNotFound, "no such call %s %s (POST %s/ID/finish, DELETE %s/ID)", r.Method, r.URL.Path, PathWatch, PathWatch)
	}
	s.mu.Lock()
	ss := s.sessions[id]
	if ss != nil && ss.owner != user.Name {
		ss = nil // another caller's session is none of this one's business
	}
	if ss != nil {
		delete(s.sessions, id)
	}
	s.mu.Unlock()
	if ss == nil {
		return fail(http.StatusNotFound, "no watch %q (finished, aborted, past its deadline, or another caller's)", id)
	}
	evs, err := ss.end(r.Context())
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return fail(http.StatusInternalServerError, "finish: %v", err)
	}
	return s.stream(w, evs)
}

// deadline is the call's ?timeout=, bounded.
func (s *Server) deadline(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return s.cfg.DefaultDeadline, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fail(http.StatusBadRequest, "timeout %q: give a positive duration, e.g. 30s (at most %s is used)", v, s.cfg.MaxDeadline)
	}
	return min(d, s.cfg.MaxDeadline), nil
}

// authorize asks whether the user may diagnose what the part places. A
// pod's diagnosis reads its node's network too (routes, the Service rules,
// the overlay): the pods' namespaces decide. A part with no pod (a node
// asked about itself, a host-network peer) needs the cluster-wide grant,
// named after the node. A capture with payload needs its own grant.
func (s *Server) authorize(ctx context.Context, u *User, p *diagnose.Part) error {
	payload := p.Params.Capture.Payload
	for _, j := range p.Jobs {
		payload = payload || (j.Params != nil && j.Params.Capture.Payload)
	}
	var asks []Access
	for _, sc := range collectors.Scopes {
		if pl, ok := p.Places[sc]; ok && pl.Pod != nil {
			a := Access{Namespace: pl.Pod.Namespace, Name: pl.Pod.Name, Payload: payload}
			if !slices.Contains(asks, a) {
				asks = append(asks, a)
			}
		}
	}
	if len(asks) == 0 {
		asks = []Access{{Name: s.cfg.Node, Payload: payload}}
	}
	for _, a := range asks {
		if err := s.cfg.Auth.Authorize(ctx, u, a); err != nil {
			if errors.Is(err, ErrForbidden) {
				return &httpError{http.StatusForbidden, err}
			}
			return &httpError{http.StatusServiceUnavailable, err}
		}
	}
	return nil
}

// admit takes the slots a part needs: one run, and one capture per
// capture job; none left is 429, not a wait.
func (s *Server) admit(p *diagnose.Part, run bool) (func(), error) {
	if !run {
		return func() {}, nil
	}
	select {
	case s.runs <- struct{}{}:
	default:
		return nil, fail(http.StatusTooManyRequests, "node %s is already running %d diagnoses; try again shortly", s.cfg.Node, s.cfg.MaxSessions)
	}
	n := 0
	for _, j := range p.Jobs {
		if j.Collector == "capture" {
			n++
		}
	}
	taken := 0
	release := func() {
		for range taken {
			<-s.captures
		}
		<-s.runs
		s.idleSoon()
	}
	for range n {
		select {
		case s.captures <- struct{}{}:
			taken++
		default:
			release()
			return nil, fail(http.StatusTooManyRequests, "node %s is already running %d captures; try again shortly", s.cfg.Node, s.cfg.MaxCaptures)
		}
	}
	return sync.OnceFunc(release), nil
}

// idleSoon gives the memory of a finished diagnosis back to the node once
// the agent is idle again: an iptables dump of a big node is megabytes of
// heap that the runtime would otherwise keep for minutes, on every node.
func (s *Server) idleSoon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil {
		s.idle.Stop()
	}
	s.idle = time.AfterFunc(time.Second, func() {
		if len(s.runs) == 0 {
			debug.FreeOSMemory()
		}
	})
}

// locate finds the part's namespaces on this node: the node's own, and
// each pod's through the container runtime, its cgroup or its IP. The
// source pod's resolv.conf is its own.
func (s *Server) locate(ctx context.Context, p *diagnose.Part) (_ *diagnose.Part, _ func(), err error) {
	var temp []string
	cleanup := func() {
		for _, f := range temp {
			os.Remove(f)
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	out := *p
	out.Places = map[collectors.Scope]diagnose.Place{}
	params := *p.Params
	out.Params = &params
	for sc, pl := range p.Places {
		if pl.Pod == nil {
			pl.Netns = s.cfg.NodeNetns
			out.Places[sc] = pl
			continue
		}
		uid := pl.Pod.UID
		if s.cfg.Pods != nil {
			node, u, err := s.cfg.Pods.PodNode(ctx, pl.Pod.Namespace, pl.Pod.Name)
			if err != nil {
				return nil, nil, &httpError{http.StatusNotFound, fmt.Errorf("pod %s: %w", pl.Pod.Key(), err)}
			}
			if node != s.cfg.Node {
				return nil, nil, fail(http.StatusMisdirectedRequest, "pod %s runs on node %q, not on this node %q", pl.Pod.Key(), node, s.cfg.Node)
			}
			if uid != "" && u != uid {
				return nil, nil, fail(http.StatusNotFound, "pod %s has UID %s now, not %s: it was recreated", pl.Pod.Key(), u, uid)
			}
			uid = u
		}
		found, err := s.cfg.FindPod(ctx, podns.PodRef{Namespace: pl.Pod.Namespace, Name: pl.Pod.Name, UID: uid, IP: pl.Pod.IP})
		if err != nil {
			return nil, nil, &httpError{http.StatusNotFound, fmt.Errorf("pod %s: network namespace not found on node %s: %w", pl.Pod.Key(), s.cfg.Node, err)}
		}
		pl.Netns = found.Path
		out.Places[sc] = pl
		if sc == collectors.ScopeSource {
			rc := found.ResolvConf
			if rc == "" && found.DNS != nil {
				// No container runs to read it from: the configuration
				// the runtime was given is what the pod gets.
				f, err := os.CreateTemp("", "netdiag-resolv-*.conf")
				if err != nil {
					return nil, nil, err
				}
				temp = append(temp, f.Name())
				_, err = f.Write(found.DNS.ResolvConf())
				f.Close()
				if err != nil {
					return nil, nil, err
				}
				rc = f.Name()
			}
			if rc == "" {
				rc = collectors.DefaultResolvConf(found.Path)
			}
			params.ResolvConf = rc
			out.Jobs = slices.Clone(p.Jobs)
			for i, j := range out.Jobs {
				if j.Params != nil {
					jp := *j.Params
					jp.ResolvConf = rc
					out.Jobs[i].Params = &jp
				}
			}
		}
		s.log.Debug("found pod", "pod", pl.Pod.Key(), "netns", found.Path, "via", found.Via)
	}
	return &out, cleanup, nil
}

// stream writes evidence, each capture followed by its pcap, which is then
// removed from the node.
func (s *Server) stream(w http.ResponseWriter, evs []collectors.Evidence) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	for i := range evs {
		ev := &evs[i]
		if err := enc.Encode(record{Evidence: ev}); err != nil {
			return err
		}
		if c, ok := ev.Data.(*collectors.CaptureResult); ok && c.File != "" {
			if err := streamPcap(enc, ev, c.File); err != nil {
				enc.Encode(record{Error: err.Error()})
				return err
			}
		}
		flush()
	}
	return enc.Encode(record{Done: true})
}

func streamPcap(enc *json.Encoder, ev *collectors.Evidence, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("pcap of %s: %w", ev.Scope, err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, pcapChunkSize)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := enc.Encode(record{Pcap: &pcapChunk{Scope: ev.Scope, Label: ev.Label, Data: bytes.Clone(buf[:n])}}); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pcap of %s: %w", ev.Scope, err)
		}
	}
}

func writeJSON(w http.ResponseWriter, rec record) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(rec)
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Close ends every watch still running.
func (s *Server) Close() {
	s.mu.Lock()
	all := s.sessions
	s.sessions = map[string]*session{}
	s.mu.Unlock()
	for _, ss := range all {
		ss.end(context.Background())
	}
}
