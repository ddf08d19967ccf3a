package kubeview

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/cache"
)

// Accepted forms, for error messages.
const (
	TargetForms = "pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME"
	ToForms     = "pod/NAMESPACE/NAME[:PORT], svc/NAMESPACE/NAME:PORT, node/NAME[:PORT], IP[:PORT], [IPv6]:PORT or NAME:PORT (a PORT is a number or a port's name)"

	namespaceRule = "a namespace is at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	podRule       = "a pod name is at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
	svcRule       = "a Service name is at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
	nodeRule      = "a node name is at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
)

// splitNamespaced reads "NAMESPACE/NAME".
func splitNamespaced(kind, s string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("bad %s %q: give NAMESPACE/NAME, e.g. %s default/web (accepted: %s)", kind, s, kind, TargetForms)
	}
	return ns, name, nil
}

// validNamespaced checks a namespace and a name before any lookup, so a
// typo gets the rule rather than "not found".
func validNamespaced(kind, ns, name string) error {
	if ns == "" || name == "" {
		return fmt.Errorf("bad %s %q: give NAMESPACE/NAME, e.g. %s default/web (accepted: %s)", kind, ns+"/"+name, kind, TargetForms)
	}
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return fmt.Errorf("bad namespace %q in %s %s/%s: %s", ns, kind, ns, name, namespaceRule)
	}
	switch kind {
	case "svc":
		if len(validation.IsDNS1035Label(name)) > 0 {
			return fmt.Errorf("bad Service name %q in svc %s/%s: %s", name, ns, name, svcRule)
		}
	default:
		if len(validation.IsDNS1123Subdomain(name)) > 0 {
			return fmt.Errorf("bad pod name %q in pod %s/%s: %s", name, ns, name, podRule)
		}
	}
	return nil
}

func validNodeName(name string) error {
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return fmt.Errorf("bad node name %q: %s", name, nodeRule)
	}
	return nil
}

// parsePort reads a port given as a number or as a port's name.
func parsePort(s, to string) (num int, name string, err error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			return 0, "", fmt.Errorf("bad port %q in --to %s: a port is a number from 1 to 65535 or a port's name (accepted: %s)", s, to, ToForms)
		}
		return n, "", nil
	}
	if len(validation.IsValidPortName(s)) > 0 {
		return 0, "", fmt.Errorf("bad port %q in --to %s: a port is a number from 1 to 65535 or a port's name of at most 15 lowercase letters, digits and '-' (accepted: %s)", s, to, ToForms)
	}
	return 0, s, nil
}

func (v *View) podNotFound(ns, name string) error {
	objs, _ := v.pods.Pods(ns).List(labels.Everything())
	var names []string
	for _, p := range objs {
		names = append(names, p.Name)
	}
	return v.notFound("pod", ns, name, names, v.podIdx)
}

func (v *View) serviceNotFound(ns, name string) error {
	objs, _ := v.services.Services(ns).List(labels.Everything())
	var names []string
	for _, s := range objs {
		names = append(names, s.Name)
	}
	return v.notFound("svc", ns, name, names, v.svcIdx)
}

// notFound says what there is instead: the namespace's nearest names,
// the namespaces where the name exists, or the namespaces there are.
func (v *View) notFound(kind, ns, name string, names []string, idx cache.Indexer) error {
	plural := map[string]string{"pod": "pods", "svc": "Services"}[kind]
	var hints []string
	if len(names) > 0 {
		hints = append(hints, fmt.Sprintf("%s in %s: %s", plural, ns, listSome(nearest(names, name), 5)))
	} else {
		namespaces := idx.ListIndexFuncValues(cache.NamespaceIndex)
		hints = append(hints, fmt.Sprintf("no %s in namespace %s; namespaces with %s: %s", plural, ns, plural, listSome(nearest(namespaces, ns), 5)))
	}
	if objs, _ := idx.ByIndex(byName, name); len(objs) > 0 {
		var elsewhere []string
		for _, o := range objs {
			if k, err := cache.MetaNamespaceKeyFunc(o); err == nil {
				elsewhere = append(elsewhere, k)
			}
		}
		slices.Sort(elsewhere)
		hints = append(hints, fmt.Sprintf("%s %s exists as %s", kind, name, listSome(elsewhere, 3)))
	}
	return fmt.Errorf("%s %s/%s not found (%s)", kind, ns, name, strings.Join(hints, "; "))
}

func (v *View) nodeNotFound(name string) error {
	objs, _ := v.nodes.List(labels.Everything())
	var names []string
	for _, n := range objs {
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return fmt.Errorf("node %s not found (the cluster lists no nodes)", name)
	}
	return fmt.Errorf("node %s not found (nodes: %s)", name, listSome(nearest(names, name), 5))
}

// nearest orders names by how close they are to what was typed: names
// that start with it (a Deployment's pods: web-7d9f8-x2k4q for "web"),
// then names that contain it, then by edit distance.
func nearest(names []string, typed string) []string {
	score := func(n string) int {
		switch {
		case strings.HasPrefix(n, typed):
			return 0
		case strings.Contains(n, typed):
			return 1
		}
		return 2 + editDistance(n, typed)
	}
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int {
		if c := cmp.Compare(score(a), score(b)); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return slices.Compact(out)
}

// editDistance is Levenshtein's distance in bytes (names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// listSome lists the first n, and how many more there are.
func listSome(s []string, n int) string {
	if len(s) == 0 {
		return "none"
	}
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s, ... (%d more)", strings.Join(s[:n], ", "), len(s)-n)
}
