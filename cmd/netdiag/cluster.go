package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/netdiag/netdiag/bot/kubediag"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/collectors/agent/remote"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/kubeview"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// clusterFlags are the flags of a diagnosis of a cluster's pod, Service or
// node, run by the agents on the nodes involved.
type clusterFlags struct {
	kubeconfig, context string
	agents              string
	agentCA             string
	agentPort           int
	agentNamespace      string
	agentSelector       string
}

func (f *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file, as kubectl takes it (default $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	fs.StringVar(&f.context, "context", "", "kubeconfig context")
	fs.StringVar(&f.agents, "agents", "port-forward", "how to reach the nodes' agents: port-forward (through the API server, as kubectl port-forward) or direct (to the agent pods' IPs, from inside the cluster network)")
	fs.StringVar(&f.agentCA, "agent-ca", "", "CA that signed the agents' certificates (without it the connection is encrypted but the agent is not verified)")
	fs.IntVar(&f.agentPort, "agent-port", agent.DefaultPort, "the agents' port")
	fs.StringVar(&f.agentNamespace, "agent-namespace", kubeview.DefaultAgentNamespace, "namespace of the agent pods")
	fs.StringVar(&f.agentSelector, "agent-selector", kubeview.DefaultAgentSelector, "label selector of the agent pods")
}

// clusterRun resolves a question against the cluster and gives the request
// and the runner that carries it to the nodes' agents with the user's own
// credentials. done stops the view and the port-forwards.
func clusterRun(ctx context.Context, c *cli, f *clusterFlags, kind, name, to string, dns []string) (req *diagnose.Request, run diagnose.Runner, done func(), err error) {
	switch f.agents {
	case "port-forward", "direct":
	default:
		return nil, nil, nil, usageErr("--agents %q: accepted: port-forward, direct", f.agents)
	}
	if f.agentPort < 1 || f.agentPort > 65535 {
		return nil, nil, nil, usageErr("--agent-port %d: give 1 to 65535", f.agentPort)
	}
	switch kind {
	case "pod", "svc", "node":
	default:
		return nil, nil, nil, usageErr("unknown target %q (accepted: pod NAMESPACE/NAME, svc NAMESPACE/NAME, node NAME)", kind)
	}
	rc, err := kubeConfig(f.kubeconfig, f.context)
	if err != nil {
		return nil, nil, nil, usageErr("%v", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, nil, err
	}
	view := kubeview.New(client, kubeview.Options{AgentNamespace: f.agentNamespace, AgentSelector: f.agentSelector, Logger: c.log})
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := view.Start(sctx); err != nil {
		return nil, nil, nil, fmt.Errorf("reading the cluster: %w", err)
	}
	res, err := view.Resolve(kubeview.Question{Kind: kind, Name: name, To: to, DNS: dns})
	if err != nil {
		view.Stop()
		return nil, nil, nil, usageErr("%v", err)
	}
	for _, ck := range res.Checks {
		if !ck.OK() {
			c.log.Info("cluster check failed", "check", ck.Name, "subject", ck.Subject, "message", ck.Message)
		}
	}
	req = res.Request()
	caller, err := remote.NewCaller(rc, f.agentCA, f.agentPort, f.agents == "direct")
	if err != nil {
		view.Stop()
		return nil, nil, nil, usageErr("%v", err)
	}
	run = kubediag.Runner(ctx, view, caller)
	done = func() { caller.Close(); view.Stop() }
	// A name that is not the cluster's resolves as the pod resolves it.
	if err := diagnose.ResolveTo(ctx, run, req); err != nil {
		done()
		return nil, nil, nil, usageErr("--to: %v", err)
	}
	return req, run, done, nil
}

// usageError is an error in what the user gave (exit 2).
type usageError struct{ error }

func usageErr(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// splitTarget reads "pod NS/NAME" or "node NAME" given as two words.
func splitTarget(pos []string) (kind, name string, err error) {
	if len(pos) != 2 {
		return "", "", usageErr("give a target: pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME (got %q)", strings.Join(pos, " "))
	}
	return pos[0], pos[1], nil
}

// kubeConfig loads credentials as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else the pod's in-cluster account.
func kubeConfig(path, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	rc, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("no cluster: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a pod")
		}
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.UserAgent = "netdiag/" + version
	return rc, nil
}
