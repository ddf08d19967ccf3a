package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/collectors/podns"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/lab/labtest"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// secured is one agent for node-a on a real API server, whose pod lookups
// are counted: a refused call must not have looked for anything.
type secured struct {
	url    string
	client *http.Client
	finds  atomic.Int32
	kube   *kubetest.Cluster
}

func newSecured(t *testing.T) *secured {
	t.Helper()
	b := labtest.NewBare(t, "asec", "web", "other")
	b.Link("web", "eth0", []string{"198.18.50.2/24"}, "other", "eth0", []string{"198.18.50.3/24"}, 1500)
	kc := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := kc.Clientset()
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ name, node, ip string }{{"web", "node-a", "198.18.50.2"}, {"other", "node-b", "198.18.50.3"}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: p.name},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "c", Image: "c"}}}}
		created, err := admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}}
		if _, err := admin.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	api := apiClient(t, kc)
	s := &secured{kube: kc}
	finder := podns.Finder{CRISockets: []string{}, ScanPrefix: b.Name("")}
	srv, err := agent.New(agent.Config{Node: "node-a", Auth: &agent.KubeAuth{Client: api}, Pods: agent.APIPods{Client: api}, NodeNetns: b.Path("other"),
		FindPod: func(ctx context.Context, p podns.PodRef) (*podns.Found, error) {
			s.finds.Add(1)
			return finder.Find(ctx, p)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS()
	t.Cleanup(func() { ts.Close(); srv.Close() })
	s.url, s.client = ts.URL, ts.Client()
	return s
}

func webPart() *diagnose.Part {
	return &diagnose.Part{Node: "node-a",
		Places: map[collectors.Scope]diagnose.Place{collectors.ScopeSource: {Node: "node-a", Pod: &diagnose.Pod{Namespace: "default", Name: "web", IP: netip.MustParseAddr("198.18.50.2")}}},
		Jobs:   []collectors.Job{{Collector: "links", Scope: collectors.ScopeSource}},
		Params: &collectors.Params{}}
}

func (s *secured) post(t *testing.T, path, token string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestAgentSecurity: every refused call is refused before anything runs
// on the node, with a status and a message that say why.
func TestAgentSecurity(t *testing.T) {
	s := newSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bot := grant(t, ctx, s.kube, "sec-bot", true)
	nobody := grant(t, ctx, s.kube, "sec-nobody", false)
	apiAudience, err := s.kube.ServiceAccountToken(ctx, "default", "sec-bot", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Allowed in namespace "elsewhere" only, and without payload.
	elsewhere := grantNamespace(t, ctx, s.kube, "sec-elsewhere", "elsewhere")

	with := func(f func(p *diagnose.Part)) []byte {
		p := webPart()
		f(p)
		return mustJSON(p)
	}
	good := mustJSON(webPart())
	for _, tc := range []struct {
		name   string
		path   string
		token  string
		body   []byte
		status int
		says   string
	}{
		{"no token", agent.PathRun, "", good, 401, "no bearer token"},
		{"a wrong token", agent.PathRun, "not-a-token", good, 401, "token rejected"},
		{"a token for the API server, not the agents", agent.PathRun, apiAudience, good, 401, "audience netdiag-agent"},
		{"an account without the permission", agent.PathRun, nobody, good, 403, "may not create diagnoses.netdiag.io in namespace default"},
		{"an account allowed in another namespace", agent.PathRun, elsewhere, good, 403, "in namespace default"},
		{"payload without its grant", agent.PathRun, elsewhere, with(func(p *diagnose.Part) {
			p.Places[collectors.ScopeSource].Pod.Namespace = "elsewhere"
			p.Params.Capture.Payload = true
		}), 403, "diagnoses.netdiag.io/payload"},
		{"a pod on another node", agent.PathRun, bot, with(func(p *diagnose.Part) {
			p.Places[collectors.ScopeSource].Pod.Name = "other"
		}), 421, `runs on node "node-b"`},
		{"a part for another node", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Node = "node-b" }), 400, `this agent runs on node "node-a"`},
		{"a namespace path", agent.PathRun, bot, with(func(p *diagnose.Part) {
			pl := p.Places[collectors.ScopeSource]
			pl.Netns = "/proc/1/ns/net"
			p.Places[collectors.ScopeSource] = pl
		}), 400, "takes no namespace path"},
		{"a resolv.conf path", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Params.ResolvConf = "/etc/shadow" }), 400, "reads the pod's own"},
		{"a pcap path", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Params.Capture.File = "/etc/cron.d/x" }), 400, "streams the pcap back"},
		{"an unknown collector", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Jobs[0].Collector = "sh" }), 400, `unknown collector "sh"`},
		{"a bad pod name", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Places[collectors.ScopeSource].Pod.Name = "../../x" }), 400, "pod name"},
		{"a DNS name with a shell in it", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Params.DNS = []string{"x;reboot"} }), 400, "bad DNS name"},
		{"too many pings", agent.PathRun, bot, with(func(p *diagnose.Part) { p.Params.PingCount = 100000 }), 400, "ping count"},
		{"an unknown field", agent.PathRun, bot, []byte(`{"node":"node-a","shell":"x"}`), 400, "unknown field"},
		{"a body over 1 MiB", agent.PathRun, bot, append([]byte(`{"node":"`), bytes.Repeat([]byte("a"), agent.MaxBody+1)...), 413, "larger than"},
		{"another caller's watch", agent.PathWatch + "/0123456789abcdef/finish", bot, nil, 404, "no watch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.finds.Load()
			status, body := s.post(t, tc.path, tc.token, tc.body)
			if status != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("got %d %q, want %d saying %q", status, strings.TrimSpace(body), tc.status, tc.says)
			}
			if s.finds.Load() != before {
				t.Errorf("the agent looked for the pod's namespace for a refused call")
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		status, body := s.post(t, agent.PathRun, bot, good)
		if status != 200 || !strings.Contains(body, `"collector":"links"`) || !strings.Contains(body, "198.18.50.2") || !strings.Contains(body, `"done":true`) {
			t.Fatalf("got %d %s", status, body)
		}
		if s.finds.Load() == 0 {
			t.Error("the pod's namespace was not looked for")
		}
	})
}

