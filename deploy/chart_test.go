package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	yaml3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/agentcmd"
	"github.com/netdiag/netdiag/internal/tools"
)

// The chart, its plain rendering and how both are made.
const (
	chartDir          = "helm/netdiag"
	chartManifestsDir = "manifests"
	chartRenderScript = "../scripts/render-manifests"
	// The helm scripts/install-deps builds and scripts/render-manifests
	// insists on: another version may render differently.
	chartHelmVersion = "v3.22.0"
	// What scripts/render-manifests passes: helm template checks the chart's
	// kubeVersion against it instead of a cluster.
	chartKubeVersion      = "v1.33.0"
	chartDefaultRelease   = "netdiag"
	chartDefaultNamespace = "netdiag"
	chartBotUID           = 65532
	chartBotBinary        = "/usr/local/bin/netdiag"
	chartAgentBinary      = "/usr/local/bin/netdiag-agent"
	chartImageRepository  = "netdiag/netdiag"
)

// chartAgentCapabilities is all the agent may hold: what each is for is
// in values.yaml.
var chartAgentCapabilities = []string{"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "BPF", "PERFMON", "SYS_RESOURCE"}

// chartBotReads is what diagnose/kubeview's informers list and watch
// (kubeview.New), as GROUP/RESOURCE (the core group is ""). cluster_test.go starts a real kubeview with the bot's
// token, which fails if this list and the chart's role fall short of it.
var chartBotReads = []string{"/pods", "/services", "/nodes", "discovery.k8s.io/endpointslices", "networking.k8s.io/networkpolicies"}

// chartHelm finds the pinned helm, or skips (fails under CI).
func chartHelm(t testing.TB) string {
	t.Helper()
	unavailable := func(format string, a ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, a...) + ": run scripts/install-deps"
		if os.Getenv("CI") != "" {
			t.Fatalf("%s (CI is set, so this is not skipped)", msg)
		}
		t.Skip(msg)
	}
	p, err := tools.FindGoInstalled("helm")
	if err != nil {
		unavailable("helm: %v", err)
	}
	out, err := exec.Command(p, "version", "--template", "{{.Version}}").Output()
	if err != nil {
		unavailable("%s version: %v", p, err)
	}
	if v := strings.TrimSpace(string(out)); v != chartHelmVersion {
		unavailable("%s is helm %s, the chart's tests pin %s", p, v, chartHelmVersion)
	}
	return p
}

// chartTemplate runs helm template; an error carries helm's stderr.
func chartTemplate(t testing.TB, helm, release, namespace, values string, dir string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, dir, "--namespace", namespace, "--kube-version", chartKubeVersion}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("helm template %s (namespace %s) took %s", release, namespace, time.Since(start).Round(time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// chartSerializer decodes with client-go's scheme and refuses what it does
// not know: a misspelt field in a template fails here, not on a cluster.
var chartSerializer = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	k8sjson.SerializerOptions{Yaml: true, Strict: true})

// chartDocs splits a stream of YAML documents, leaving out the empty ones
// (helm writes a comment-only document for a template that renders
// nothing).
func chartDocs(t testing.TB, b []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

func chartDecode(t testing.TB, doc []byte) runtime.Object {
	t.Helper()
	obj, _, err := chartSerializer.Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("decoding strictly with client-go's scheme: %v\n%s", err, doc)
	}
	return obj
}

// chartSet is a rendering, by kind.
type chartSet struct {
	all          []runtime.Object
	deploy       *appsv1.Deployment
	ds           *appsv1.DaemonSet
	cm           *corev1.ConfigMap
	svc          *corev1.Service
	pvc          *corev1.PersistentVolumeClaim
	netpol       *networkingv1.NetworkPolicy
	sas          map[string]*corev1.ServiceAccount
	roles        map[string]*rbacv1.ClusterRole
	bindings     map[string]*rbacv1.ClusterRoleBinding
	namespaces   []*corev1.Namespace
	namespaced   []metav1.Object
	clusterScope []metav1.Object
}

func chartParse(t testing.TB, b []byte) *chartSet {
	t.Helper()
	s := &chartSet{sas: map[string]*corev1.ServiceAccount{}, roles: map[string]*rbacv1.ClusterRole{}, bindings: map[string]*rbacv1.ClusterRoleBinding{}}
	once := func(kind string, have bool) {
		t.Helper()
		if have {
			t.Fatalf("two %s objects: the chart makes one", kind)
		}
	}
	for _, doc := range chartDocs(t, b) {
		obj := chartDecode(t, doc)
		s.all = append(s.all, obj)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			once("Deployment", s.deploy != nil)
			s.deploy = o
			s.namespaced = append(s.namespaced, o)
		case *appsv1.DaemonSet:
			once("DaemonSet", s.ds != nil)
			s.ds = o
			s.namespaced = append(s.namespaced, o)
		case *corev1.ConfigMap:
			once("ConfigMap", s.cm != nil)
			s.cm = o
			s.namespaced = append(s.namespaced, o)
		case *corev1.Service:
			once("Service", s.svc != nil)
			s.svc = o
			s.namespaced = append(s.namespaced, o)
		case *corev1.PersistentVolumeClaim:
			once("PersistentVolumeClaim", s.pvc != nil)
			s.pvc = o
			s.namespaced = append(s.namespaced, o)
		case *networkingv1.NetworkPolicy:
			once("NetworkPolicy", s.netpol != nil)
			s.netpol = o
			s.namespaced = append(s.namespaced, o)
		case *corev1.ServiceAccount:
			s.sas[o.Name] = o
			s.namespaced = append(s.namespaced, o)
		case *rbacv1.ClusterRole:
			s.roles[o.Name] = o
			s.clusterScope = append(s.clusterScope, o)
		case *rbacv1.ClusterRoleBinding:
			s.bindings[o.Name] = o
			s.clusterScope = append(s.clusterScope, o)
		case *corev1.Namespace:
			s.namespaces = append(s.namespaces, o)
			s.clusterScope = append(s.clusterScope, o)
		default:
			// A Secret above all: the chart holds no credentials.
			t.Fatalf("the chart renders a %T, which no check here knows: add the checks it needs", obj)
		}
	}
	return s
}

// chartAppVersion is Chart.yaml's appVersion, the image's default tag.
func chartAppVersion(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml: no appVersion (%v)", err)
	}
	return c.AppVersion
}

