package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// Client calls one node's agent: a diagnose.Site on that node.
type Client struct {
	Node string
	// URL is the agent's base, https://IP:PORT.
	URL  string
	HTTP *http.Client
	// Token gives the bearer token for each call (a projected
	// ServiceAccount token is re-read: it rotates).
	Token func() (string, error)
	// Retry is how long to wait before the one retry of a call that did
	// not reach the agent (default 200 ms).
	Retry time.Duration
}

// wire is the part as it crosses to the agent: no paths of this machine
// (the agent finds the namespaces and the pod's resolv.conf itself, and
// streams the pcap back).
func wire(p *diagnose.Part) *diagnose.Part {
	out := *p
	out.Places = map[collectors.Scope]diagnose.Place{}
	for s, pl := range p.Places {
		pl.Netns = ""
		out.Places[s] = pl
	}
	strip := func(q *collectors.Params) *collectors.Params {
		c := *q
		c.ResolvConf, c.Capture.File = "", ""
		return &c
	}
	out.Params = strip(p.Params)
	out.Jobs = make([]collectors.Job, len(p.Jobs))
	for i, j := range p.Jobs {
		if j.Params != nil {
			j.Params = strip(j.Params)
		}
		out.Jobs[i] = j
	}
	return &out
}

// call posts to the agent, retrying once a call that did not reach it.
// A node that does not answer is ErrUnreachable; a pod that is not there
// ErrNotFound.
func (c *Client) call(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	u := strings.TrimSuffix(c.URL, "/") + path
	if dl, ok := ctx.Deadline(); ok {
		u += "?timeout=" + url.QueryEscape(time.Until(dl).Round(time.Millisecond).String())
	}
	var lastErr error
	for attempt := range 2 {
		if attempt > 0 {
			wait := c.Retry
			if wait <= 0 {
				wait = 200 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrUnreachableNode(c.Node), lastErr)
			case <-time.After(wait):
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(buf))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		if c.Token != nil {
			tok, err := c.Token()
			if err != nil {
				return nil, fmt.Errorf("token for the agent: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch {
		case resp.StatusCode < 300:
			return resp, nil
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
			lastErr = answerError(resp)
			continue
		}
		err = answerError(resp)
		// A pod that is not on the node (or no longer where the view
		// said) is not there: target-not-found, not an agent failure.
		placed := path == PathPrepare || path == PathRun || path == PathWatch
		if placed && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMisdirectedRequest) {
			return nil, fmt.Errorf("%w: %w", diagnose.ErrNotFound, err)
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("node %s refused: %w (%w)", c.Node, err, diagnose.ErrDenied)
		}
		return nil, err
	}
	return nil, fmt.Errorf("%w: %w", ErrUnreachableNode(c.Node), lastErr)
}

// ErrUnreachableNode wraps diagnose.ErrUnreachable with the agent's words.
func ErrUnreachableNode(node string) error {
	return fmt.Errorf("the netdiag agent of node %s did not answer (%w)", node, diagnose.ErrUnreachable)
}

func answerError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return fmt.Errorf("agent: %s: %s", resp.Status, strings.TrimSpace(string(b)))
}

// Prepare implements diagnose.Site.
func (c *Client) Prepare(ctx context.Context, p *diagnose.Part) (*collectors.Params, error) {
	resp, err := c.call(ctx, http.MethodPost, PathPrepare, wire(p))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rec record
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(&rec); err != nil || rec.Params == nil {
		return nil, fmt.Errorf("agent on node %s: prepare answered no parameters: %v", c.Node, err)
	}
	return rec.Params, nil
}

// Run implements diagnose.Site.
func (c *Client) Run(ctx context.Context, p *diagnose.Part) ([]collectors.Evidence, error) {
	resp, err := c.call(ctx, http.MethodPost, PathRun, wire(p))
	if err != nil {
		return nil, err
	}
	return c.read(resp, p)
}

// Watch implements diagnose.Site.
func (c *Client) Watch(ctx context.Context, p *diagnose.Part) (diagnose.Watching, error) {
	resp, err := c.call(ctx, http.MethodPost, PathWatch, wire(p))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rec record
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(&rec); err != nil || rec.Session == "" {
		return nil, fmt.Errorf("agent on node %s: watch answered no session: %v", c.Node, err)
	}
	return &remoteWatch{c: c, id: rec.Session, part: p}, nil
}

type remoteWatch struct {
	c    *Client
	id   string
	part *diagnose.Part
}

func (w *remoteWatch) Finish(ctx context.Context) ([]collectors.Evidence, error) {
	resp, err := w.c.call(ctx, http.MethodPost, PathWatch+"/"+w.id+"/finish", nil)
	if err != nil {
		if ctx.Err() != nil {
			// Do not leave the watch running until its deadline.
			actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if r, err := w.c.call(actx, http.MethodDelete, PathWatch+"/"+w.id, nil); err == nil {
				r.Body.Close()
			}
		}
		return nil, err
	}
	return w.c.read(resp, w.part)
}

// read reads a stream of evidence, writing each capture's pcap where the
// question asked for it (or into a new file of this machine's temp dir)
// and pointing the evidence at it.
func (c *Client) read(resp *http.Response, p *diagnose.Part) ([]collectors.Evidence, error) {
	defer resp.Body.Close()
	var evs []collectors.Evidence
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	err := readRecords(resp.Body, func(rec *record) error {
		switch {
		case rec.Evidence != nil:
			evs = append(evs, *rec.Evidence)
		case rec.Pcap != nil:
			key := string(rec.Pcap.Scope) + "/" + rec.Pcap.Label
			f := files[key]
			if f == nil {
				var err error
				if f, err = c.pcapFile(p, rec.Pcap.Scope); err != nil {
					return err
				}
				files[key] = f
				for i := range evs {
					if cr, ok := evs[i].Data.(*collectors.CaptureResult); ok && evs[i].Scope == rec.Pcap.Scope && evs[i].Label == rec.Pcap.Label {
						cr.File = f.Name()
					}
				}
			}
			if _, err := f.Write(rec.Pcap.Data); err != nil {
				return fmt.Errorf("pcap %s: %w", f.Name(), err)
			}
		}
		return nil
	})
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
			return evs, fmt.Errorf("%w: %w", ErrUnreachableNode(c.Node), err)
		}
		return evs, fmt.Errorf("agent on node %s: %w", c.Node, err)
	}
	return evs, nil
}

func (c *Client) pcapFile(p *diagnose.Part, s collectors.Scope) (*os.File, error) {
	if name := collectors.PcapFile(p.Params.Capture.File, s); name != "" {
		return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	return os.CreateTemp("", "netdiag-"+c.Node+"-"+string(s)+"-*.pcap")
}

// Runner runs plans through the agents of the nodes they span. Parts
// with no node (a namespace of this machine) run in Local, when set.
type Runner struct {
	// Site gives the agent of a node: found through the Kubernetes view
	// or given by address.
	Site  func(node string) (diagnose.Site, error)
	Local diagnose.Site
}

// Run implements diagnose.Runner.
func (r *Runner) Run(ctx context.Context, p *diagnose.Plan) ([]collectors.Evidence, error) {
	return diagnose.RunPlan(ctx, p, func(node string) (diagnose.Site, error) {
		if node == "" {
			if r.Local == nil {
				return nil, errors.New("a namespace of this machine is not reachable from here")
			}
			return r.Local, nil
		}
		return r.Site(node)
	})
}
