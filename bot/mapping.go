package bot

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"

	"github.com/netdiag/netdiag/config"
)

var placeholder = regexp.MustCompile(`\{([a-zA-Z_][a-zA-Z0-9_]*)\}`)

// expand fills {label} from labels; ok is false when a label is missing or
// empty, so that a rule applies only to alerts that carry what it names.
func expand(tmpl string, labels map[string]string) (string, bool) {
	ok := true
	out := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		v := labels[m[1:len(m)-1]]
		if v == "" {
			ok = false
		}
		return v
	})
	return out, ok
}

// defaultMappings are used after the config's: the labels Kubernetes alert
// rules (kube-state-metrics, kube-prometheus) carry.
var defaultMappings = []config.AlertMapping{
	{Target: "pod {namespace}/{pod}"},
	{Target: "svc {namespace}/{service}"},
	{Target: "node {node}"},
	{Target: "node {instance}"},
}

// MapAlert turns an alert's labels and annotations into a question, with the
// channel a rule names (empty: the default). When no rule applies, reason
// says why, in words for the alert's thread.
func MapAlert(labels, annotations map[string]string, rules []config.AlertMapping) (q Question, channel, reason string) {
	all := append(append([]config.AlertMapping{}, rules...), defaultMappings...)
	for _, r := range all {
		if !matches(r.Match, labels) {
			continue
		}
		target, ok := expand(r.Target, labels)
		if !ok {
			continue
		}
		kind, name, _ := strings.Cut(target, " ")
		if kind == "node" && strings.Contains(r.Target, "{instance}") {
			// instance is HOST:PORT of a scrape target.
			if h, _, err := net.SplitHostPort(name); err == nil {
				name = h
			}
		}
		// A mapping applies only when the alert fills all its
		// placeholders: a half-filled `to` would aim at something else.
		to, ok := expand(r.To, labels)
		if !ok {
			continue
		}
		dns, ok := expand(r.DNS, labels)
		if !ok {
			continue
		}
		text := kind + " " + name
		if v := annotations["netdiag_to"]; v != "" {
			to = v
		}
		if to != "" {
			text += " to " + to
		}
		var names []string
		if dns != "" {
			names = append(names, dns)
		}
		if v := annotations["netdiag_dns"]; v != "" {
			names = append(names, v)
		}
		for _, d := range names {
			text += " dns " + d
		}
		c, err := ParseCommand(text)
		if err != nil {
			return Question{}, "", fmt.Sprintf("the alert maps to %q, which netdiag cannot diagnose: %v", text, err)
		}
		q = QuestionOf(c)
		return q, r.Channel, ""
	}
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	return Question{}, "", fmt.Sprintf("no target in its labels (%s): a pod needs namespace and pod, a Service namespace and service, a node node or instance; or add a mapping under alertmanager.mappings",
		strings.Join(names, ", "))
}

func matches(match, labels map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}