// chartCase is a set of values and what the rendering must then be.
type chartCase struct {
	name, release, namespace, values string
	// fullname names the bot's objects; the agent's are fullname-agent.
	fullname string
	tag      string // the image tag; "" is the appVersion
	// secrets: environment variable → Secret name and key.
	secrets       map[string][2]string
	payload       bool
	claim         string  // the claim the bot mounts; "" for an emptyDir
	makesClaim    bool    // the chart makes it
	storageClass  *string // the claim's storageClassName
	agentPort     int
	maxCaptures   int
	audiences     []string
	criSockets    []string
	tracefs       bool
	tlsSecret     string
	caKey         string
	tolerations   []corev1.Toleration
	botTols       []corev1.Toleration
	priorityClass string
	appArmor      string
	netpol        bool
	extraArgs     []string
	// config checks what the values put in the bot's config.
	config func(t *testing.T, c *config.Config)
}

var (
	chartDefaultSecrets = map[string][2]string{
		"NETDIAG_SLACK_BOT_TOKEN":      {"netdiag-slack", "bot-token"},
		"NETDIAG_SLACK_SIGNING_SECRET": {"netdiag-slack", "signing-secret"},
		"NETDIAG_ALERTMANAGER_BEARER":  {"netdiag-webhook", "token"},
	}
	chartDefaultCRI  = []string{"/run/containerd/containerd.sock", "/var/run/crio/crio.sock"}
	chartTolerateAll = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
)

func chartStr(s string) *string { return &s }

