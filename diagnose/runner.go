package diagnose

import (
	"context"
	"fmt"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
)

// Runner runs a plan's collectors where the namespaces are: in this process
// (LocalRunner, for `netdiag diagnose` and the lab) or on a node's agent.
type Runner interface {
	Run(ctx context.Context, p *Plan) ([]collectors.Evidence, error)
}

// LocalRunner runs collectors in this process, entering the namespaces
// itself.
type LocalRunner struct{}

// Run opens the plan's namespaces and runs its jobs in parallel.
func (LocalRunner) Run(ctx context.Context, p *Plan) ([]collectors.Evidence, error) {
	t := &collectors.Target{}
	for _, x := range []struct {
		what, path string
		dst        **netns.NS
	}{{"source", p.Source, &t.Source}, {"peer", p.Peer, &t.Peer}, {"node", p.Node, &t.Node}, {"peer node", p.PeerNode, &t.PeerNode}} {
		if x.path == "" {
			continue
		}
		n, err := netns.Open(x.path)
		if err != nil {
			return nil, fmt.Errorf("%s namespace: %w", x.what, err)
		}
		defer n.Close()
		*x.dst = n
	}
	// Copies: preparing fills the parameters in, the plan stays as it was.
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
	if err := collectors.Prepare(t, &params, jobs); err != nil {
		return nil, err
	}
	return collectors.Run(ctx, t, jobs, &params), nil
}
