// Package kubediag answers the bot's questions on a Kubernetes cluster: the
// cluster view resolves the target, and the node agents run the parts of
// the diagnosis on the nodes involved, with the bot's own ServiceAccount
// token, so RBAC decides what the bot may diagnose.
package kubediag

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/collectors/agent/remote"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/kubeview"
)

// Diagnoser diagnoses cluster targets through the node agents.
type Diagnoser struct {
	View   *kubeview.View
	Caller *remote.Caller
	// PcapDir is where captures land before the bot stores them.
	PcapDir string
	Log     *slog.Logger
}

// Runner carries plans to the agent of each node, found through the view.
func Runner(ctx context.Context, view *kubeview.View, caller *remote.Caller) *agent.Runner {
	return &agent.Runner{Site: func(node string) (diagnose.Site, error) {
		pod, err := view.Agent(node)
		if err != nil {
			return nil, fmt.Errorf("%v (%w)", err, agent.ErrUnreachableNode(node))
		}
		ip := netip.Addr{}
		if len(pod.IPs) > 0 {
			ip = pod.IPs[0]
		}
		return caller.Site(ctx, node, pod.Namespace, pod.Name, ip)
	}}
}

// Diagnose answers q on the cluster.
func (d *Diagnoser) Diagnose(ctx context.Context, q bot.Question, progress func(string)) (*bot.Answer, error) {
	progress("resolving " + q.Target())
	res, err := d.View.Resolve(kubeview.Question{Kind: q.Kind, Namespace: q.Namespace, Name: q.Name, To: q.To, DNS: q.DNS})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bot.ErrQuestion, err)
	}
	req := res.Request()
	run := Runner(ctx, d.View, d.Caller)
	if err := diagnose.ResolveTo(ctx, run, req); err != nil {
		return nil, fmt.Errorf("%w: to %s: %v", bot.ErrQuestion, q.To, err)
	}
	return bot.RunRequest(ctx, req, q, run, d.PcapDir, d.Log, progress)
}

// Check resolves the question from the informers' caches, without asking
// any node (a name in --to is resolved by the diagnosis, from the pod).
func (d *Diagnoser) Check(ctx context.Context, q bot.Question) error {
	if _, err := d.View.Resolve(kubeview.Question{Kind: q.Kind, Namespace: q.Namespace, Name: q.Name, To: q.To, DNS: q.DNS}); err != nil {
		return fmt.Errorf("%w: %v", bot.ErrQuestion, err)
	}
	return nil
}