var chartCases = []chartCase{
	{
		name: "defaults", release: chartDefaultRelease, namespace: chartDefaultNamespace,
		fullname: "netdiag", secrets: chartDefaultSecrets,
		claim: "netdiag-data", makesClaim: true,
		agentPort: agent.DefaultPort, maxCaptures: 2, audiences: []string{agent.Audience}, criSockets: chartDefaultCRI,
		tolerations: chartTolerateAll, priorityClass: "system-node-critical", appArmor: "Unconfined", netpol: true,
		config: func(t *testing.T, c *config.Config) {
			if c.Slack.Mode != "http" || c.Slack.DefaultChannel != "#netops" || len(c.Access) != 0 || len(c.Digests) != 0 || len(c.Alertmanager.Mappings) != 0 {
				t.Errorf("config: mode %q channel %q, %d access rules, %d digests, %d mappings: want http, #netops and none of the rest",
					c.Slack.Mode, c.Slack.DefaultChannel, len(c.Access), len(c.Digests), len(c.Alertmanager.Mappings))
			}
			if c.Alertmanager.Cooldown != config.Duration(config.DefaultCooldown) || c.Diagnose.Workers != 2 {
				t.Errorf("config: cooldown %s, workers %d: want the defaults", time.Duration(c.Alertmanager.Cooldown), c.Diagnose.Workers)
			}
		},
	},
	{
		// Socket mode, no volume, payload capture, agents with a certificate,
		// some taints only, and another release in another namespace.
		name: "socket", release: "diag", namespace: "observability",
		values: `
slack:
  mode: socket
  defaultChannel: C0123456789
  botToken: {secretName: slack-bot, key: xoxb}
  appToken: {secretName: slack-app, key: xapp}
  apiURL: https://slack-proxy.example.com/api/
alertmanager:
  bearerToken: {secretName: am-hook, key: bearer}
  channel: "#alerts"
  cooldown: 30m
  mappings:
    - match: {alertname: KubeDNSDown}
      target: svc kube-system/kube-dns
    - match: {alertname: ProbeFailed}
      target: "pod {exported_namespace}/{exported_pod}"
      to: svc default/web:80
      channel: "#web"
access:
  - groups: [S0123ABCD]
    verbs: [pod, svc, node, dns, capture, capture-payload, history, digest]
    namespaces: ["*"]
  - channels: [C0999]
    verbs: [pod]
    namespaces: [shop]
digests:
  - name: morning
    schedule: "0 9 * * 1-5"
    tz: Europe/Berlin
    channel: "#netops"
    sweep: true
diagnose: {workers: 4, timeout: 3m, capture: 0s}
store: {maxAge: 720h, maxBytes: 536870912}
persistence: {enabled: false}
image: {tag: "1.2.3"}
bot:
  payloadCapture: true
  nodeSelector: {role: ops}
  tolerations:
    - {key: dedicated, operator: Equal, value: ops, effect: NoSchedule}
  extraEnv:
    - {name: HTTPS_PROXY, value: "http://proxy.example.com:3128"}
agent:
  port: 9553
  maxCaptures: 4
  tokenAudiences: [netdiag-agent, "https://kubernetes.default.svc.cluster.local"]
  criSockets: [/run/k3s/containerd/containerd.sock]
  tracefs: true
  tls: {secretName: agent-tls, caKey: ca.crt}
  tolerations:
    - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
    - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}
  extraArgs: [--scan-netns-prefix=cni-]
`,
		fullname: "diag-netdiag", tag: "1.2.3",
		secrets: map[string][2]string{
			"NETDIAG_SLACK_BOT_TOKEN":     {"slack-bot", "xoxb"},
			"NETDIAG_SLACK_APP_TOKEN":     {"slack-app", "xapp"},
			"NETDIAG_ALERTMANAGER_BEARER": {"am-hook", "bearer"},
		},
		payload:   true,
		agentPort: 9553, maxCaptures: 4, audiences: []string{agent.Audience, "https://kubernetes.default.svc.cluster.local"},
		criSockets: []string{"/run/k3s/containerd/containerd.sock"}, tracefs: true,
		tlsSecret: "agent-tls", caKey: "ca.crt",
		tolerations: []corev1.Toleration{
			{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
			{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		},
		botTols:       []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ops", Effect: corev1.TaintEffectNoSchedule}},
		priorityClass: "system-node-critical", appArmor: "Unconfined", netpol: true,
		extraArgs: []string{"--scan-netns-prefix=cni-"},
		config: func(t *testing.T, c *config.Config) {
			if c.Slack.Mode != "socket" || c.Slack.AppToken.Value() == "" || c.Slack.SigningSecret.Set() || c.Slack.APIURL != "https://slack-proxy.example.com/api/" {
				t.Errorf("config slack: mode %q, app token set %v, signing secret set %v, api_url %q", c.Slack.Mode, c.Slack.AppToken.Value() != "", c.Slack.SigningSecret.Set(), c.Slack.APIURL)
			}
			if c.Alertmanager.Channel != "#alerts" || c.Alertmanager.Cooldown != config.Duration(30*time.Minute) || len(c.Alertmanager.Mappings) != 2 ||
				c.Alertmanager.Mappings[1].To != "svc default/web:80" || c.Alertmanager.Mappings[1].Match["alertname"] != "ProbeFailed" {
				t.Errorf("config alertmanager: %+v", c.Alertmanager)
			}
			if len(c.Access) != 2 || !slices.Contains(c.Access[0].Verbs, "capture-payload") || c.Access[1].Namespaces[0] != "shop" {
				t.Errorf("config access: %+v", c.Access)
			}
			if len(c.Digests) != 1 || c.Digests[0].TZ != "Europe/Berlin" || !c.Digests[0].Sweep {
				t.Errorf("config digests: %+v", c.Digests)
			}
			if c.Diagnose.Workers != 4 || time.Duration(c.Diagnose.Timeout) != 3*time.Minute || *c.Diagnose.Capture != 0 {
				t.Errorf("config diagnose: %+v", c.Diagnose)
			}
			if time.Duration(c.Store.MaxAge) != 720*time.Hour || c.Store.MaxBytes != 512<<20 {
				t.Errorf("config store: %+v", c.Store)
			}
		},
	},
	{
		// Another name, an existing claim, no NetworkPolicy, no priority
		// class, AppArmor left to the node.
		name: "renamed", release: "ops", namespace: "netdiag-ops",
		values: `
nameOverride: nd
slack:
  signingSecret: {secretName: slack-signing, key: secret}
persistence: {existingClaim: netdiag-history}
networkPolicy: {enabled: false}
agent:
  priorityClassName: ""
  appArmorProfile: ""
  tokenAudiences: [other-audience, netdiag-agent]
`,
		fullname: "ops-nd",
		secrets: map[string][2]string{
			"NETDIAG_SLACK_BOT_TOKEN":      {"netdiag-slack", "bot-token"},
			"NETDIAG_SLACK_SIGNING_SECRET": {"slack-signing", "secret"},
			"NETDIAG_ALERTMANAGER_BEARER":  {"netdiag-webhook", "token"},
		},
		claim:     "netdiag-history",
		agentPort: agent.DefaultPort, maxCaptures: 2, audiences: []string{"other-audience", agent.Audience}, criSockets: chartDefaultCRI,
		tolerations: chartTolerateAll,
	},
	{
		name: "storage class", release: "netdiag", namespace: "netdiag",
		values:   "persistence: {storageClass: fast, size: 10Gi}\n",
		fullname: "netdiag", secrets: chartDefaultSecrets,
		claim: "netdiag-data", makesClaim: true, storageClass: chartStr("fast"),
		agentPort: agent.DefaultPort, maxCaptures: 2, audiences: []string{agent.Audience}, criSockets: chartDefaultCRI,
		tolerations: chartTolerateAll, priorityClass: "system-node-critical", appArmor: "Unconfined", netpol: true,
	},
	{
		name: "no storage class", release: "netdiag", namespace: "netdiag",
		values:   "persistence: {storageClass: \"-\"}\n",
		fullname: "netdiag", secrets: chartDefaultSecrets,
		claim: "netdiag-data", makesClaim: true, storageClass: chartStr(""),
		agentPort: agent.DefaultPort, maxCaptures: 2, audiences: []string{agent.Audience}, criSockets: chartDefaultCRI,
		tolerations: chartTolerateAll, priorityClass: "system-node-critical", appArmor: "Unconfined", netpol: true,
	},
}

func TestChartLint(t *testing.T) {
	helm := chartHelm(t)
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", c.namespace, "--kube-version", chartKubeVersion}
			if c.values != "" {
				f := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(c.values), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--values", f)
			}
			out, err := exec.Command(helm, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestChartStrictDecoding shows that the decoder the other tests use
// refuses a misspelt field, so that their passing means something.
func TestChartStrictDecoding(t *testing.T) {
	bad := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n")
	if _, _, err := chartSerializer.Decode(bad, nil, nil); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("a Deployment with spec.replica decoded without an error naming it: %v", err)
	}
}

func TestChartRender(t *testing.T) {
	helm := chartHelm(t)
	appVersion := chartAppVersion(t)
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			out, err := chartTemplate(t, helm, c.release, c.namespace, c.values, chartDir)
			if err != nil {
				t.Fatal(err)
			}
			s := chartParse(t, out)
			if s.deploy == nil || s.ds == nil || s.cm == nil || s.svc == nil {
				t.Fatalf("the rendering lacks the Deployment, DaemonSet, ConfigMap or Service")
			}
			if len(s.namespaces) > 0 {
				t.Errorf("the chart renders a Namespace: leave it to helm install --create-namespace")
			}
			tag := c.tag
			if tag == "" {
				tag = appVersion
			}
			chartCheckNames(t, c, s)
			cfg := chartCheckBot(t, c, s, chartImageRepository+":"+tag)
			chartCheckAgent(t, c, s, chartImageRepository+":"+tag)
			chartCheckWiring(t, c, s, cfg)
			chartCheckRBAC(t, s, c.payload)
			chartCheckNetworkPolicy(t, c, s)
			if c.config != nil {
				c.config(t, cfg)
			}
		})
	}
}

func chartCheckNames(t *testing.T, c chartCase, s *chartSet) {
	for _, o := range s.namespaced {
		if o.GetNamespace() != c.namespace {
			t.Errorf("%s: namespace %q, want the release's %q", o.GetName(), o.GetNamespace(), c.namespace)
		}
	}
	for _, o := range slices.Concat(s.namespaced, s.clusterScope) {
		if o.GetLabels()["app.kubernetes.io/instance"] != c.release {
			t.Errorf("%s: label app.kubernetes.io/instance %q, want %q", o.GetName(), o.GetLabels()["app.kubernetes.io/instance"], c.release)
		}
	}
	agentName := c.fullname + "-agent"
	if s.deploy.Name != c.fullname || s.svc.Name != c.fullname || s.cm.Name != c.fullname {
		t.Errorf("the bot's Deployment, Service and ConfigMap are %s, %s, %s: want %s", s.deploy.Name, s.svc.Name, s.cm.Name, c.fullname)
	}
	if s.ds.Name != agentName {
		t.Errorf("DaemonSet %s, want %s", s.ds.Name, agentName)
	}
	if s.sas[c.fullname] == nil || s.sas[agentName] == nil || len(s.sas) != 2 {
		t.Errorf("ServiceAccounts %v: want %s and %s", slices.Sorted(maps.Keys(s.sas)), c.fullname, agentName)
	}
}

