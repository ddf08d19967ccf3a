package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/cluster"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/labtest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// realRef is the image as imported on the real cluster's nodes.
const (
	realRepository = "netdiag.lab/netdiag"
	realTag        = "real-cluster"
	realNamespace  = "netdiag"
	realRelease    = "netdiag"
	// realChannel is where alert threads go; realWebhookToken is
	// Alertmanager's bearer token for the bot's webhook.
	realChannel      = "C0ALERTS"
	realWebhookToken = "real-cluster-webhook"
)

// TestRealCluster installs netdiag from the chart, as users install it, on
// a real cluster in the lab (lab/cluster: kubelets, containerd, flannel,
// kube-proxy and CoreDNS no one here wrote), with the image
// scripts/build-image makes, and diagnoses from this machine with a
// kubeconfig through the agents the DaemonSet runs, reached by port-forward
// through the apiserver and the real kubelets. The cluster is then broken
// the ways the seed incidents and the taxonomy's Kubernetes causes break
// one, each made the way it happens (kubectl scale, a Service edited, an
// app listening on loopback, a firewall rule on a node, kube-proxy gone
// from a node, flannel on the wrong interface), and every diagnosis must
// give the taxonomy's verdict, the source pod's namespace found through
// CRI by the agent on its node.
func TestRealCluster(t *testing.T) {
	labtest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	helm := chartHelm(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "netdiag.tar")
	imageBuild(t, ctx, archive)
	// The CLI as a user builds it (go build shares the tests' build cache).
	netdiagBin := filepath.Join(dir, "netdiag")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", netdiagBin, "../cmd/netdiag").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/netdiag: %v\n%s", err, out)
	}

	t0 := time.Now()
	l := labtest.UpShape(t, "drc", lab.ShapeCluster)
	cp := cluster.StartForTest(t, l, cluster.Options{})
	nodes := cluster.JoinNodesForTest(t, cp, cluster.NodeOptions{ModuleDir: ".."})
	addons, err := nodes.DeployAddons(ctx, cluster.AddonOptions{ModuleDir: ".."})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster up in %s (control plane %s, nodes %s, workloads %s)", time.Since(t0).Round(time.Millisecond),
		cp.Started.Round(time.Millisecond), nodes.Ready.Round(time.Millisecond), addons.Ready.Round(time.Millisecond))
	cs := cp.API.Clientset()

	// The install, as deploy/README.md has users do it: the namespace,
	// the Secrets the chart names, helm's manifests applied.
	t0 = time.Now()
	var sockets []string
	for _, n := range nodes.Nodes {
		if err := n.Runtime.ImportArchive(ctx, archive, realRepository+":"+realTag); err != nil {
			t.Fatal(err)
		}
		sockets = append(sockets, n.Runtime.Socket)
	}
	// Slack is slackfake on this machine's loopback; the bot's pod
	// reaches it at the outside host (pod traffic leaves through its
	// node's masquerade and the router), where a forwarder stands in for
	// the Internet.
	fake := slackfake.New(t)
	ext, err := l.Host("ext")
	if err != nil {
		t.Fatal(err)
	}
	extNS := labtest.OpenNS(t, ext.NetnsPath)
	slackLn, err := extNS.Listen("tcp", net.JoinHostPort(ext.IP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	lab.Forward(ctx, slackLn, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", fake.Addr())
	})
	fake.SetBaseURL("http://" + slackLn.Addr().String())

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: realNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string]string{
		"netdiag-slack":   {"bot-token": fake.BotToken(), "signing-secret": "real-cluster-secret"},
		"netdiag-webhook": {"token": realWebhookToken},
	} {
		if _, err := cs.CoreV1().Secrets(realNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Each node's runtime has a socket of its own in the lab (one machine,
	// two nodes): the agents get both, as the chart's default lists both
	// containerd's and CRI-O's; each finds its node's pods in its own.
	// The chart's capabilities, but for any this machine's own bounding
	// set lacks (runc cannot grant them: "unable to apply caps").
	// The bot's Service is a NodePort: Alertmanager runs outside the
	// cluster.
	values := fmt.Sprintf(`image: {repository: %s, tag: %s, pullPolicy: Never}
persistence: {enabled: false}
slack: {defaultChannel: %s, apiURL: %q}
bot:
  service: {type: NodePort}
diagnose: {capture: 1s}
alertmanager: {cooldown: 1s}
agent:
  criSockets: [%s]
  tokenAudiences: [netdiag-agent, %q]
  capabilities: [%s]
`, realRepository, realTag, realChannel, fake.APIURL(), strings.Join(sockets, ", "), kubetest.Issuer, strings.Join(imageGrantable(t, chartAgentCapabilities), ", "))
	manifests, err := chartTemplate(t, helm, realRelease, realNamespace, values, chartDir)
	if err != nil {
		t.Fatal(err)
	}
	applier := chartNewApplier(t, ctx, cp.API)
	for _, o := range chartUnstructured(t, manifests) {
		if err := applier.apply(ctx, o, false); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	realWait(t, ctx, 2*time.Minute, "the agent DaemonSet ready on both nodes and the bot available", func() (bool, string) {
		ds, err := cs.AppsV1().DaemonSets(realNamespace).Get(ctx, realRelease+"-agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		bot, err := cs.AppsV1().Deployments(realNamespace).Get(ctx, realRelease, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if ds.Status.NumberReady == 2 && bot.Status.AvailableReplicas == 1 {
			return true, ""
		}
		return false, fmt.Sprintf("%d of %d agents ready, bot %d available; %s\n%s", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled,
			bot.Status.AvailableReplicas, realPodStates(ctx, cs, realNamespace), realLogs(ctx, cs, realNamespace))
	})
	t.Logf("netdiag installed from the chart in %s: %s", time.Since(t0).Round(time.Millisecond), realPodStates(ctx, cs, realNamespace))

	// The CLI's user: an SRE with a token the apiserver and the agents
	// both accept, through a kubeconfig for this machine's loopback.
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sre"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sre"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "sre"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := cp.API.ServiceAccountToken(ctx, "default", "sre", []string{kubetest.Issuer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if _, err := cp.ServeLoopback(ctx, kubeconfig, kubetest.User{Name: "sre", Token: token}); err != nil {
		t.Fatal(err)
	}
	diag := func(t *testing.T, args ...string) *diagnose.Finding {
		t.Helper()
		args = append(append([]string{"diagnose"}, args...), "--kubeconfig", kubeconfig, "-o", "json")
		cmd := exec.CommandContext(ctx, netdiagBin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("netdiag %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		var f diagnose.Finding
		if err := json.Unmarshal(stdout.Bytes(), &f); err != nil {
			t.Fatalf("%v: %s", err, stdout.String())
		}
		t.Logf("netdiag %s: %s (%.2f) in %s: %s", strings.Join(args[:len(args)-4], " "), f.Verdict(), f.Confidence, time.Since(t0).Round(time.Millisecond), f.Summary)
		return &f
	}
	pod := func(t *testing.T, w cluster.Workload) *corev1.Pod {
		t.Helper()
		p, err := nodes.RunningPod(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// fromCRI: the source's evidence came from the namespace containerd
	// made for the pod, under its node's runtime directory.
	fromCRI := func(t *testing.T, f *diagnose.Finding, node string) {
		t.Helper()
		dir := nodes.Node(node).Runtime.Dir
		for _, ev := range f.Raw {
			if ev.Scope == "source" && strings.HasPrefix(ev.Netns, dir) {
				return
			}
		}
		t.Errorf("no evidence of the source from a namespace under %s (node %s's runtime)", dir, node)
	}
	client := pod(t, cluster.Client)
	web := pod(t, cluster.Web)
	webSvc := "svc/" + cluster.Web.String() + ":80"
	clientKey := client.Namespace + "/" + client.Name

	t.Run("healthy: client to the web Service", func(t *testing.T) {
		f := diag(t, "pod", clientKey, "--to", webSvc)
		if f.Verdict() != diagnose.Healthy {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.Healthy)
		}
		fromCRI(t, f, cluster.Client.Node)
	})
	t.Run("healthy: client to the web pod across the overlay", func(t *testing.T) {
		f := diag(t, "pod", clientKey, "--to", "pod/"+web.Namespace+"/"+web.Name+":"+strconv.Itoa(cluster.WebPort))
		if f.Verdict() != diagnose.Healthy {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.Healthy)
		}
	})
	t.Run("healthy: a name from the client", func(t *testing.T) {
		f := diag(t, "pod", clientKey, "--dns", "web.default.svc.cluster.local")
		if f.Verdict() != diagnose.Healthy {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.Healthy)
		}
	})

	t.Run("CoreDNS scaled to zero", func(t *testing.T) {
		realScale(t, ctx, cs, cluster.CoreDNS, 0)
		defer realScale(t, ctx, cs, cluster.CoreDNS, 1)
		f := diag(t, "pod", clientKey, "--dns", "web.default.svc.cluster.local")
		if f.Verdict() != diagnose.DNSServiceDown {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.DNSServiceDown)
		}
	})
	t.Run("a Service whose selector matches nothing", func(t *testing.T) {
		realSelector(t, ctx, cs, `{"spec":{"selector":{"app":"web-typo"}}}`)
		defer realSelector(t, ctx, cs, `{"spec":{"selector":{"app":"web"}}}`)
		f := diag(t, "pod", clientKey, "--to", webSvc)
		if f.Verdict() != diagnose.PortNoEndpoints {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.PortNoEndpoints)
		}
	})
	t.Run("a pod listening on 127.0.0.1", func(t *testing.T) {
		loopy := cluster.Workload{Namespace: "default", Name: "loopy", Node: "node-a"}
		realDeploy(t, ctx, cs, nodes, loopy, "127.0.0.1:8080")
		p := pod(t, loopy)
		f := diag(t, "pod", clientKey, "--to", "pod/"+p.Namespace+"/"+p.Name+":8080")
		if f.Verdict() != diagnose.PortLoopback {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.PortLoopback)
		}
	})
	t.Run("VXLAN's UDP 8472 closed on a node", func(t *testing.T) {
		n := nodes.Node(cluster.Web.Node)
		rule := []string{"INPUT", "-p", "udp", "--dport", strconv.Itoa(cluster.FlannelPort), "-j", "DROP"}
		realIptables(t, ctx, n.Lab.NetnsPath, append([]string{"-I"}, rule...))
		defer realIptables(t, ctx, n.Lab.NetnsPath, append([]string{"-D"}, rule...))
		f := diag(t, "pod", clientKey, "--to", "pod/"+web.Namespace+"/"+web.Name+":"+strconv.Itoa(cluster.WebPort))
		if f.Verdict() != diagnose.OverlayBroken {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.OverlayBroken)
		}
	})
	t.Run("kube-proxy gone from the client's node", func(t *testing.T) {
		if err := nodes.StopKubeProxy(ctx, cluster.Client.Node); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := nodes.StartKubeProxy(ctx, cluster.Client.Node); err != nil {
				t.Fatal(err)
			}
		}()
		f := diag(t, "pod", clientKey, "--dns", "web.default.svc.cluster.local")
		if f.Verdict() != diagnose.DNSPathBroken && f.Verdict() != diagnose.KubeProxyDown {
			t.Errorf("verdict %s, want %s or %s", f.Verdict(), diagnose.DNSPathBroken, diagnose.KubeProxyDown)
		}
	})
	t.Run("alerts through a real Alertmanager end in their threads", func(t *testing.T) {
		// Alertmanager, outside the cluster, posts to the bot's NodePort
		// on node-a; a forwarder on this machine's loopback stands in for
		// the network between.
		svc, err := cs.CoreV1().Services(realNamespace).Get(ctx, realRelease, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].NodePort == 0 {
			t.Fatalf("the bot's Service has no NodePort: %+v", svc.Spec.Ports)
		}
		nodeA := nodes.Node("node-a")
		target := net.JoinHostPort(nodeA.Lab.InternalIP, strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
		nodeNS := labtest.OpenNS(t, nodeA.Lab.NetnsPath)
		amLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lab.Forward(ctx, amLn, func(ctx context.Context) (net.Conn, error) { return nodeNS.Dial(ctx, "tcp", target) })
		am := amtest.Start(t, amtest.Options{ReceiverURL: "http://" + amLn.Addr().String() + "/alertmanager", Bearer: realWebhookToken})

		finding, took := realAlert(t, ctx, am, fake, "ClientDNSProbeHealthy", client, "web.default.svc.cluster.local")
		t.Logf("healthy: %s after the POST to Alertmanager: %s", took.Round(time.Millisecond), finding)
		if !strings.Contains(finding, diagnose.Healthy.String()) {
			t.Errorf("thread says %q, want %s", finding, diagnose.Healthy)
		}

		// The seed: kube-proxy never ran on the node that joined last,
		// and its pods time out resolving names.
		if err := nodes.StopKubeProxy(ctx, cluster.Client.Node); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := nodes.StartKubeProxy(ctx, cluster.Client.Node); err != nil {
				t.Fatal(err)
			}
		}()
		finding, took = realAlert(t, ctx, am, fake, "ClientDNSTimeouts", client, "web.default.svc.cluster.local")
		t.Logf("kube-proxy gone: %s after the POST to Alertmanager: %s", took.Round(time.Millisecond), finding)
		if !strings.Contains(finding, diagnose.DNSPathBroken.String()) {
			t.Errorf("thread says %q, want %s", finding, diagnose.DNSPathBroken)
		}
	})
	t.Run("flannel on the wrong interface", func(t *testing.T) {
		n := cluster.Client.Node
		if err := nodes.RestartFlannel(ctx, n, []string{"--iface=eth1"}); err != nil {
			t.Fatal(err)
		}
		// The peer learns the new VTEP address from the Node's
		// annotation, as flannel's watch delivers it.
		nb := nodes.Node(n)
		realWait(t, ctx, 30*time.Second, "node-b's flannel public IP on its eth1", func() (bool, string) {
			node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			got := node.Annotations["flannel.alpha.coreos.com/public-ip"]
			return got != nb.Lab.InternalIP, "public-ip " + got
		})
		time.Sleep(2 * time.Second)
		defer func() {
			if err := nodes.RestartFlannel(ctx, n, nil); err != nil {
				t.Fatal(err)
			}
		}()
		f := diag(t, "pod", clientKey, "--to", "pod/"+web.Namespace+"/"+web.Name+":"+strconv.Itoa(cluster.WebPort))
		if f.Verdict() != diagnose.OverlayBroken {
			t.Errorf("verdict %s, want %s", f.Verdict(), diagnose.OverlayBroken)
		}
	})
}

