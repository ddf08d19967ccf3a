package collectors

import (
	"context"
	"time"

	"github.com/netdiag/netdiag/collectors/drops"
)

// DropsResult is the drops collector's evidence: the kernel's drops of the
// probes' own packets, with reason, kernel function, device and namespace.
type DropsResult = drops.Result

// DefaultDropsWatch is how long the drops collector watches when it runs on
// its own (no probes to wrap), e.g. while someone reproduces by hand.
const DefaultDropsWatch = 5 * time.Second

func init() {
	registerWatch(spec{name: "drops", help: "the kernel's reasons for dropping the probes' packets (skb:kfree_skb through eBPF, else tracefs): NETFILTER_DROP, NO_SOCKET, IP_RPFILTER, PKT_TOO_BIG... with the kernel function, device and namespace",
		scopes: []Scope{ScopeSource}, timeout: DefaultDropsWatch + 5*time.Second}, collectDrops,
		func(_ context.Context, in Input, t *Target) (func() (*DropsResult, error), error) {
			tr := startDropsFor(t, in.Params)
			return func() (*DropsResult, error) { return tr.Stop(), nil }, nil
		})
}

// collectDrops watches on its own for the capture duration (or
// DefaultDropsWatch); inside Run it wraps the probes instead.
func collectDrops(ctx context.Context, in Input) (*DropsResult, error) {
	tr := startDropsFor(&Target{Source: in.NS}, in.Params)
	d := in.Capture.Duration
	if d <= 0 {
		d = DefaultDropsWatch
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return tr.Stop(), nil
}

// startDropsFor watches the target's namespaces for drops of every flow the
// run will probe (Prepare gathered them from every job, a probe straight to
// a Service's backend included).
func startDropsFor(t *Target, p *Params) *drops.Tracer {
	names := map[uint64]string{}
	for _, s := range []Scope{ScopePeerNode, ScopePeer, ScopeNode, ScopeSource} {
		if n := t.ns(s); n != nil {
			names[n.Inode()] = string(s)
		}
	}
	seen := map[drops.Flow]bool{}
	var flows []drops.Flow
	for _, f := range p.Flows {
		df := drops.Flow{Proto: f.Proto, Src: f.Src, Dst: f.Dst, DPort: f.DPort}
		if f.Src.IsValid() && f.Dst.IsValid() && !seen[df] {
			seen[df] = true
			flows = append(flows, df)
		}
	}
	// Without the destination's namespace its drops, which tell the causes
	// apart, are found by the flows alone in every namespace of the node.
	return drops.Start(flows, names, drops.Options{Method: p.DropsMethod, AnyNamespace: t.Peer == nil})
}