// chartEnv is the environment a container gets: Secrets with made-up
// values (an app token must look like one), field references with a node.
func chartEnv(t *testing.T, ctr corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil && e.Name == "NETDIAG_SLACK_APP_TOKEN":
			env[e.Name] = "xapp-1-from-secret"
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "from-secret-" + e.ValueFrom.SecretKeyRef.Name
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = "node-a"
		default:
			t.Errorf("%s: env %s comes from %+v, which the test cannot stand in for", ctr.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// chartMount is the container's mount of the volume, and the volume.
func chartMount(pod corev1.PodSpec, ctr corev1.Container, volume string) (*corev1.VolumeMount, *corev1.Volume) {
	var m *corev1.VolumeMount
	for i := range ctr.VolumeMounts {
		if ctr.VolumeMounts[i].Name == volume {
			m = &ctr.VolumeMounts[i]
		}
	}
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == volume {
			return m, &pod.Volumes[i]
		}
	}
	return m, nil
}

// chartMountOf is the mount whose path holds file, and its volume.
func chartMountOf(pod corev1.PodSpec, ctr corev1.Container, file string) (*corev1.VolumeMount, *corev1.Volume) {
	var best *corev1.VolumeMount
	for i, m := range ctr.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &ctr.VolumeMounts[i]
		}
	}
	if best == nil {
		return nil, nil
	}
	_, v := chartMount(pod, ctr, best.Name)
	return best, v
}

func chartContainer(t *testing.T, kind string, pod corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers, want one container", kind, len(pod.Containers), len(pod.InitContainers))
	}
	return pod.Containers[0]
}

// chartCheckBot checks the bot's Deployment and returns the config it
// loads, parsed by netdiag's own loader with the environment the pod gets.
func chartCheckBot(t *testing.T, c chartCase, s *chartSet, image string) *config.Config {
	d := s.deploy
	pod := d.Spec.Template.Spec
	ctr := chartContainer(t, "Deployment", pod)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("Deployment: replicas %v, strategy %q: bbolt has one writer, so one replica replaced with Recreate", d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	if ctr.Image != image || !slices.Equal(ctr.Command, []string{chartBotBinary}) {
		t.Errorf("bot: image %s command %v, want %s and [%s]", ctr.Image, ctr.Command, image, chartBotBinary)
	}
	if !reflect.DeepEqual(pod.Tolerations, c.botTols) {
		t.Errorf("bot tolerations %+v, want %+v", pod.Tolerations, c.botTols)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("bot: enableServiceLinks must be false: Services' variables would land among the NETDIAG_* overrides")
	}

	// Non-root, nothing to escalate to, nothing on the host.
	psc, sc := pod.SecurityContext, ctr.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("bot: no security context")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != chartBotUID ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("bot pod security context %+v: want runAsNonRoot, runAsUser %d, seccomp RuntimeDefault", psc, chartBotUID)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		(sc.Privileged != nil && *sc.Privileged) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 || (sc.RunAsUser != nil && *sc.RunAsUser == 0) {
		t.Errorf("bot container security context %+v: want no privilege escalation, a read-only root, ALL capabilities dropped and none added", sc)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("bot: host namespaces")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("bot: hostPath volume %s", v.Name)
		}
		// The one Secret the bot may mount is the agents' CA, alone.
		if v.Secret != nil && (v.Secret.SecretName != c.tlsSecret || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != c.caKey) {
			t.Errorf("bot: Secret volume %s %+v: the bot mounts only the agents' CA (agent.tls.caKey)", v.Name, v.Secret)
		}
	}

	// Probes on the port the config listens on.
	port := chartPort(t, ctr, "http")
	for name, p := range map[string]*corev1.Probe{"liveness": ctr.LivenessProbe, "readiness": ctr.ReadinessProbe, "startup": ctr.StartupProbe} {
		want := "/healthz"
		if name == "readiness" {
			want = "/readyz"
		}
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "http" {
			t.Errorf("bot %s probe %+v: want GET %s on port http", name, p, want)
		}
	}

	// The Secrets, each as the environment variable the config reads.
	got := map[string][2]string{}
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			got[e.Name] = [2]string{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key}
		}
	}
	if !reflect.DeepEqual(got, c.secrets) {
		t.Errorf("bot Secrets %v, want %v", got, c.secrets)
	}

	// The config: netdiag serve --config FILE, FILE from the ConfigMap.
	if len(ctr.Args) != 3 || ctr.Args[0] != "serve" || ctr.Args[1] != "--config" {
		t.Fatalf("bot args %q, want serve --config FILE", ctr.Args)
	}
	file := ctr.Args[2]
	m, v := chartMountOf(pod, ctr, file)
	if m == nil || v == nil || v.ConfigMap == nil || v.ConfigMap.Name != s.cm.Name || !m.ReadOnly {
		t.Fatalf("bot: %s is not in a read-only mount of ConfigMap %s", file, s.cm.Name)
	}
	data, ok := s.cm.Data[strings.TrimPrefix(file, m.MountPath+"/")]
	if !ok {
		t.Fatalf("ConfigMap %s has no key for %s (keys: %v)", s.cm.Name, file, slices.Sorted(maps.Keys(s.cm.Data)))
	}
	env := chartEnv(t, ctr)
	cfg, err := config.Parse([]byte(data), func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("netdiag's loader refuses the ConfigMap's config with the pod's environment: %v\n%s", err, data)
	}
	if _, p, _ := net.SplitHostPort(cfg.Listen); p != strconv.Itoa(port) {
		t.Errorf("config listen %s, container port http %d", cfg.Listen, port)
	}
	if s.svc.Spec.Ports[0].TargetPort.String() != "http" || len(s.svc.Spec.Ports) != 1 {
		t.Errorf("Service ports %+v: want one, to port http", s.svc.Spec.Ports)
	}
	sel := labels.SelectorFromSet(s.svc.Spec.Selector)
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) || sel.Matches(labels.Set(s.ds.Spec.Template.Labels)) {
		t.Errorf("Service selector %s: must select the bot's pods and not the agents'", sel)
	}

	// The store on the claim, or on an emptyDir.
	m, v = chartMountOf(pod, ctr, cfg.Store.Path)
	switch {
	case m == nil || v == nil || m.ReadOnly:
		t.Errorf("bot: the store %s is on no writable volume", cfg.Store.Path)
	case c.claim != "" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != c.claim):
		t.Errorf("bot: the store's volume %+v, want claim %s", v.VolumeSource, c.claim)
	case c.claim == "" && v.EmptyDir == nil:
		t.Errorf("bot: the store's volume %+v, want an emptyDir (persistence off)", v.VolumeSource)
	}
	switch {
	case c.makesClaim && (s.pvc == nil || s.pvc.Name != c.claim):
		t.Errorf("PersistentVolumeClaim %v, want %s", s.pvc, c.claim)
	case !c.makesClaim && s.pvc != nil:
		t.Errorf("PersistentVolumeClaim %s made, want none", s.pvc.Name)
	case s.pvc != nil && !reflect.DeepEqual(s.pvc.Spec.StorageClassName, c.storageClass):
		t.Errorf("PersistentVolumeClaim storageClassName %v, want %v", s.pvc.Spec.StorageClassName, c.storageClass)
	}

	// The agents' token: projected, for the agents' audience only.
	m, v = chartMountOf(pod, ctr, cfg.Agents.TokenFile)
	if m == nil || v == nil || v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("bot: agents.token_file %s is not a projected ServiceAccount token", cfg.Agents.TokenFile)
	}
	if tok := v.Projected.Sources[0].ServiceAccountToken; tok.Audience != agent.Audience || tok.Path != path.Base(cfg.Agents.TokenFile) {
		t.Errorf("bot: projected token %+v, want audience %s at %s", tok, agent.Audience, cfg.Agents.TokenFile)
	}
	if pod.ServiceAccountName != c.fullname {
		t.Errorf("bot: ServiceAccount %s, want %s", pod.ServiceAccountName, c.fullname)
	}

	// The agents' CA, when given, is the Secret's CA key alone.
	if c.caKey == "" {
		if cfg.Agents.CAFile != "" {
			t.Errorf("config agents.ca_file %s with no agent.tls.caKey", cfg.Agents.CAFile)
		}
	} else {
		m, v := chartMountOf(pod, ctr, cfg.Agents.CAFile)
		if m == nil || v == nil || v.Secret == nil || v.Secret.SecretName != c.tlsSecret || path.Base(cfg.Agents.CAFile) != v.Secret.Items[0].Path {
			t.Errorf("bot: agents.ca_file %s is not Secret %s's %s", cfg.Agents.CAFile, c.tlsSecret, c.caKey)
		}
	}
	if dl := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; dl < time.Duration(cfg.Diagnose.Timeout) {
		t.Errorf("bot: terminationGracePeriodSeconds %s is under diagnose.timeout %s: a stopping bot lets diagnoses finish", dl, time.Duration(cfg.Diagnose.Timeout))
	}
	return cfg
}

