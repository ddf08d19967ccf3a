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
	params := *p.Params
	if err := params.Prepare(t); err != nil {
		return nil, err
	}
	jobs := make([]collectors.Job, 0, len(p.Jobs))
	for _, j := range p.Jobs {
		if j.Params != nil {
			jp := *j.Params
			jp.Src, jp.DNSServers, jp.ResolvConf = params.Src, params.DNSServers, params.ResolvConf
			j.Params = &jp
		}
		jobs = append(jobs, j)
	}
	return collectors.Run(ctx, t, jobs, &params), nil
}
