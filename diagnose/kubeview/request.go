package kubeview

import "github.com/netdiag/netdiag/diagnose"

// Request is the diagnosis request of a resolved question: each end placed
// on its node, the node of each end, what to probe, and the cluster's
// facts and static checks for the rules and the finding.
func (r *Resolved) Request() *diagnose.Request {
	req := &diagnose.Request{Question: r.Question, Source: r.Source.Place(), To: r.To, AltTo: r.AltTo, DNS: r.DNS, Cluster: r.Cluster}
	if r.Source.Node != "" {
		req.Node = NodePlace(r.Source.Node)
	}
	if r.Dest != nil {
		req.Peer = r.Dest.Place()
		if r.Dest.Node != "" {
			req.PeerNode = NodePlace(r.Dest.Node)
		}
	}
	if req.Cluster != nil {
		req.Cluster.Checks = req.Cluster.Checks[:0]
		for _, c := range r.Checks {
			req.Cluster.Checks = append(req.Cluster.Checks, diagnose.ClusterCheck{Name: c.Name, Result: string(c.Result), Subject: c.Subject, Message: c.Message, Verdict: c.Verdict})
		}
	}
	return req
}