func chartPort(t *testing.T, ctr corev1.Container, name string) int {
	t.Helper()
	for _, p := range ctr.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("%s: no port %s", ctr.Name, name)
	return 0
}

// chartExpand expands $(VAR) in a container's args as the kubelet does.
func chartExpand(t *testing.T, arg string, env map[string]string) string {
	t.Helper()
	return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(arg, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := env[name]
		if !ok {
			t.Errorf("arg %q names $(%s), which the container's env does not set", arg, name)
		}
		return v
	})
}

func chartCheckAgent(t *testing.T, c chartCase, s *chartSet, image string) {
	ds := s.ds
	pod := ds.Spec.Template.Spec
	ctr := chartContainer(t, "DaemonSet", pod)
	if ctr.Image != image || !slices.Equal(ctr.Command, []string{chartAgentBinary}) {
		t.Errorf("agent: image %s command %v, want %s and [%s]", ctr.Image, ctr.Command, image, chartAgentBinary)
	}
	if !pod.HostNetwork || !pod.HostPID || pod.HostIPC || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("agent: hostNetwork %v hostPID %v hostIPC %v dnsPolicy %s: want the host's network and PIDs, ClusterFirstWithHostNet", pod.HostNetwork, pod.HostPID, pod.HostIPC, pod.DNSPolicy)
	}
	if pod.PriorityClassName != c.priorityClass {
		t.Errorf("agent: priorityClassName %q, want %q", pod.PriorityClassName, c.priorityClass)
	}
	if !reflect.DeepEqual(pod.Tolerations, c.tolerations) {
		t.Errorf("agent tolerations %+v, want %+v", pod.Tolerations, c.tolerations)
	}
	if pod.ServiceAccountName != c.fullname+"-agent" {
		t.Errorf("agent: ServiceAccount %s, want %s-agent", pod.ServiceAccountName, c.fullname)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not select its pods (%v)", ds.Spec.Selector, err)
	}

	// Root but not privileged: exactly the listed capabilities.
	sc := ctr.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("agent security context %+v: want privileged: false and capabilities", sc)
	}
	var added []string
	for _, a := range sc.Capabilities.Add {
		added = append(added, string(a))
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(added, chartAgentCapabilities) {
		t.Errorf("agent capabilities: drop %v add %v, want drop [ALL] add exactly %v", sc.Capabilities.Drop, added, chartAgentCapabilities)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("agent: runAsUser %v readOnlyRootFilesystem %v: want 0 (the agent refuses to start otherwise) and a read-only root", sc.RunAsUser, sc.ReadOnlyRootFilesystem)
	}
	gotAA := ""
	if sc.AppArmorProfile != nil {
		gotAA = string(sc.AppArmorProfile.Type)
	}
	if gotAA != c.appArmor {
		t.Errorf("agent AppArmor profile %q, want %q", gotAA, c.appArmor)
	}
	if psc := pod.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("agent: want seccomp RuntimeDefault")
	}
	if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("agent env %+v: want NODE_NAME from spec.nodeName", ctr.Env)
	}

	// The args, expanded as the kubelet will, taken by the agent's own flag
	// parser: --help after them stops it before it starts anything, and
	// only once every flag before it parsed.
	env := chartEnv(t, ctr)
	var args []string
	flags := map[string][]string{}
	for _, a := range ctr.Args {
		a = chartExpand(t, a, env)
		args = append(args, a)
		name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("agent arg %q: write --flag=value", a)
		}
		flags[name] = append(flags[name], value)
	}
	if code := chartAgentFlags(append(slices.Clone(args), "--help")); code != 0 {
		t.Errorf("netdiag-agent %s --help: exit %d: the agent's flag set refuses the chart's args", strings.Join(args, " "), code)
	}
	one := func(name string) string {
		t.Helper()
		if len(flags[name]) != 1 {
			t.Errorf("agent: --%s given %d times, want once", name, len(flags[name]))
			return ""
		}
		return flags[name][0]
	}
	if v := one("node"); v != "node-a" {
		t.Errorf("agent --node=%s, want the node's name from NODE_NAME", v)
	}
	port := chartPort(t, ctr, "https")
	if _, p, _ := net.SplitHostPort(one("listen")); p != strconv.Itoa(c.agentPort) || port != c.agentPort {
		t.Errorf("agent --listen=%s, container port %d, want port %d", one("listen"), port, c.agentPort)
	}
	if v := one("max-captures"); v != strconv.Itoa(c.maxCaptures) {
		t.Errorf("agent --max-captures=%s, want %d", v, c.maxCaptures)
	}
	if !slices.Equal(flags["token-audience"], c.audiences) || !slices.Contains(flags["token-audience"], agent.Audience) {
		t.Errorf("agent --token-audience %v, want %v (with %s, the bot's)", flags["token-audience"], c.audiences, agent.Audience)
	}
	if !slices.Equal(flags["cri-socket"], c.criSockets) {
		t.Errorf("agent --cri-socket %v, want %v", flags["cri-socket"], c.criSockets)
	}
	for _, p := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe} {
		// The one call the agent answers without a token.
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != agent.PathHealth || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
			t.Errorf("agent probe %+v: want GET %s over HTTPS on port https", p, agent.PathHealth)
		}
	}
	for _, x := range c.extraArgs {
		if !slices.Contains(args, x) {
			t.Errorf("agent args %q lack %s (agent.extraArgs)", args, x)
		}
	}

	// The host's paths: only these, each where the agent looks.
	want := map[string]string{"/run/netns": "/run/netns", "/sys/fs/cgroup": one("cgroup-root")}
	for _, sock := range c.criSockets {
		want[path.Dir(sock)] = path.Dir(sock)
	}
	if c.tracefs {
		want["/sys/kernel/tracing"] = "/sys/kernel/tracing"
	}
	seen := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		seen[v.HostPath.Path] = true
		at, ok := want[v.HostPath.Path]
		m, _ := chartMount(pod, ctr, v.Name)
		switch {
		case !ok:
			t.Errorf("agent: hostPath %s is not one the agent needs", v.HostPath.Path)
		case m == nil || m.MountPath != at:
			t.Errorf("agent: hostPath %s mounted at %v, want %s", v.HostPath.Path, m, at)
		case m.ReadOnly == (v.HostPath.Path == "/sys/kernel/tracing"):
			t.Errorf("agent: hostPath %s read-only %v: only tracefs is written", v.HostPath.Path, m.ReadOnly)
		case v.HostPath.Path == "/run/netns" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer):
			t.Errorf("agent: /run/netns needs mountPropagation HostToContainer to see namespaces made after the agent started")
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("agent: no hostPath %s", p)
		}
	}

	// The serving certificate, when given, from the Secret.
	if c.tlsSecret == "" {
		if len(flags["tls-cert"])+len(flags["tls-key"]) != 0 {
			t.Errorf("agent: --tls-cert/--tls-key without agent.tls.secretName")
		}
	} else {
		for _, f := range []string{one("tls-cert"), one("tls-key")} {
			m, v := chartMountOf(pod, ctr, f)
			if m == nil || v == nil || v.Secret == nil || v.Secret.SecretName != c.tlsSecret {
				t.Errorf("agent: %s is not from Secret %s", f, c.tlsSecret)
			}
		}
	}
}

