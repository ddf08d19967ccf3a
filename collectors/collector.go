// Package collectors are netdiag's hands: what an engineer runs by hand on a
// node (ip link/route/neigh, sysctl, iptables-save, nft, ipvsadm, ss, cat
// resolv.conf, ping, paping, dig, tracepath, mtr, tcpdump), done natively
// inside a network namespace, in parallel, each bounded by a deadline, each
// returning typed evidence that serialises to JSON.
//
// One file per collector; each registers itself under the name users select it
// by (`netdiag collect --collector NAME`). The Runner runs a set of them on a
// Target and returns one Evidence per collector and namespace.
package collectors

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
)

// Scope says which namespace of a Target a piece of evidence comes from.
type Scope string

const (
	// ScopeSource is the pod that has the problem; probes start here.
	ScopeSource Scope = "source"
	// ScopePeer is the destination side (its listeners and firewall).
	ScopePeer Scope = "peer"
	// ScopeNode is the source's node (routes, NAT rules, the overlay).
	ScopeNode Scope = "node"
	// ScopePeerNode is the destination's node, when it is another node:
	// what arrives there over the overlay, and its firewall.
	ScopePeerNode Scope = "peer-node"
)

// Scopes are every scope, in the order a packet crosses them.
var Scopes = []Scope{ScopeSource, ScopeNode, ScopePeerNode, ScopePeer}

// Input is what one collector run gets: the namespace it runs in and the
// question being asked.
type Input struct {
	NS    *netns.NS
	Scope Scope
	*Params
}

// spec is what a collector declares about itself when it registers.
type spec struct {
	name string
	help string
	// scopes are where it makes sense to run; defaults where a plan runs
	// it unless told otherwise (nil: every scope it makes sense in).
	scopes, defaults []Scope
	probe            bool // sends traffic: runs inside the capture window
	timeout          time.Duration
	// needs says what the question lacks for it to run, nil when it can.
	needs func(p *Params) error
}

// collector is one registered collector.
type collector struct {
	spec
	run     func(ctx context.Context, in Input) (any, error)
	newData func() any
	// watch, for a collector that runs around the probes (a capture, the
	// drops watch), starts it; Run calls end once the probes are done.
	watch func(ctx context.Context, in Input, t *Target) (end func() (any, error), err error)
}

var registry = map[string]*collector{}

// register adds a collector. T is its evidence type, which is also what its
// JSON decodes back into on the other side of a process boundary.
func register[T any](s spec, fn func(ctx context.Context, in Input) (*T, error)) {
	if _, dup := registry[s.name]; dup {
		panic("collectors: duplicate collector " + s.name)
	}
	if s.defaults == nil {
		s.defaults = s.scopes
	}
	registry[s.name] = &collector{
		spec:    s,
		run:     func(ctx context.Context, in Input) (any, error) { return untyped(fn(ctx, in)) },
		newData: func() any { return new(T) },
	}
}

// registerWatch adds a collector that, inside Run, is started before the
// probes and ended after them; run is what it does on its own (RunOne).
// Its deadline on its own stretches with the capture duration.
func registerWatch[T any](s spec, run func(ctx context.Context, in Input) (*T, error),
	start func(ctx context.Context, in Input, t *Target) (end func() (*T, error), err error)) {
	register(s, run)
	registry[s.name].watch = func(ctx context.Context, in Input, t *Target) (func() (any, error), error) {
		end, err := start(ctx, in, t)
		if err != nil {
			return nil, err
		}
		return func() (any, error) { return untyped(end()) }, nil
	}
}

// untyped keeps a nil result nil as an any (not a typed nil pointer).
func untyped[T any](d *T, err error) (any, error) {
	if d == nil {
		return nil, err
	}
	return d, err
}

// Info describes a collector for --help and listings.
type Info struct {
	Name     string  `json:"name"`
	Help     string  `json:"help"`
	Scopes   []Scope `json:"scopes"`
	Defaults []Scope `json:"defaults"`
	Probe    bool    `json:"probe"`
}