// realAlert fires an alert about a pod into the real Alertmanager, whose
// webhook reaches the bot's NodePort on node-a, and waits for the finding
// in the alert's Slack thread; it returns the finding's text and how long
// it took from the POST to Alertmanager.
func realAlert(t *testing.T, ctx context.Context, am *amtest.AM, fake *slackfake.Server, alertname string, pod *corev1.Pod, dns string) (string, time.Duration) {
	t.Helper()
	// The bot may thread a new alert under an earlier one about the same
	// pod: only a finding posted after this alert counts.
	seen := map[string]bool{}
	for _, m := range fake.Messages() {
		seen[m.TS] = true
	}
	t0 := time.Now()
	if err := am.PostAlerts(ctx, amtest.Alert{
		Labels:      map[string]string{"alertname": alertname, "namespace": pod.Namespace, "pod": pod.Name, "severity": "warning"},
		Annotations: map[string]string{"netdiag_dns": dns},
	}); err != nil {
		t.Fatal(err)
	}
	var header, finding string
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := fake.WaitFor(wctx, func(s *slackfake.Server) bool {
		for _, m := range s.Messages() {
			if m.Channel == realChannel && m.ThreadTS == "" && strings.Contains(m.Latest().Text, alertname) {
				header = m.TS
			}
		}
		if header == "" {
			return false
		}
		for _, m := range s.Thread(realChannel, header) {
			if text := m.Latest().Text; !seen[m.TS] && strings.Contains(text, "(confidence") && !strings.HasPrefix(text, "```") {
				finding = text
				return true
			}
		}
		return false
	})
	took := time.Since(t0)
	if err != nil {
		var all []string
		for _, m := range fake.Messages() {
			all = append(all, m.Channel+" "+m.ThreadTS+": "+m.Latest().Text)
		}
		t.Fatalf("no finding in the thread of %s after %s: %v\nmessages:\n%s", alertname, took.Round(time.Millisecond), err, strings.Join(all, "\n"))
	}
	return finding, took
}