// chartAgentFlags runs the agent's command line on args and returns its
// exit code.
func chartAgentFlags(args []string) int {
	return agentcmd.Run(args, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
}

// TestChartAgentFlagCheck shows that the way TestChartRender checks the
// agent's args catches a flag the agent does not have.
func TestChartAgentFlagCheck(t *testing.T) {
	if code := chartAgentFlags([]string{"--node=a", "--max-capture=2", "--help"}); code == 0 {
		t.Fatal("--max-capture (misspelt) then --help: exit 0, so the check would not catch a bad flag")
	}
	if code := chartAgentFlags([]string{"--node=a", "--max-captures=2", "--help"}); code != 0 {
		t.Fatalf("good flags then --help: exit %d", code)
	}
}

// chartCheckWiring checks what ties the bot to the agents: the config's
// agents section is the DaemonSet.
func chartCheckWiring(t *testing.T, c chartCase, s *chartSet, cfg *config.Config) {
	a := cfg.Agents
	if a.Namespace != s.ds.Namespace {
		t.Errorf("config agents.namespace %s, DaemonSet in %s", a.Namespace, s.ds.Namespace)
	}
	sel, err := labels.Parse(a.Selector)
	if err != nil {
		t.Fatalf("config agents.selector %q: %v", a.Selector, err)
	}
	if !sel.Matches(labels.Set(s.ds.Spec.Template.Labels)) {
		t.Errorf("config agents.selector %s does not select the DaemonSet's pods %v", sel, s.ds.Spec.Template.Labels)
	}
	if sel.Matches(labels.Set(s.deploy.Spec.Template.Labels)) {
		t.Errorf("config agents.selector %s selects the bot's pods", sel)
	}
	if a.Port != c.agentPort {
		t.Errorf("config agents.port %d, agents listen on %d", a.Port, c.agentPort)
	}
}

// chartRules lists a role's permissions, one: group/resource[/subresource]:verb.
func chartRules(r *rbacv1.ClusterRole) []string {
	var out []string
	for _, rule := range r.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					out = append(out, g+"/"+res+":"+v)
				}
			}
		}
		for _, u := range rule.NonResourceURLs {
			out = append(out, "url:"+u)
		}
		if len(rule.ResourceNames) > 0 {
			out = append(out, "names:"+strings.Join(rule.ResourceNames, ","))
		}
	}
	slices.Sort(out)
	return out
}