// List returns every collector, by name.
func List() []Info {
	var out []Info
	for _, c := range registry {
		out = append(out, Info{Name: c.name, Help: c.help, Scopes: c.scopes, Defaults: c.defaults, Probe: c.probe})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns every collector name, sorted.
func Names() []string {
	var out []string
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Lookup checks collector names and says which are accepted.
func Lookup(names ...string) error {
	for _, n := range names {
		if _, ok := registry[n]; !ok {
			return fmt.Errorf("unknown collector %q (accepted: %s)", n, strings.Join(Names(), ", "))
		}
	}
	return nil
}

// IsProbe reports whether a collector sends traffic.
func IsProbe(name string) bool {
	c, ok := registry[name]
	return ok && c.probe
}

// IsWatch reports whether a collector runs around the probes (capture, drops).
func IsWatch(name string) bool {
	c, ok := registry[name]
	return ok && c.watch != nil
}

// Needs says what the question lacks for the collector to run ("collector
// tcp needs --to HOST:PORT"), or nil.
func Needs(name string, p *Params) error {
	c, ok := registry[name]
	if !ok {
		return Lookup(name)
	}
	if c.needs == nil {
		return nil
	}
	if err := c.needs(p); err != nil {
		return fmt.Errorf("collector %s needs %w", name, err)
	}
	return nil
}

// DefaultJobs are the collectors that apply to a question, in every scope
// present where each runs by default: the dumps always, each probe when the
// question gives it something to probe, the capture when asked for, and the
// drops watch around any probe when drops is true. `netdiag collect`
// without --collector and a diagnosis plan both start from this list.
func DefaultJobs(present []Scope, p *Params, drops bool) []Job {
	var jobs []Job
	probes := false
	for _, name := range Names() {
		c := registry[name]
		if name == "drops" || Needs(name, p) != nil {
			continue
		}
		for _, s := range c.defaults {
			if slices.Contains(present, s) {
				jobs = append(jobs, Job{Collector: name, Scope: s})
				probes = probes || c.probe
			}
		}
	}
	if drops && probes {
		jobs = append(jobs, Job{Collector: "drops", Scope: ScopeSource})
	}
	return jobs
}

// Evidence is one collector's result in one namespace.
type Evidence struct {
	Collector string `json:"collector"`
	Scope     Scope  `json:"scope"`
	// Label tells apart runs of one collector with different questions
	// (e.g. "endpoint" for a TCP probe straight to a Service's pod).
	Label      string    `json:"label,omitempty"`
	Netns      string    `json:"netns"`
	Started    time.Time `json:"started"`
	DurationMS float64   `json:"duration_ms"`
	// Status says how far the collector got; ErrorKind why it stopped.
	Status    Status    `json:"status"`
	ErrorKind ErrorKind `json:"error_kind,omitempty"`
	Error     string    `json:"error,omitempty"`
	Data      any       `json:"data,omitempty"`
}

// State is the evidence's status, derived from its data and error when it
// was built without one.
func (e *Evidence) State() Status {
	if e.Status != "" {
		return e.Status
	}
	s, _ := statusOf(e.Data != nil, errorOrNil(e.Error))
	return s
}

// Usable reports whether the evidence holds data the rules may read.
func (e *Evidence) Usable() bool {
	return e.Data != nil && e.State() != StatusFailed
}

// setResult records a collector's outcome: its data, and its error turned
// into a status and an error kind.
func (e *Evidence) setResult(data any, err error) {
	if data != nil {
		e.Data = data
	}
	e.Status, e.ErrorKind = statusOf(data != nil, err)
	if err != nil {
		e.Error = err.Error()
	}
}

// UnmarshalJSON decodes Data into the collector's own evidence type, so that
// evidence read from an agent is as typed as evidence collected in process.
func (e *Evidence) UnmarshalJSON(b []byte) error {
	type plain Evidence
	var raw struct {
		plain
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*e = Evidence(raw.plain)
	if len(raw.Data) == 0 || string(raw.Data) == "null" {
		e.Status = e.State()
		return nil
	}
	defer func() { e.Status = e.State() }()
	c, ok := registry[e.Collector]
	if !ok {
		var v any
		if err := json.Unmarshal(raw.Data, &v); err != nil {
			return err
		}
		e.Data = v
		return nil
	}
	d := c.newData()
	if err := json.Unmarshal(raw.Data, d); err != nil {
		return fmt.Errorf("decode %s evidence: %w", e.Collector, err)
	}
	e.Data = d
	return nil
}

// Job is one collector to run in one namespace of a target.
type Job struct {
	Collector string `json:"collector"`
	Scope     Scope  `json:"scope"`
	Label     string `json:"label,omitempty"`
	// Params, when set, replace the run's shared parameters for this job.
	Params *Params `json:"params,omitempty"`
}

// Target is where collectors run: the source pod's namespace and, when known,
// the destination's and the node's.
type Target struct {
	Source   *netns.NS
	Peer     *netns.NS
	Node     *netns.NS
	PeerNode *netns.NS
}

func (t *Target) ns(s Scope) *netns.NS {
	if p := t.Slot(s); p != nil {
		return *p
	}
	return nil
}

// Slot is where the target keeps the namespace of a scope (nil for an
// unknown scope).
func (t *Target) Slot(s Scope) **netns.NS {
	switch s {
	case ScopeSource:
		return &t.Source
	case ScopePeer:
		return &t.Peer
	case ScopeNode:
		return &t.Node
	case ScopePeerNode:
		return &t.PeerNode
	}
	return nil
}

// Present lists the scopes the target has a namespace for.
func (t *Target) Present() []Scope {
	var out []Scope
	for _, s := range Scopes {
		if t.ns(s) != nil {
			out = append(out, s)
		}
	}
	return out
}

// Jobs expands collector names to every scope of the target where each makes
// sense. Probes run only from the source.
func (t *Target) Jobs(names ...string) []Job {
	var jobs []Job
	for _, n := range names {
		c, ok := registry[n]
		if !ok {
			continue
		}
		for _, s := range c.scopes {
			if t.ns(s) != nil {
				jobs = append(jobs, Job{Collector: n, Scope: s})
			}
		}
	}
	return jobs
}

// RunOne runs one collector in one namespace, bounded by the collector's own
// deadline (or the context's, if sooner). Failures are evidence too: they are
// recorded in Status, ErrorKind and Error, never lost.
func RunOne(ctx context.Context, ns *netns.NS, scope Scope, name string, p *Params) Evidence {
	ev := Evidence{Collector: name, Scope: scope, Started: time.Now().UTC()}
	if ns != nil {
		ev.Netns = ns.Path()
	}
	c, ok := registry[name]
	if !ok {
		ev.setResult(nil, badInput(fmt.Errorf("unknown collector %q", name)))
		return ev
	}
	if ns == nil {
		ev.setResult(nil, noNamespace(scope))
		return ev
	}
	if p == nil {
		p = &Params{}
	}
	if !p.Prepared && scope == ScopeSource {
		// A collector run on its own still traces the flows it is asked
		// about from the namespace's own addresses.
		q := *p
		if err := Prepare(&Target{Source: ns}, &q, nil); err == nil {
			p = &q
		}
	}
	timeout := c.timeout
	if c.watch != nil && p.Capture.Duration > 0 {
		timeout = p.Capture.Duration + 5*time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	data, err := safeRun(cctx, c, Input{NS: ns, Scope: scope, Params: p})
	ev.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	ev.setResult(data, err)
	return ev
}

// safeRun turns a collector's panic into an error: one broken parser must not
// take down the agent or lose the other collectors' evidence.
func safeRun(ctx context.Context, c *collector, in Input) (data any, err error) {
	defer Recover("collector "+c.name, &err)
	return c.run(ctx, in)
}

func (j Job) params(shared *Params) *Params {
	if j.Params != nil {
		return j.Params
	}
	return shared
}

// Find returns the first evidence of a collector in a scope, typed.
func Find[T any](evs []Evidence, name string, scope Scope) (*T, *Evidence) {
	return FindLabel[T](evs, name, scope, "")
}

// FindLabel returns the evidence of a labelled run, typed.
func FindLabel[T any](evs []Evidence, name string, scope Scope, label string) (*T, *Evidence) {
	i := slices.IndexFunc(evs, func(e Evidence) bool { return e.Collector == name && e.Scope == scope && e.Label == label })
	if i < 0 {
		return nil, nil
	}
	d, _ := evs[i].Data.(*T)
	return d, &evs[i]
}
