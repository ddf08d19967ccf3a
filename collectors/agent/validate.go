package agent

import (
	"fmt"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// maxJobs bounds a part: a full plan has about forty.
const maxJobs = 128

// checkPart refuses, before anything runs, a part that is not for this
// node or asks for more than a caller may: the agent opens no path a caller
// names (it finds namespaces itself), reads no file a caller names (the
// pod's own resolv.conf), and writes the pcap where it chooses.
func checkPart(p *diagnose.Part, node string) error {
	if p.Node != node {
		return fmt.Errorf("the part is for node %q; this agent runs on node %q", p.Node, node)
	}
	if len(p.Places) == 0 {
		return fmt.Errorf("the part names no place (accepted: the pod on this node, or the node itself)")
	}
	for s, pl := range p.Places {
		if !isScope(s) {
			return fmt.Errorf("unknown scope %q (accepted: source, peer, node, peer-node)", s)
		}
		if pl.Netns != "" {
			return fmt.Errorf("%s: the agent takes no namespace path (%q); name the pod (namespace, name, UID, IP) or the node", s, pl.Netns)
		}
		if pl.Node != node {
			return fmt.Errorf("%s is %s, not on this node %q", s, pl, node)
		}
		if err := pl.Validate(string(s)); err != nil {
			return err
		}
	}
	if len(p.Jobs) == 0 || len(p.Jobs) > maxJobs {
		return fmt.Errorf("%d jobs: accepted 1 to %d", len(p.Jobs), maxJobs)
	}
	if err := checkParams(p.Params); err != nil {
		return err
	}
	for _, j := range p.Jobs {
		if err := collectors.Lookup(j.Collector); err != nil {
			return err
		}
		if _, ok := p.Places[j.Scope]; !ok {
			return fmt.Errorf("job %s in scope %q, which the part does not place", j.Collector, j.Scope)
		}
		if len(j.Label) > 32 {
			return fmt.Errorf("job %s: a label is at most 32 characters", j.Collector)
		}
		if j.Params != nil {
			if err := checkParams(j.Params); err != nil {
				return fmt.Errorf("job %s: %w", j.Collector, err)
			}
		}
	}
	return nil
}

func checkParams(p *collectors.Params) error {
	if p == nil {
		return fmt.Errorf("the part has no parameters")
	}
	if p.ResolvConf != "" {
		return fmt.Errorf("resolv.conf %q: the agent reads the pod's own; give none", p.ResolvConf)
	}
	if p.Capture.File != "" {
		return fmt.Errorf("pcap file %q: the agent streams the pcap back; give none", p.Capture.File)
	}
	return p.Validate()
}

func isScope(s collectors.Scope) bool {
	for _, x := range collectors.Scopes {
		if x == s {
			return true
		}
	}
	return false
}