func chartCheckRBAC(t *testing.T, s *chartSet, payload bool) {
	bot, agentSA := s.deploy.Spec.Template.Spec.ServiceAccountName, s.ds.Spec.Template.Spec.ServiceAccountName
	var botWant []string
	for _, r := range chartBotReads {
		for _, v := range []string{"get", "list", "watch"} {
			botWant = append(botWant, r+":"+v)
		}
	}
	botWant = append(botWant, agent.ResourceGroup+"/"+agent.Resource+":"+agent.Verb)
	if payload {
		botWant = append(botWant, agent.ResourceGroup+"/"+agent.Resource+"/"+agent.SubPayload+":"+agent.Verb)
	}
	slices.Sort(botWant)
	agentWant := []string{"/pods:get", "authentication.k8s.io/tokenreviews:create", "authorization.k8s.io/subjectaccessreviews:create"}
	slices.Sort(agentWant)

	bound := map[string]string{} // ServiceAccount → its ClusterRole
	for _, b := range s.bindings {
		if b.RoleRef.Kind != "ClusterRole" || s.roles[b.RoleRef.Name] == nil {
			t.Errorf("ClusterRoleBinding %s binds %s %s, not one of the chart's ClusterRoles", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
			continue
		}
		for _, sub := range b.Subjects {
			if sub.Kind != "ServiceAccount" || sub.Namespace != s.ds.Namespace || s.sas[sub.Name] == nil {
				t.Errorf("ClusterRoleBinding %s: subject %+v is not one of the chart's ServiceAccounts", b.Name, sub)
				continue
			}
			if prev, dup := bound[sub.Name]; dup {
				t.Errorf("ServiceAccount %s bound to %s and %s", sub.Name, prev, b.RoleRef.Name)
			}
			bound[sub.Name] = b.RoleRef.Name
		}
	}
	for _, r := range s.roles {
		for _, p := range chartRules(r) {
			if strings.Contains(p, "*") || strings.Contains(p, "secrets") || strings.Contains(p, "/exec") || strings.Contains(p, "/attach") ||
				strings.Contains(p, "portforward") || strings.HasPrefix(p, "url:") || strings.Contains(p, "escalate") || strings.Contains(p, "impersonate") {
				t.Errorf("ClusterRole %s grants %s", r.Name, p)
			}
		}
	}
	check := func(sa string, want []string) {
		t.Helper()
		role := s.roles[bound[sa]]
		if role == nil {
			t.Errorf("ServiceAccount %s is bound to no ClusterRole of the chart", sa)
			return
		}
		if got := chartRules(role); !slices.Equal(got, want) {
			t.Errorf("ClusterRole %s (for %s) grants\n  %v\nwant exactly\n  %v", role.Name, sa, got, want)
		}
	}
	check(bot, botWant)
	check(agentSA, agentWant)
	if len(s.roles) != 2 || len(s.bindings) != 2 {
		t.Errorf("%d ClusterRoles and %d bindings, want one each for the bot and the agent", len(s.roles), len(s.bindings))
	}
}

func chartCheckNetworkPolicy(t *testing.T, c chartCase, s *chartSet) {
	if !c.netpol {
		if s.netpol != nil {
			t.Errorf("NetworkPolicy %s rendered with networkPolicy.enabled false", s.netpol.Name)
		}
		return
	}
	np := s.netpol
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || !sel.Matches(labels.Set(s.ds.Spec.Template.Labels)) || sel.Matches(labels.Set(s.deploy.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy podSelector %s: must select the agents and not the bot (%v)", sel, err)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 1 {
		t.Fatalf("NetworkPolicy: policy types %v, %d ingress rules: want Ingress with one rule", np.Spec.PolicyTypes, len(np.Spec.Ingress))
	}
	in := np.Spec.Ingress[0]
	if len(in.From) != 1 || in.From[0].PodSelector == nil || in.From[0].NamespaceSelector != nil || in.From[0].IPBlock != nil {
		t.Fatalf("NetworkPolicy from %+v: want the bot's pods of the same namespace only", in.From)
	}
	from, err := metav1.LabelSelectorAsSelector(in.From[0].PodSelector)
	if err != nil || !from.Matches(labels.Set(s.deploy.Spec.Template.Labels)) || from.Matches(labels.Set(s.ds.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy admits %s: want the bot's pods only", from)
	}
	if len(in.Ports) != 1 || in.Ports[0].Port == nil || in.Ports[0].Port.IntValue() != c.agentPort || in.Ports[0].Protocol == nil || *in.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("NetworkPolicy ports %+v, want TCP %d", in.Ports, c.agentPort)
	}
}

// TestChartBadValues: a value of the wrong type, a key the chart does not
// have or a value it does not take fails helm template, naming it.
func TestChartBadValues(t *testing.T) {
	helm := chartHelm(t)
	for _, c := range []struct{ name, values, want string }{
		{"port as string", `agent: {port: "9443"}`, "at '/agent/port': got string, want integer"},
		{"misspelt key", `agent: {maxCapture: 4}`, "additional properties 'maxCapture' not allowed"},
		{"misspelt section", `persistance: {enabled: false}`, "additional properties 'persistance' not allowed"},
		{"unknown mode", `slack: {mode: websocket}`, "at '/slack/mode': value must be one of 'http', 'socket'"},
		{"boolean as string", `persistence: {enabled: "no"}`, "at '/persistence/enabled': got string, want boolean"},
		{"captures out of range", `agent: {maxCaptures: 32}`, "at '/agent/maxCaptures'"},
		{"unknown verb", `access: [{users: [U1], verbs: [exec], namespaces: ["*"]}]`, "at '/access/0/verbs/0'"},
		{"rule for no one", `access: [{verbs: [pod], namespaces: ["*"]}]`, "at '/access/0'"},
		{"bad duration", `diagnose: {timeout: 2 minutes}`, "at '/diagnose/timeout'"},
		{"socket without app token", `slack: {mode: socket, appToken: {secretName: "", key: app-token}}`, "at '/slack/appToken/secretName'"},
		{"http without signing secret", `slack: {signingSecret: {secretName: "", key: x}}`, "at '/slack/signingSecret/secretName'"},
		{"no bearer token", `alertmanager: {bearerToken: {secretName: "", key: token}}`, "at '/alertmanager/bearerToken/secretName'"},
		{"audience without the bot's", `agent: {tokenAudiences: [other]}`, "at '/agent/tokenAudiences'"},
		{"relative socket", `agent: {criSockets: [containerd.sock]}`, "at '/agent/criSockets/0'"},
		{"misspelt toleration", `agent: {tolerations: [{operator: Exists, efect: NoSchedule}]}`, "additional properties 'efect' not allowed"},
		{"misspelt mapping", `alertmanager: {mappings: [{match: {a: b}, taget: "node x"}]}`, "additional properties 'taget' not allowed"},
		{"CA without a Secret", `agent: {tls: {caKey: ca.crt}}`, "agent.tls.caKey is set but agent.tls.secretName is empty"},
		{"claim without persistence", `persistence: {enabled: false, existingClaim: x}`, "persistence.existingClaim is set but persistence.enabled is false"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := chartTemplate(t, helm, chartDefaultRelease, chartDefaultNamespace, c.values+"\n", chartDir)
			if err == nil {
				t.Fatalf("helm template took %s:\n%.400s", c.values, out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("helm template with %s failed without saying %q:\n%v", c.values, c.want, err)
			}
		})
	}
}

// TestChartSchemaVerbs: the schema takes the verbs netdiag's config takes.
func TestChartSchemaVerbs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Schema      string `json:"$schema"`
		Definitions struct {
			AccessRule struct {
				Properties struct {
					Verbs struct {
						Items struct {
							Enum []string `json:"enum"`
						} `json:"items"`
					} `json:"verbs"`
				} `json:"properties"`
			} `json:"accessRule"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	if schema.Schema != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema %q, want draft-07", schema.Schema)
	}
	if got := schema.Definitions.AccessRule.Properties.Verbs.Items.Enum; !slices.Equal(got, config.Verbs) {
		t.Errorf("values.schema.json access verbs %v, config.Verbs %v", got, config.Verbs)
	}
}

// TestChartValuesDocumented: every value in values.yaml has a comment of
// its own. A section (a key holding more keys) needs none; a key whose value
// is a list or an object given as a whole (resources, tolerations) does.
func TestChartValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml3.Node
	if err := yaml3.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	// Sections whose keys are the values: everything else that is a
	// mapping is a value in itself (a Kubernetes object).
	sections := map[string]bool{"": true, "image": true, "slack": true, "slack.botToken": true, "slack.signingSecret": true, "slack.appToken": true,
		"alertmanager": true, "alertmanager.bearerToken": true, "diagnose": true, "store": true, "persistence": true,
		"bot": true, "bot.service": true, "agent": true, "agent.tls": true, "networkPolicy": true}
	var walk func(prefix string, n *yaml3.Node)
	walk = func(prefix string, n *yaml3.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			name := strings.TrimPrefix(prefix+"."+k.Value, ".")
			if v.Kind == yaml3.MappingNode && sections[name] {
				walk(name, v)
				continue
			}
			if strings.TrimSpace(k.HeadComment) == "" {
				t.Errorf("values.yaml line %d: %s has no comment above it", k.Line, name)
			}
		}
	}
	walk("", doc.Content[0])
}

// chartNotes renders NOTES.txt, which helm template leaves out: a copy of
// the chart gets a template that renders it through tpl.
func chartNotes(t *testing.T, helm, values string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netdiag")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "templates", "NOTES.txt"), filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	tpl := "notes: {{ tpl (.Files.Get \"notes.txt\") . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes.yaml"), []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := chartTemplate(t, helm, chartDefaultRelease, chartDefaultNamespace, values, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range chartDocs(t, out) {
		var n struct {
			Notes *string `json:"notes"`
		}
		if err := yaml.Unmarshal(doc, &n); err == nil && n.Notes != nil {
			return *n.Notes
		}
	}
	t.Fatal("no rendered notes")
	return ""
}

func TestChartNotes(t *testing.T) {
	helm := chartHelm(t)
	notes := chartNotes(t, helm, "")
	for _, want := range []string{
		webhookURL,
		"Secret netdiag-webhook, key token",
		"Secret netdiag-slack, key signing-secret",
		"most CNIs do NOT enforce\n   NetworkPolicy",
		"TokenReview",
		"SubjectAccessReview",
		"With none, the bot refuses every",
		"pod-security.kubernetes.io/enforce=privileged",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "LOSES") || strings.Contains(notes, "WARNING") {
		t.Errorf("NOTES warn with the defaults:\n%s", notes)
	}
	notes = chartNotes(t, helm, `
persistence: {enabled: false}
slack: {mode: socket}
access: [{users: [U1], verbs: [capture-payload], namespaces: ["*"]}]
`)
	for _, want := range []string{"LOSES", "bot.payloadCapture is\n   false", "key app-token", "socket mode"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES without persistence, in socket mode and with capture-payload lack %q:\n%s", want, notes)
		}
	}
}

// TestChartManifests: deploy/manifests is the chart rendered by
// scripts/render-manifests now, and its Namespace admits the agents.
func TestChartManifests(t *testing.T) {
	helm := chartHelm(t)
	fresh := t.TempDir()
	cmd := exec.Command("bash", chartRenderScript, fresh)
	cmd.Env = append(os.Environ(), "HELM="+helm)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", chartRenderScript, err, out)
	}
	t.Logf("scripts/render-manifests took %s", time.Since(start).Round(time.Millisecond))
	want, err := os.ReadDir(fresh)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadDir(chartManifestsDir)
	if err != nil {
		t.Fatalf("%v: run scripts/render-manifests", err)
	}
	names := func(es []os.DirEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	if !slices.Equal(names(have), names(want)) {
		t.Errorf("deploy/manifests holds %v, scripts/render-manifests writes %v", names(have), names(want))
	}
	for _, e := range want {
		a, err := os.ReadFile(filepath.Join(fresh, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(chartManifestsDir, e.Name()))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("deploy/manifests/%s is not the chart's rendering (%v): run scripts/render-manifests", e.Name(), err)
		}
	}
	ns := chartParse(t, chartReadFile(t, filepath.Join(chartManifestsDir, "namespace.yaml")))
	if len(ns.all) != 1 || len(ns.namespaces) != 1 || ns.namespaces[0].Name != chartDefaultNamespace ||
		ns.namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace.yaml: want the Namespace %s alone, labelled for Pod Security's privileged level", chartDefaultNamespace)
	}
	m := chartParse(t, chartReadFile(t, filepath.Join(chartManifestsDir, "netdiag.yaml")))
	for _, o := range m.namespaced {
		if o.GetNamespace() != chartDefaultNamespace {
			t.Errorf("netdiag.yaml: %s in namespace %q", o.GetName(), o.GetNamespace())
		}
	}
}

func chartReadFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
