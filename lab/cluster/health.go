package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// healthSettle is how long a failing health check is retried.
const healthSettle = 10 * time.Second

// HealthCheck is one check of a running cluster, with what it saw.
type HealthCheck struct {
	Name   string
	Detail string
	Took   time.Duration
	Err    error
}

// Health checks the cluster as a user would after installing it: every
// node Ready, every pod Running and Ready, and from the client pod's
// network namespace: the web Service's name resolved by CoreDNS through
// the kube-dns Service, an outside name forwarded upstream, the web Service
// answering over HTTP, and the web pod over IPv6 across the overlay.
func (ns *Nodes) Health(ctx context.Context) []HealthCheck {
	var out []HealthCheck
	// A check is retried for a few seconds: a Deployment is available
	// before every kube-proxy has written its Service's endpoints (its
	// rules follow the EndpointSlices within --iptables-min-sync-period).
	run := func(name string, fn func() (string, error)) {
		t0 := time.Now()
		var detail string
		var err error
		for try := 1; ; try++ {
			if detail, err = fn(); err == nil || time.Since(t0) > healthSettle || ctx.Err() != nil {
				if err == nil && try > 1 {
					detail += fmt.Sprintf(" (try %d)", try)
				}
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		out = append(out, HealthCheck{Name: name, Detail: detail, Took: time.Since(t0), Err: err})
	}
	cs := ns.CP.API.Clientset()
	l := ns.CP.Lab
	run("every node Ready", func() (string, error) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		var names, bad []string
		for _, n := range nodes.Items {
			names = append(names, n.Name)
			if !nodeReady(&n) {
				bad = append(bad, n.Name+": "+readyMessage(&n))
			}
		}
		if len(bad) > 0 {
			return "", fmt.Errorf("not Ready: %s", strings.Join(bad, "; "))
		}
		return strings.Join(names, ", "), nil
	})
	run("every pod Running and Ready", func() (string, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		var names, bad []string
		for _, p := range pods.Items {
			names = append(names, p.Namespace+"/"+p.Name+" on "+p.Spec.NodeName)
			if p.Status.Phase != corev1.PodRunning || !PodReady(&p) {
				bad = append(bad, fmt.Sprintf("%s/%s %s", p.Namespace, p.Name, p.Status.Phase))
			}
		}
		if len(bad) > 0 {
			return "", fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return strings.Join(names, ", "), nil
	})

	client, clientNS, err := ns.podNS(ctx, Client)
	if err != nil {
		out = append(out, HealthCheck{Name: "the client pod's network namespace", Err: err})
		return out
	}
	defer clientNS.Close()
	dnsSvc, err := l.Service(l.DNSService)
	if err != nil {
		out = append(out, HealthCheck{Name: "the kube-dns Service", Err: err})
		return out
	}
	webSvc, err := cs.CoreV1().Services(Web.Namespace).Get(ctx, Web.Name, metav1.GetOptions{})
	if err != nil {
		out = append(out, HealthCheck{Name: "the web Service", Err: err})
		return out
	}
	webFQDN := Web.Name + "." + Web.Namespace + ".svc." + l.ClusterDomain + "."
	run("DNS from "+client.Name+": "+webFQDN, func() (string, error) {
		q := collectors.Query(ctx, clientNS, dnsSvc.ClusterIP, webFQDN, "udp", 2*time.Second)
		if q.Error != "" || q.Rcode != "NOERROR" {
			return "", fmt.Errorf("asked %s: %s%s", dnsSvc.ClusterIP, q.Error, q.Rcode)
		}
		if len(q.Answers) != 1 || q.Answers[0] != webSvc.Spec.ClusterIP {
			return "", fmt.Errorf("answers %v, want the web Service's ClusterIP %s", q.Answers, webSvc.Spec.ClusterIP)
		}
		return fmt.Sprintf("%s answered %s in %.1f ms", dnsSvc.ClusterIP, q.Answers[0], q.MS), nil
	})
	outside := l.OutsideName + "."
	run("DNS from "+client.Name+": "+outside+" (forwarded upstream)", func() (string, error) {
		q := collectors.Query(ctx, clientNS, dnsSvc.ClusterIP, outside, "udp", 2*time.Second)
		if q.Error != "" || q.Rcode != "NOERROR" || len(q.Answers) == 0 {
			return "", fmt.Errorf("asked %s: %s%s, answers %v", dnsSvc.ClusterIP, q.Error, q.Rcode, q.Answers)
		}
		return fmt.Sprintf("%s answered %v in %.1f ms", dnsSvc.ClusterIP, q.Answers, q.MS), nil
	})
	web, err := ns.RunningPod(ctx, Web)
	if err != nil {
		out = append(out, HealthCheck{Name: "the web pod", Err: err})
		return out
	}
	run("HTTP from "+client.Name+" to the web Service", func() (string, error) {
		addr := net.JoinHostPort(webSvc.Spec.ClusterIP, "80")
		body, err := lab.HTTPGet(ctx, clientNS, addr)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(body) != web.Name {
			return "", fmt.Errorf("%s answered %q, want the web pod's name %s", addr, body, web.Name)
		}
		return addr + " answered " + strings.TrimSpace(body), nil
	})
	for _, ip := range web.Status.PodIPs {
		if !strings.Contains(ip.IP, ":") {
			continue
		}
		run("HTTP from "+client.Name+" to "+web.Name+" over IPv6 across the overlay", func() (string, error) {
			addr := net.JoinHostPort(ip.IP, strconv.Itoa(WebPort))
			body, err := lab.HTTPGet(ctx, clientNS, addr)
			if err != nil {
				return "", err
			}
			return addr + " answered " + strings.TrimSpace(body), nil
		})
	}
	return out
}

// PodReady is whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podNS opens the network namespace of a workload's Running pod, found
// through the CRI of the node it runs on.
func (ns *Nodes) podNS(ctx context.Context, w Workload) (*corev1.Pod, *netns.NS, error) {
	p, err := ns.RunningPod(ctx, w)
	if err != nil {
		return nil, nil, err
	}
	n := ns.Node(p.Spec.NodeName)
	if n == nil {
		return nil, nil, fmt.Errorf("pod %s/%s runs on %q, not a node of the lab", p.Namespace, p.Name, p.Spec.NodeName)
	}
	path, err := n.PodNetns(ctx, string(p.UID))
	if err != nil {
		return nil, nil, err
	}
	h, err := netns.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return p, h, nil
}
