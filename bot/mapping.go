package bot

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
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
	firstErr := ""
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
			// instance is HOST:PORT of a scrape target; a URL (a
			// blackbox probe's) names no node.
			if strings.Contains(name, "/") {
				continue
			}
			if h, p, err := net.SplitHostPort(name); err == nil {
				if _, err := strconv.ParseUint(p, 10, 16); err == nil {
					name = h
				}
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
		// The annotations ask what the kind can take: a Service is asked
		// as it is, a node has no resolver question of its own.
		if v := annotations["netdiag_to"]; v != "" && kind != "svc" {
			to = v
		}
		if to != "" {
			text += " to " + to
		}
		var names []string
		if dns != "" {
			names = append(names, dns)
		}
		if v := annotations["netdiag_dns"]; v != "" && kind == "pod" {
			names = append(names, v)
		}
		for _, d := range names {
			text += " dns " + d
		}
		c, err := ParseCommand(text)
		if err != nil {
			// The next mapping may fit (an instance label that is a URL,
			// not a node); if none does, this is why.
			if firstErr == "" {
				firstErr = fmt.Sprintf("the alert maps to %q, which netdiag cannot diagnose: %v", text, err)
			}
			continue
		}
		q = QuestionOf(c)
		return q, r.Channel, ""
	}
	if firstErr != "" {
		return Question{}, "", firstErr
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
