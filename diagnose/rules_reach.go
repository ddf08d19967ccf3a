package diagnose

import (
	"fmt"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// The inconclusive causes of a run that could not reach everything: a node
// whose agent did not answer (itself a signal: the node may be down, or
// its network), a pod that is not where the cluster says it runs.

// sourceSide are the scopes without which nothing was probed.
var sourceSide = []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode}

func ruleSourceMissing(f *facts) outcome {
	why, ok := f.missing[collectors.ScopeSource]
	if !ok {
		return notApplicable
	}
	return concluded(&match{confidence: 0.9,
		summary:  fmt.Sprintf("The pod's network namespace was not found on its node: %s.", why),
		evidence: []Observation{obs("agent", "%s", why)},
		next: []string{
			"Check that the pod still runs there: kubectl get pod -o wide (it may have been deleted, rescheduled, or be in CrashLoopBackOff with no sandbox).",
			"Run again once the pod is Running; if it is Running and still not found, the agent's container runtime socket may be wrong (see the agent's log).",
		}})
}

func ruleSourceUnreached(f *facts) outcome {
	var why []string
	for _, s := range sourceSide {
		if w, ok := f.unreached[s]; ok && !slices.Contains(why, w) {
			why = append(why, w)
		}
	}
	if len(why) == 0 {
		return notApplicable
	}
	return concluded(unreachedMatch(0.9, "Nothing could be probed: the agent on the source's node did not answer", why))
}

func rulePeerUnreached(f *facts) outcome {
	var why []string
	for _, s := range []collectors.Scope{collectors.ScopePeer, collectors.ScopePeerNode} {
		if w, ok := f.unreached[s]; ok && !slices.Contains(why, w) {
			why = append(why, w)
		}
	}
	if len(why) == 0 {
		return notApplicable
	}
	head := "The probes found no cause, but the destination's node could not be read: its agent did not answer"
	if bad, _ := f.failing(); bad {
		head = "Probes failed, and the destination's node, where the cause may be, could not be read: its agent did not answer"
	}
	return concluded(unreachedMatch(0.6, head, why))
}

func unreachedMatch(conf float64, head string, why []string) *match {
	m := &match{confidence: conf, summary: head + " (" + strings.Join(why, "; ") + ")."}
	for _, w := range why {
		m.evidence = append(m.evidence, obs("agent", "%s", w))
	}
	m.next = []string{
		"Check the node and its agent: kubectl get node; kubectl -n NETDIAG_NAMESPACE get pods -l app.kubernetes.io/name=netdiag-agent -o wide --field-selector spec.nodeName=NODE.",
		"An agent that is Running but does not answer points at the node's own network (the seeds: a host firewall, a NIC on the wrong address).",
	}
	return m
}