func realWait(t *testing.T, ctx context.Context, limit time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		done, state := ok()
		if done {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not after %s: %s", what, limit, state)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func realPodStates(ctx context.Context, cs kubernetes.Interface, namespace string) string {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, p := range pods.Items {
		s := fmt.Sprintf("%s on %s %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil {
				s += fmt.Sprintf(" (%s: %s %s)", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
			}
			if c.RestartCount > 0 {
				s += fmt.Sprintf(" (%s restarted %d times)", c.Name, c.RestartCount)
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// realLogs is the end of every container's log in the namespace, the
// previous run's too (through the apiserver and the kubelets).
func realLogs(ctx context.Context, cs kubernetes.Interface, namespace string) string {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	lines := int64(15)
	for _, p := range pods.Items {
		for _, previous := range []bool{false, true} {
			out, err := cs.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &lines, Previous: previous}).DoRaw(ctx)
			if err == nil && len(out) > 0 {
				fmt.Fprintf(&b, "--- %s (previous %v):\n%s\n", p.Name, previous, out)
			}
		}
	}
	return b.String()
}

// realScale scales a Deployment and waits until its pods are as many.
func realScale(t *testing.T, ctx context.Context, cs kubernetes.Interface, w cluster.Workload, replicas int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := cs.AppsV1().Deployments(w.Namespace).Patch(ctx, w.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	realWait(t, ctx, time.Minute, fmt.Sprintf("%s at %d replicas", w, replicas), func() (bool, string) {
		d, err := cs.AppsV1().Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := cs.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
		if err != nil {
			return false, err.Error()
		}
		return int32(len(pods.Items)) == replicas && d.Status.AvailableReplicas == replicas,
			fmt.Sprintf("%d pods, %d available", len(pods.Items), d.Status.AvailableReplicas)
	})
}

// realSelector patches the web Service and waits until its endpoints follow.
func realSelector(t *testing.T, ctx context.Context, cs kubernetes.Interface, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Services(cluster.Web.Namespace).Patch(ctx, cluster.Web.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	want := !strings.Contains(patch, "typo")
	realWait(t, ctx, 30*time.Second, "the web Service's endpoints", func() (bool, string) {
		slices, err := cs.DiscoveryV1().EndpointSlices(cluster.Web.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + cluster.Web.Name})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, s := range slices.Items {
			n += len(s.Endpoints)
		}
		return (n > 0) == want, fmt.Sprintf("%d endpoints", n)
	})
	time.Sleep(2 * time.Second) // kube-proxy's rules follow within its min sync period
}

// realDeploy runs the server image as a Deployment pinned to w.Node,
// listening on listen, without a readiness probe (a server on loopback
// would never be ready, and the pod is meant to run).
func realDeploy(t *testing.T, ctx context.Context, cs kubernetes.Interface, nodes *cluster.Nodes, w cluster.Workload, listen string) {
	t.Helper()
	one := int32(1)
	labels := map[string]string{"app": w.Name}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{corev1.LabelHostname: w.Node},
				TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: w.Name, Image: containerd.ServerRef, ImagePullPolicy: corev1.PullNever,
					Args:  []string{"-listen", listen},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			}}}}
	if _, err := cs.AppsV1().Deployments(w.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.AppsV1().Deployments(w.Namespace).Delete(context.WithoutCancel(ctx), w.Name, metav1.DeleteOptions{})
	})
	realWait(t, ctx, time.Minute, w.String()+" Running", func() (bool, string) {
		_, err := nodes.RunningPod(ctx, w)
		if err != nil {
			return false, err.Error() + "; " + realPodStates(ctx, cs, w.Namespace)
		}
		return true, ""
	})
}

// realIptables runs iptables in a node's namespace.
func realIptables(t *testing.T, ctx context.Context, netnsPath string, args []string) {
	t.Helper()
	ipt, err := tools.Find("iptables")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.Open(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if out, err := ns.Output(ctx, ipt, append([]string{"-w", "5"}, args...)...); err != nil {
		t.Fatalf("iptables %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
