package diagnose

import (
	"context"
	"fmt"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
)

// Runner runs a plan's collectors where the namespaces are: in this process
// (LocalRunner, for `netdiag diagnose` and the lab) or on the nodes' agents.
type Runner interface {
	Run(ctx context.Context, p *Plan) ([]collectors.Evidence, error)
}

// LocalRunner runs every part of a plan in this process, entering the
// namespaces itself: the places must name namespaces it can open.
type LocalRunner struct{}

// Run runs the plan's phases with this process as every node's site.
func (LocalRunner) Run(ctx context.Context, p *Plan) ([]collectors.Evidence, error) {
	site := &LocalSite{}
	return RunPlan(ctx, p, func(string) (Site, error) { return site, nil })
}

// LocalSite runs parts in this process. Find turns a place into the path
// of its namespace (the agent finds a pod's through the container runtime);
// without it, a place must carry its namespace path.
type LocalSite struct {
	Find func(ctx context.Context, s collectors.Scope, pl Place) (string, error)
}

// Prepare fills the source's parameters (see collectors.Prepare).
func (l *LocalSite) Prepare(ctx context.Context, p *Part) (*collectors.Params, error) {
	t, err := l.open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer closeTarget(t)
	params, jobs := clonePart(p)
	if err := collectors.Prepare(t, params, jobs); err != nil {
		return nil, err
	}
	return params, nil
}

// Run runs the whole part.
func (l *LocalSite) Run(ctx context.Context, p *Part) ([]collectors.Evidence, error) {
	t, err := l.open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer closeTarget(t)
	params, jobs := clonePart(p)
	if t.Source != nil && !params.Prepared {
		if err := collectors.Prepare(t, params, jobs); err != nil {
			return nil, err
		}
	}
	return collectors.Run(ctx, t, jobs, params), nil
}

// Watch starts the part's watches and dumps; ctx bounds them until Finish.
func (l *LocalSite) Watch(ctx context.Context, p *Part) (Watching, error) {
	t, err := l.open(ctx, p)
	if err != nil {
		return nil, err
	}
	params, jobs := clonePart(p)
	return &localWatch{t: t, s: collectors.Start(ctx, t, jobs, params)}, nil
}

type localWatch struct {
	t *collectors.Target
	s *collectors.Session
}

func (w *localWatch) Finish(context.Context) ([]collectors.Evidence, error) {
	defer closeTarget(w.t)
	return w.s.Finish(), nil
}

// open opens the part's namespaces.
func (l *LocalSite) open(ctx context.Context, p *Part) (*collectors.Target, error) {
	t := &collectors.Target{}
	for _, s := range collectors.Scopes {
		pl, ok := p.Places[s]
		if !ok {
			continue
		}
		path := pl.Netns
		if l.Find != nil {
			var err error
			if path, err = l.Find(ctx, s, pl); err != nil {
				closeTarget(t)
				return nil, fmt.Errorf("%s (%s): %w", s, pl, err)
			}
		}
		if path == "" {
			closeTarget(t)
			return nil, fmt.Errorf("%s is %s: this process cannot find its namespace (give a namespace path, or run through the node's agent)", s, pl)
		}
		n, err := netns.Open(path)
		if err != nil {
			closeTarget(t)
			return nil, fmt.Errorf("%s namespace: %w", s, err)
		}
		*t.Slot(s) = n
	}
	return t, nil
}

func closeTarget(t *collectors.Target) {
	for _, s := range collectors.Scopes {
		if n := *t.Slot(s); n != nil {
			n.Close()
		}
	}
}

// clonePart copies a part's parameters, the shared ones and each job's
// own: preparing fills them in, the plan stays as it was.
func clonePart(p *Part) (*collectors.Params, []collectors.Job) {
	params := *p.Params
	jobs := make([]collectors.Job, 0, len(p.Jobs))
	copies := map[*collectors.Params]*collectors.Params{}
	for _, j := range p.Jobs {
		if j.Params != nil {
			if copies[j.Params] == nil {
				jp := *j.Params
				copies[j.Params] = &jp
			}
			j.Params = copies[j.Params]
		}
		jobs = append(jobs, j)
	}
	return &params, jobs
}
