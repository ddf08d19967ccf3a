package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/bot/kubediag"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/collectors/agent/remote"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/kubeview"
	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/internal/procfs"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/kubelet"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store"
	"github.com/slack-go/slack"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDiagnoseThroughAgents is the cluster path end to end on real parts:
// a real API server on the lab's underlay, the lab's nodes and Services in
// it, pod default/client a real pod made by containerd on its node, one
// `netdiag agent` process per node, and `netdiag diagnose pod
// default/client --to svc/default/web:80` run as a user would, from a host
// on the underlay with a kubeconfig. The agent on the client's node finds
// the pod's namespace through CRI.
func TestDiagnoseThroughAgents(t *testing.T) {
	l := labtest.Up(t, "clu")
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	router, err := l.Host("router")
	if err != nil {
		t.Fatal(err)
	}
	kc := kubetest.Start(t, kubetest.Options{Netns: router.NetnsPath, Listen: router.IP})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := kc.Clientset()

	// The lab in the API server, but for the client pod: a real one
	// takes its place.
	labClient, _ := st.Pod("default/client")
	mirror := *st
	mirror.Pods = slices.DeleteFunc(slices.Clone(st.Pods), func(p lab.Pod) bool { return p.Key() == "default/client" })
	if err := labtest.Mirror(ctx, admin, &mirror); err != nil {
		t.Fatal(err)
	}
	node, _ := st.Node(labClient.Node)
	rt := containerd.StartForTest(t, node.NetnsPath, containerd.Options{})
	bin := filepath.Join(t.TempDir(), "server")
	if err := containerd.BuildStatic(ctx, "../..", containerd.ServerPackage, bin); err != nil {
		t.Fatal(err)
	}
	if err := rt.ImportImage(ctx, containerd.Image{Ref: containerd.ServerRef, Binary: bin, Cmd: []string{"-listen", ":8080"}}); err != nil {
		t.Fatal(err)
	}
	apiPod, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "client", Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{NodeName: node.Name, Containers: []corev1.Container{{Name: "server", Image: containerd.ServerRef}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dnsSvc, _ := st.Service(st.DNSService)
	pod, err := rt.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "client", UID: string(apiPod.UID), Image: containerd.ServerRef, Port: 8080,
		DNSServers: []string{dnsSvc.ClusterIP}, DNSSearches: []string{"default.svc." + st.ClusterDomain, "svc." + st.ClusterDomain, st.ClusterDomain}})
	if err != nil {
		t.Fatal(err)
	}
	apiPod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: pod.IP.String(), Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	for _, ip := range pod.IPs {
		apiPod.Status.PodIPs = append(apiPod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if _, err := admin.CoreV1().Pods("default").UpdateStatus(ctx, apiPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Users: the agents run as the admin; the CLI's user is a
	// ServiceAccount allowed to diagnose, another one is not.
	dir := t.TempDir()
	allowed := saToken(t, ctx, kc, "sre", true)
	denied := saToken(t, ctx, kc, "intern", false)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := kc.WriteKubeconfig(kubeconfig, kubetest.User{Name: "sre", Token: allowed}, kubetest.User{Name: "intern", Token: denied}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netdiag"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The agents are the slim binary the DaemonSet runs.
	agentBin := filepath.Join(dir, "netdiag-agent")
	if err := containerd.BuildStatic(ctx, "../..", "github.com/netdiag/netdiag/cmd/netdiag-agent", agentBin); err != nil {
		t.Fatal(err)
	}
	var agentPIDs []int
	for _, n := range st.Nodes {
		// On every address, as in the DaemonSet: a port-forward to a
		// host-network pod arrives at localhost.
		args := []string{"--node", n.Name, "--listen", ":9443", "--kubeconfig", kubeconfig, "--context", "admin",
			"--scan-netns-prefix", st.Prefix, "--token-audience", agent.Audience, "--token-audience", kubetest.Issuer, "--client-ca-file", kc.CAFile}
		args = append(args, "--cri-socket", filepath.Join(dir, "no-runtime-here.sock"))
		if n.Name == node.Name {
			args[len(args)-1] = rt.Socket
		}
		agentPIDs = append(agentPIDs, startAgent(t, n.NetnsPath, filepath.Join(dir, n.Name+".log"), agentBin, args))
		ap := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "netdiag", Name: "netdiag-agent-" + n.Name, Labels: map[string]string{"app.kubernetes.io/name": "netdiag-agent"}},
			Spec: corev1.PodSpec{NodeName: n.Name, HostNetwork: true, Containers: []corev1.Container{{Name: "agent", Image: "netdiag"}}}}
		created, err := admin.CoreV1().Pods("netdiag").Create(ctx, ap, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: n.InternalIP, PodIPs: []corev1.PodIP{{IP: n.InternalIP}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if _, err := admin.CoreV1().Pods("netdiag").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range st.Nodes {
		waitAgent(t, ctx, n.NetnsPath, net.JoinHostPort(n.InternalIP, "9443"), filepath.Join(dir, n.Name+".log"))
	}

	cli := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		return runIn(t, ctx, router.NetnsPath, self, append(args, "--kubeconfig", kubeconfig, "--agents", "direct"))
	}
	labWeb, _ := st.Pod("default/web")
	for _, tc := range []struct {
		name string
		args []string
		want diagnose.Verdict
		// from is where the source's evidence must come from: the CRI
		// sandbox's namespace (which only containerd knows), or a prefix.
		from string
	}{
		{"a user allowed by RBAC, to a Service", []string{"diagnose", "pod", "default/client", "--to", "svc/default/web:80", "--context", "sre", "-o", "json"}, diagnose.Healthy, ""},
		{"the admin's client certificate, to the pod", []string{"diagnose", "pod", "default/client", "--to", "pod/default/web:8080", "--context", "admin", "-o", "json"}, diagnose.Healthy, ""},
		{"a name", []string{"diagnose", "pod", "default/client", "--dns", "web.default.svc.cluster.local", "--context", "sre", "-o", "json"}, diagnose.Healthy, ""},
		{"a host outside the cluster by name, resolved in the pod", []string{"diagnose", "pod", "default/client", "--to", st.OutsideName + ":80", "--context", "sre", "-o", "json"}, diagnose.Healthy, ""},
		// A Service is asked from one of its backends (the lab's web pod,
		// found on node-a by its IP); a node from its own namespace.
		{"a Service as the source", []string{"diagnose", "svc", "default/web", "--dns", "example.com", "--context", "admin", "-o", "json"}, diagnose.Healthy, labWeb.NetnsPath},
		{"a node to another node's agent port", []string{"diagnose", "node", labWeb.Node, "--to", "node/" + node.Name + ":9443", "--context", "admin", "-o", "json"}, diagnose.Healthy, "/proc/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cli(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var f diagnose.Finding
			if err := json.Unmarshal([]byte(out), &f); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if f.Verdict() != tc.want {
				t.Errorf("verdict %s (%s), want %s", f.Verdict(), f.Summary, tc.want)
			}
			from := tc.from
			if from == "" {
				from = rt.Dir
			}
			found := false
			for _, ev := range f.Raw {
				if ev.Scope == "source" && strings.HasPrefix(ev.Netns, from) {
					found = true
				}
			}
			if !found {
				t.Errorf("no evidence of the source from a namespace under %s", from)
			}
			t.Logf("%s: %s (%.2f) in %d ms", strings.Join(tc.args[:5], " "), f.Verdict(), f.Confidence, f.Timings.TotalMS)
		})
	}
	// The agents idle in cluster mode (a token review and an access review
	// cached, no watch): what each holds.
	for i, pid := range agentPIDs {
		cpu0, _ := procfs.CPU(pid)
		time.Sleep(2 * time.Second)
		m, err := procfs.ReadMemory(pid)
		cpu1, _ := procfs.CPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("agent on %s after the diagnoses: RSS %.1f MiB (%.1f MiB its own), CPU %s over 2 s idle", st.Nodes[i].Name, float64(m.RSS)/(1<<20), float64(m.Anon)/(1<<20), cpu1-cpu0)
	}
	t.Run("a name that does not resolve in the pod", func(t *testing.T) {
		code, _, errOut := cli(t, "diagnose", "pod", "default/client", "--to", "nosuch.invalid:80", "--context", "sre")
		if code != 2 || !strings.Contains(errOut, `cannot resolve "nosuch.invalid" from pod default/client`) || !strings.Contains(errOut, "--dns nosuch.invalid") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("a user RBAC does not allow", func(t *testing.T) {
		code, _, errOut := cli(t, "diagnose", "pod", "default/client", "--to", "svc/default/web:80", "--context", "intern")
		if code == 0 || !strings.Contains(errOut, "may not create diagnoses.netdiag.io in namespace default") {
			t.Errorf("exit %d: %s", code, errOut)
		}
		t.Logf("exit %d: %s", code, lastLine(errOut))
	})
	t.Run("kube-proxy Pending on the client's node", func(t *testing.T) {
		if _, err := lab.InjectFault(ctx, l.Instance, "kube-proxy-evicted", nil); err != nil {
			t.Fatal(err)
		}
		defer lab.Clear(ctx, l.Instance, nil)
		after, _ := lab.GetStatus(l.Instance)
		defer func() {
			// kube-proxy is back once the fault is cleared.
			for _, n := range after.Nodes {
				if kp, err := admin.CoreV1().Pods("kube-system").Get(ctx, "kube-proxy-"+n.Name, metav1.GetOptions{}); err == nil {
					kp.Status.Phase, kp.Status.Reason, kp.Status.Message = corev1.PodRunning, "", ""
					kp.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
					admin.CoreV1().Pods("kube-system").UpdateStatus(ctx, kp, metav1.UpdateOptions{})
				}
			}
		}()
		for _, n := range after.Nodes {
			if n.KubeProxy == "Running" {
				continue
			}
			kp, err := admin.CoreV1().Pods("kube-system").Get(ctx, "kube-proxy-"+n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			phase, rest, _ := strings.Cut(n.KubeProxy, ": ")
			reason, msg, _ := strings.Cut(rest, ": ")
			kp.Status.Phase, kp.Status.Reason, kp.Status.Message = corev1.PodPhase(phase), reason, msg
			if _, err := admin.CoreV1().Pods("kube-system").UpdateStatus(ctx, kp, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // the CLI's informers start from a fresh list anyway
		code, out, errOut := cli(t, "diagnose", "pod", "default/client", "--dns", "example.com", "--context", "sre", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var f diagnose.Finding
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatal(err)
		}
		text, _ := json.Marshal(f.Evidence)
		if f.Verdict() != diagnose.DNSPathBroken || !strings.Contains(string(text), "kube-proxy") || !strings.Contains(string(text), "Pending") {
			t.Errorf("verdict %s (%s), evidence %s; want dns-failure/dns-path-broken naming kube-proxy Pending on the node", f.Verdict(), f.Summary, text)
		}
		t.Logf("%s (%.2f): %s", f.Verdict(), f.Confidence, f.Summary)
		for _, o := range f.Evidence {
			if strings.Contains(o.Observation, "kube-proxy") {
				t.Logf("  evidence: %s", o.Observation)
			}
		}
	})
	t.Run("the bot on the cluster: a slash command answered through the agents", func(t *testing.T) {
		// As `netdiag serve` runs without diagnose.lab: the view and the
		// agents' caller behind kubediag.
		view := kubeview.New(admin, kubeview.Options{})
		if err := view.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer view.Stop()
		caller, err := remote.NewCaller(kc.Admin, "", 9443, true)
		if err != nil {
			t.Fatal(err)
		}
		defer caller.Close()
		fake := slackfake.New(t)
		st, err := store.Open(ctx, filepath.Join(t.TempDir(), "netdiag.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		b, err := bot.New(bot.Options{Store: st, Chat: bot.NewSlackChat(fake.BotToken(), fake.APIURL()),
			Diagnoser: &kubediag.Diagnoser{View: view, Caller: caller, PcapDir: t.TempDir()},
			Access:    &bot.Access{Rules: []config.AccessRule{{Users: []string{"U0SRE"}, Verbs: config.Verbs, Namespaces: []string{"*"}}}},
			Capture:   time.Second, Pace: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		bctx, bcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { b.Run(bctx); close(done) }()
		defer func() { bcancel(); <-done }()
		ask := func(text string) string {
			r := b.Command(ctx, slack.SlashCommand{Command: "/netdiag", Text: text, UserID: "U0SRE", ChannelID: "C0NETOPS", ResponseURL: fake.NewResponseURL()})
			return r.Msg.Text
		}
		// A typo is answered at once, from the informers, with near names.
		if got := ask("pod default/clinet to svc/default/web:80"); !strings.Contains(got, "not found") || !strings.Contains(got, "client") {
			t.Errorf("a mistyped pod: %q", got)
		}
		if got := ask("pod default/client to svc/default/web:80"); !strings.Contains(got, "diagnosing pod default/client") {
			t.Fatalf("ack: %q", got)
		}
		var sum slackfake.Message
		err = fake.WaitFor(ctx, func(s *slackfake.Server) bool {
			for _, m := range s.Messages() {
				if strings.Contains(m.Latest().Text, "healthy/") && strings.Contains(m.Latest().Text, "confidence") {
					sum = m
					return len(s.Files()) == 1
				}
			}
			return false
		})
		if err != nil {
			t.Fatalf("no healthy finding with its pcap in the channel: %v", err)
		}
		collecting := false
		for _, u := range sum.Updates {
			collecting = collecting || strings.Contains(u.Text, "collecting on "+node.Name)
		}
		if !collecting {
			t.Errorf("the progress never said it was collecting on %s", node.Name)
		}
		if f := fake.Files()[0]; f.ThreadTS != sum.TS || len(f.Bytes) <= 24 {
			t.Errorf("pcap %s (%d bytes) in thread %q, want a capture in %s", f.Name, len(f.Bytes), f.ThreadTS, sum.TS)
		}
		t.Logf("the bot on the cluster: %s", sum.Latest().Text)
	})
	t.Run("a sweep of every node through its agent", func(t *testing.T) {
		// As the bot sweeps for a digest: the view finds the nodes and a
		// pod on each, each node's agent runs its cells.
		view := kubeview.New(admin, kubeview.Options{})
		if err := view.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer view.Stop()
		nodes, shared, err := view.SweepNodes()
		if err != nil {
			t.Fatal(err)
		}
		caller, err := remote.NewCaller(kc.Admin, "", 9443, true)
		if err != nil {
			t.Fatal(err)
		}
		defer caller.Close()
		tab := sweep.Run(ctx, &diagnose.Engine{Runner: kubediag.Runner(ctx, view, caller)}, nodes, sweep.Options{Cluster: shared, OutsideName: st.OutsideName})
		for _, r := range tab.Rows {
			for _, c := range r.Cells {
				if c.Result != "ok" {
					t.Errorf("%s %s: %s %s %s", r.Node, c.Check, c.Result, c.Verdict, c.Summary)
				}
			}
			t.Logf("sweep %s: %d cells, %d failed", r.Node, len(r.Cells), r.Failed())
		}
		if len(tab.Rows) != len(st.Nodes) {
			t.Errorf("%d rows, want one per node", len(tab.Rows))
		}
	})
	t.Run("through the API server: port-forward by the node's kubelet", func(t *testing.T) {
		// A real kubelet on the client's node, on its containerd, runs the
		// agent's pod (host network): the API server's port-forward to it
		// goes through the kubelet and containerd to the node's port 9443,
		// where the agent listens. The agent pod written by hand for this
		// node makes way for the kubelet's.
		now := int64(0) // no kubelet ran it: nothing to wait for
		if err := admin.CoreV1().Pods("netdiag").Delete(ctx, "netdiag-agent-"+node.Name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
			t.Fatal(err)
		}
		adminConfig := filepath.Join(dir, "admin.kubeconfig")
		if err := kc.WriteKubeconfig(adminConfig); err != nil {
			t.Fatal(err)
		}
		kubelet.StartForTest(t, kubelet.Options{NodeName: node.Name, NodeIP: node.InternalIP, NetnsPath: node.NetnsPath,
			CRISocket: rt.Socket, CgroupRoot: "/" + rt.Name, Kubeconfig: adminConfig, ClientCAFile: kc.CAFile,
			StaticPods: map[string]string{"agent.yaml": agentManifest}, ClusterDNS: dnsSvc.ClusterIP, ClusterDomain: st.ClusterDomain})
		deadline := time.Now().Add(90 * time.Second)
		for {
			p, err := admin.CoreV1().Pods("netdiag").Get(ctx, "netdiag-agent-"+node.Name, metav1.GetOptions{})
			_, mirror := p.Annotations["kubernetes.io/config.mirror"]
			if err == nil && mirror && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				t.Logf("the kubelet runs %s/%s on %s (%s)", p.Namespace, p.Name, p.Spec.NodeName, p.Status.PodIP)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the kubelet's agent pod is not Running after 90 s: %v %v", err, p.Status.Phase)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// The kubelet now owns every pod bound to its node: it replaces the
		// client's sandbox with its own. The question waits until it runs.
		for {
			p, err := admin.CoreV1().Pods("default").Get(ctx, "client", metav1.GetOptions{})
			if err == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil && p.Status.PodIP != "" {
				t.Logf("the kubelet runs pod default/client at %s", p.Status.PodIP)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the kubelet does not run pod default/client after 90 s: %v", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		code, out, errOut := runIn(t, ctx, router.NetnsPath, self, []string{"diagnose", "pod", "default/client", "--dns", "web.default.svc.cluster.local",
			"--kubeconfig", kubeconfig, "--context", "sre", "--agents", "port-forward", "-o", "json"})
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var f diagnose.Finding
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatal(err)
		}
		if f.Verdict() != diagnose.Healthy {
			t.Errorf("verdict %s: %s", f.Verdict(), f.Summary)
		}
		found := false
		for _, ev := range f.Raw {
			found = found || (ev.Scope == "source" && strings.HasPrefix(ev.Netns, rt.Dir))
		}
		if !found {
			t.Error("no evidence from the pod's sandbox namespace")
		}
		t.Logf("through port-forward: %s (%.2f) in %d ms", f.Verdict(), f.Confidence, f.Timings.TotalMS)

		// Without pods/portforward, the API server says no.
		code, _, errOut = runIn(t, ctx, router.NetnsPath, self, []string{"diagnose", "pod", "default/client", "--dns", "web.default.svc.cluster.local",
			"--kubeconfig", kubeconfig, "--context", "intern", "--agents", "port-forward"})
		if code == 0 || !strings.Contains(errOut, `cannot create resource "pods/portforward"`) {
			t.Errorf("a user without pods/portforward: exit %d: %s", code, errOut)
		}
		t.Logf("without pods/portforward: exit %d: %s", code, lastLine(errOut))
	})
}

// agentManifest is the agent's pod as the kubelet runs it: on the host
// network, labelled as the DaemonSet's pods are. Its container stands in
// for the agent's image (issue 13 builds it): the agent itself listens on
// the node's port 9443 beside it, in the same namespace.
const agentManifest = `apiVersion: v1
kind: Pod
metadata:
  name: netdiag-agent
  namespace: netdiag
  labels: {app.kubernetes.io/name: netdiag-agent}
spec:
  hostNetwork: true
  containers:
  - name: agent
    image: netdiag.lab/server:1
    imagePullPolicy: Never
    args: ["-listen", "127.0.0.1:18080"]
`

func saToken(t *testing.T, ctx context.Context, kc *kubetest.Cluster, name string, allowed bool) string {
	t.Helper()
	admin := kc.Clientset()
	read := rbacv1.PolicyRule{APIGroups: []string{"", "discovery.k8s.io", "networking.k8s.io"},
		Resources: []string{"pods", "services", "nodes", "endpointslices", "networkpolicies"}, Verbs: []string{"get", "list", "watch"}}
	rules := []rbacv1.PolicyRule{read} // may read the cluster
	if allowed {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{agent.ResourceGroup}, Resources: []string{agent.Resource}, Verbs: []string{agent.Verb}},
			// Reaching the agents through the API server, as kubectl
			// port-forward does.
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"get", "create"}})
	}
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "netdiag-" + name}, Rules: rules}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: name}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A token for the API server, as a kubectl user has.
	tok, err := kc.ServiceAccountToken(ctx, "default", name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startAgent runs `netdiag agent` in a node's namespace, as the DaemonSet
// would on its host network, and stops it by its PID when the test ends.
func startAgent(t *testing.T, nsPath, logPath, self string, args []string) int {
	t.Helper()
	ns := labtest.OpenNS(t, nsPath)
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	log.Close()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log %s:\n%s", logPath, b)
		}
	})
	return cmd.Process.Pid
}

func waitAgent(t *testing.T, ctx context.Context, nsPath, addr, logPath string) {
	t.Helper()
	ns := labtest.OpenNS(t, nsPath)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := ns.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("agent at %s not listening after 30 s: %v\n%s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runIn runs this binary as netdiag in a namespace and returns its exit
// code, stdout and stderr.
func runIn(t *testing.T, ctx context.Context, nsPath, self string, args []string) (int, string, string) {
	t.Helper()
	ns, err := netns.Open(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = ns.Do(cmd.Run)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