func grantNamespace(t *testing.T, ctx context.Context, kc *kubetest.Cluster, name, ns string) string {
	t.Helper()
	admin := kc.Clientset()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{agent.ResourceGroup}, Resources: []string{agent.Resource}, Verbs: []string{agent.Verb}}}}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: name}}}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := kc.ServiceAccountToken(ctx, "default", name, []string{agent.Audience}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestStaticToken: without a cluster, the one token is the key.
func TestStaticToken(t *testing.T) {
	b := labtest.NewBare(t, "atok", "web")
	b.Link("web", "eth0", []string{"198.18.51.2/24"}, "web", "eth1", []string{"198.18.51.3/24"}, 1500)
	srv, err := agent.New(agent.Config{Node: "node-a", Auth: agent.StaticToken{Token: "s3cret"}, NodeNetns: b.Path("web"),
		CRISockets: []string{}, ScanPrefix: b.Name("")})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS()
	defer ts.Close()
	s := &secured{url: ts.URL, client: ts.Client()}
	p := webPart()
	p.Places[collectors.ScopeSource].Pod.IP = netip.MustParseAddr("198.18.51.2")
	body := mustJSON(p)
	for _, tc := range []struct {
		token  string
		status int
	}{{"", 401}, {"s3cre", 401}, {"s3cret2", 401}, {"s3cret", 200}} {
		if status, out := s.post(t, agent.PathRun, tc.token, body); status != tc.status {
			t.Errorf("token %q: got %d %s, want %d", tc.token, status, out, tc.status)
		}
	}
	if status, _ := s.post(t, agent.PathHealth, "", nil); status != 200 {
		t.Errorf("healthz without a token: %d, want 200", status)
	}
}

// TestPanicIsAnError: a bug in one call is a 500 that says so; the agent
// goes on answering.
func TestPanicIsAnError(t *testing.T) {
	srv, err := agent.New(agent.Config{Node: "node-a", Auth: agent.StaticToken{Token: "t"}, NodeNetns: "/proc/self/ns/net",
		FindPod: func(context.Context, podns.PodRef) (*podns.Found, error) { panic("a bug in finding pods") }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS()
	defer ts.Close()
	s := &secured{url: ts.URL, client: ts.Client()}
	status, body := s.post(t, agent.PathRun, "t", mustJSON(webPart()))
	if status != 500 || !strings.Contains(body, "a bug in finding pods") {
		t.Errorf("got %d %q, want 500 naming the panic", status, body)
	}
	if status, _ := s.post(t, agent.PathHealth, "", nil); status != 200 {
		t.Errorf("healthz after the panic: %d", status)
	}
}
