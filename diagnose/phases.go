package diagnose

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// Part is the share of a plan that runs on one node: the scopes that live
// there, their jobs, and the parameters, already prepared where the source
// is (the probes' flows with the source's own addresses, which the other
// nodes' firewall traces and drops watches need). Node is empty for the
// part this process runs itself. A part crosses to a node's agent as JSON.
type Part struct {
	Node   string                     `json:"node,omitempty"`
	Places map[collectors.Scope]Place `json:"places"`
	Jobs   []collectors.Job           `json:"jobs"`
	Params *collectors.Params         `json:"params"`
}

// HasSource reports whether the part holds the source: its probes run there.
func (p *Part) HasSource() bool {
	_, ok := p.Places[collectors.ScopeSource]
	return ok
}

// Site runs parts of plans on one node: this process (LocalSite), or the
// node's agent.
type Site interface {
	// Prepare fills, on the source's node, what the other parts need
	// from the source before the plan is split (collectors.Prepare).
	Prepare(ctx context.Context, p *Part) (*collectors.Params, error)
	// Run runs a whole part: its watches, then its probes, then the
	// watches end. The part holding the source runs this way.
	Run(ctx context.Context, p *Part) ([]collectors.Evidence, error)
	// Watch starts a part's watches (and its dumps) and returns once the
	// watches are bound, so that the source's probes are seen there.
	Watch(ctx context.Context, p *Part) (Watching, error)
}

// Watching is a part whose watches run on a node.
type Watching interface {
	// Finish ends the watches and returns the part's evidence.
	Finish(ctx context.Context) ([]collectors.Evidence, error)
}

// SiteFor gives the site of a node ("" for this process). An error says
// why the node cannot be reached; its jobs become evidence of that.
type SiteFor func(node string) (Site, error)

// Split cuts the plan into one part per node, the source's first. A part
// without the source gets its own drops watch when the plan has one: its
// node's kernel sees its own drops only.
func (p *Plan) Split() []*Part {
	byNode := map[string]*Part{}
	var parts []*Part
	for _, s := range collectors.Scopes {
		pl, ok := p.Places[s]
		if !ok {
			continue
		}
		pt := byNode[pl.Node]
		if pt == nil {
			pt = &Part{Node: pl.Node, Places: map[collectors.Scope]Place{}, Params: p.Params}
			byNode[pl.Node] = pt
			parts = append(parts, pt)
		}
		pt.Places[s] = pl
	}
	drops := slices.ContainsFunc(p.Jobs, func(j collectors.Job) bool { return j.Collector == "drops" })
	for _, j := range p.Jobs {
		if pt := byNode[p.Places[j.Scope].Node]; pt != nil {
			pt.Jobs = append(pt.Jobs, j)
		}
	}
	for _, pt := range parts {
		if drops && !pt.HasSource() {
			for _, s := range []collectors.Scope{collectors.ScopePeer, collectors.ScopePeerNode, collectors.ScopeNode} {
				if _, ok := pt.Places[s]; ok {
					pt.Jobs = append(pt.Jobs, collectors.Job{Collector: "drops", Scope: s})
					break
				}
			}
		}
	}
	slices.SortStableFunc(parts, func(a, b *Part) int {
		if a.HasSource() == b.HasSource() {
			return 0
		}
		if a.HasSource() {
			return -1
		}
		return 1
	})
	return parts
}

// RunPlan runs a plan in its phases on the sites of its nodes: prepare on
// the source's node, start the watches on every other node, run the
// source's part (its own watches, the probes), end the other watches, and
// merge. With one part (everything on one node, or in this process) it is
// one Run. A node that cannot be reached gives its jobs' evidence of that
// (agent-unreachable, naming the node) rather than an error: the other
// nodes' evidence is kept.
func RunPlan(ctx context.Context, p *Plan, siteFor SiteFor) ([]collectors.Evidence, error) {
	parts := p.Split()
	if len(parts) == 0 || !parts[0].HasSource() {
		return nil, fmt.Errorf("the plan has no source")
	}
	src := parts[0]
	site, err := siteFor(src.Node)
	if errors.Is(err, ErrDenied) {
		return nil, err
	}
	if err != nil {
		return unreachable(parts, err), nil
	}
	if len(parts) > 1 {
		params, err := site.Prepare(ctx, src)
		if err != nil {
			if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNotFound) {
				return unreachable(parts, err), nil
			}
			return nil, err
		}
		for _, pt := range parts {
			pt.Params, pt.Jobs = adopt(params, pt.Params, pt.Jobs)
		}
	}
	// The other nodes' watches first, all at once.
	others := parts[1:]
	watching := make([]Watching, len(others))
	failed := make([][]collectors.Evidence, len(others))
	var wg sync.WaitGroup
	for i, pt := range others {
		wg.Go(func() {
			s, err := siteFor(pt.Node)
			if err == nil {
				watching[i], err = s.Watch(ctx, pt)
			}
			if err != nil {
				failed[i] = jobsFailed(pt, err)
			}
		})
	}
	wg.Wait()
	evs, err := site.Run(ctx, src)
	if err != nil {
		evs = jobsFailed(src, err)
	}
	for i, w := range watching {
		if w == nil {
			continue
		}
		more, err := w.Finish(ctx)
		if err != nil {
			more = jobsFailed(others[i], err)
		}
		failed[i] = more
	}
	for _, f := range failed {
		evs = append(evs, f...)
	}
	// A node that refused the caller makes no finding: the caller is told.
	for _, e := range evs {
		if e.ErrorKind == collectors.KindDenied {
			return nil, fmt.Errorf("%s", e.Error)
		}
	}
	return mergeDrops(evs), nil
}

