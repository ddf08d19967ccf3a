package diagnose

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Place is where one scope of a question lives: on which node, and the pod
// or node it is about. A plan names places, not namespace paths, because
// only the process on that node can find the namespace: the node's agent
// finds a pod's through the container runtime, its cgroup or its IP.
//
// Netns is a namespace this process opens itself (a path or a name under
// /run/netns): the lab's namespaces, a bare namespace given with --netns.
// An agent never takes one from a caller.
type Place struct {
	// Node is the Kubernetes node; empty for a namespace of this machine
	// that no agent needs to find.
	Node string `json:"node,omitempty"`
	// Pod is the pod whose namespace it is; nil for the node's own
	// namespace (a node, or a pod on the host network).
	Pod   *Pod   `json:"pod,omitempty"`
	Netns string `json:"netns,omitempty"`
}

// Pod names a pod the way its node finds it.
type Pod struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	UID       string     `json:"uid,omitempty"`
	IP        netip.Addr `json:"ip,omitzero"`
}

// Key is NS/NAME.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// IsZero reports whether the place is not given.
func (p Place) IsZero() bool { return p.Node == "" && p.Pod == nil && p.Netns == "" }

// Same reports whether two places are one network namespace: a node and a
// pod on its host network, a node asked about itself.
func (p Place) Same(q Place) bool {
	if p.IsZero() || q.IsZero() {
		return false
	}
	if p.Netns != "" || q.Netns != "" {
		return p.Netns == q.Netns
	}
	if p.Node != q.Node {
		return false
	}
	if p.Pod == nil || q.Pod == nil {
		return p.Pod == nil && q.Pod == nil
	}
	return p.Pod.Namespace == q.Pod.Namespace && p.Pod.Name == q.Pod.Name
}

// String names the place in the users' words.
func (p Place) String() string {
	var parts []string
	switch {
	case p.Pod != nil:
		parts = append(parts, "pod "+p.Pod.Key())
		if p.Node != "" {
			parts = append(parts, "on node "+p.Node)
		}
	case p.Node != "":
		parts = append(parts, "node "+p.Node)
	}
	if p.Netns != "" {
		if len(parts) == 0 {
			return p.Netns
		}
		parts = append(parts, "("+p.Netns+")")
	}
	return strings.Join(parts, " ")
}

// Validate checks a place before anything runs: Kubernetes names where
// they are names, an address that is an address.
func (p Place) Validate(what string) error {
	if p.Node != "" {
		if errs := validation.IsDNS1123Subdomain(p.Node); len(errs) > 0 {
			return fmt.Errorf("%s: node name %q: %s", what, p.Node, errs[0])
		}
	}
	if p.Pod != nil {
		if errs := validation.IsDNS1123Label(p.Pod.Namespace); len(errs) > 0 {
			return fmt.Errorf("%s: namespace %q: %s", what, p.Pod.Namespace, errs[0])
		}
		if errs := validation.IsDNS1123Subdomain(p.Pod.Name); len(errs) > 0 {
			return fmt.Errorf("%s: pod name %q: %s", what, p.Pod.Name, errs[0])
		}
		if len(p.Pod.UID) > 64 || strings.ContainsAny(p.Pod.UID, "/\x00 ") {
			return fmt.Errorf("%s: pod UID %q: a UID is at most 64 characters, without '/' or spaces", what, p.Pod.UID)
		}
	}
	return nil
}

// NetnsPlace is a namespace this process opens itself, by path or name.
func NetnsPlace(path string) Place { return Place{Netns: path} }