// ErrUnreachable marks an error of a node that did not answer.
var ErrUnreachable = errors.New("agent unreachable")

// ErrNotFound marks an error of a pod whose namespace is not on its node.
var ErrNotFound = errors.New("not found on the node")

// ErrDenied marks a node's refusal of the caller (not authenticated, or
// not allowed): no finding, the caller must be told.
var ErrDenied = errors.New("denied")

// adopt gives a part the prepared flows: the shared parameters and each
// job's own, copied so that the plan stays as it was.
func adopt(prepared, shared *collectors.Params, jobs []collectors.Job) (*collectors.Params, []collectors.Job) {
	take := func(q *collectors.Params) *collectors.Params {
		c := *q
		c.Flows, c.Prepared = prepared.Flows, true
		if c.ResolvConf == "" {
			c.ResolvConf = prepared.ResolvConf
		}
		if len(c.DNSServers) == 0 && slices.Equal(c.DNS, prepared.DNS) {
			c.DNSServers = prepared.DNSServers
		}
		return &c
	}
	out := take(shared)
	js := slices.Clone(jobs)
	for i, j := range js {
		if j.Params != nil {
			js[i].Params = take(j.Params)
		}
	}
	return out, js
}

// unreachable is the evidence of a plan whose source's node did not
// answer: the other nodes were not asked, since nothing was probed.
func unreachable(parts []*Part, err error) []collectors.Evidence {
	out := jobsFailed(parts[0], err)
	for _, pt := range parts[1:] {
		out = append(out, jobsFailed(pt, fmt.Errorf("not asked: the source's %s could not be reached", where(parts[0])))...)
	}
	return out
}

func where(pt *Part) string {
	if pt.Node == "" {
		return "namespace"
	}
	return "node " + pt.Node
}

// jobsFailed records each job of a part that could not run, with why.
func jobsFailed(pt *Part, err error) []collectors.Evidence {
	kind := collectors.KindFailed
	switch {
	case errors.Is(err, ErrUnreachable):
		kind = collectors.KindUnreachable
	case errors.Is(err, ErrNotFound):
		kind = collectors.KindNotFound
	case errors.Is(err, ErrDenied):
		kind = collectors.KindDenied
	case errors.Is(err, context.Canceled):
		kind = collectors.KindCancelled
	case errors.Is(err, context.DeadlineExceeded):
		kind = collectors.KindTimeout
	}
	// Name the node, unless the error already does.
	if !strings.Contains(err.Error(), where(pt)) {
		err = fmt.Errorf("%s: %w", where(pt), err)
	}
	out := make([]collectors.Evidence, 0, len(pt.Jobs))
	for _, j := range pt.Jobs {
		out = append(out, collectors.JobFailed(j, kind, err))
	}
	return out
}

// mergeDrops joins the drops watches of several nodes into one, in the
// source's scope where the rules read it.
func mergeDrops(evs []collectors.Evidence) []collectors.Evidence {
	var at []int
	var results []*collectors.DropsResult
	for i, ev := range evs {
		if ev.Collector != "drops" {
			continue
		}
		at = append(at, i)
		if d, ok := ev.Data.(*collectors.DropsResult); ok && ev.Usable() {
			results = append(results, d)
		}
	}
	if len(at) < 2 {
		return evs
	}
	// The base is the first watch that saw anything; the others fold in.
	base := at[0]
	for _, i := range at {
		if evs[i].Usable() {
			base = i
			break
		}
	}
	merged := evs[base]
	merged.Scope = collectors.ScopeSource
	if len(results) > 1 {
		merged.Data = drops.Merge(results...)
	}
	out := make([]collectors.Evidence, 0, len(evs)-len(at)+1)
	for i, ev := range evs {
		switch {
		case i == at[0]:
			out = append(out, merged)
		case ev.Collector != "drops":
			out = append(out, ev)
		}
	}
	return out
}
