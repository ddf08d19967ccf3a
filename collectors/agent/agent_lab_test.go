package agent_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/internal/kubeapi"
	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// fleet is a lab mirrored into a real API server, with one agent per lab
// node, each authenticating callers through that API server.
type fleet struct {
	lab    *lab.Lab
	st     *lab.Status
	kube   *kubetest.Cluster
	urls   map[string]string
	client *http.Client
	token  string // the bot's: may diagnose in default and kube-system, and nodes
	stop   map[string]func()
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	l := labtest.Up(t, "agt")
	kc := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	admin := kc.Clientset()
	if err := labtest.Mirror(ctx, admin, st); err != nil {
		t.Fatal(err)
	}
	f := &fleet{lab: l, st: st, kube: kc, urls: map[string]string{}, stop: map[string]func(){}}
	f.token = grant(t, ctx, kc, "netdiag-bot", true)
	for _, n := range st.Nodes {
		api := apiClient(t, kc)
		srv, err := agent.New(agent.Config{Node: n.Name, Auth: &agent.KubeAuth{Client: api}, Pods: agent.APIPods{Client: api},
			NodeNetns: n.NetnsPath, CRISockets: []string{}, ScanPrefix: st.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(srv)
		ts.StartTLS()
		t.Cleanup(func() { ts.Close(); srv.Close() })
		f.stop[n.Name] = ts.Close
		f.urls[n.Name] = ts.URL
		f.client = ts.Client()
	}
	return f
}

// apiClient is the agent's own API client, as the admin, read from a
// kubeconfig as the agent reads one.
func apiClient(t *testing.T, kc *kubetest.Cluster) *kubeapi.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kc.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	cfg, err := kubeapi.FromKubeconfig(path, "admin")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubeapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grant makes a ServiceAccount, gives it the diagnose permission when
// allowed (in every namespace and for nodes), and mints its token for the
// agents.
func grant(t *testing.T, ctx context.Context, kc *kubetest.Cluster, name string, allowed bool) string {
	t.Helper()
	admin := kc.Clientset()
	if allowed {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name + "-diagnose"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{agent.ResourceGroup}, Resources: []string{agent.Resource, agent.Resource + "/" + agent.SubPayload}, Verbs: []string{agent.Verb}}}}
		if _, err := admin.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-diagnose"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: name}}}
		if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := kc.ServiceAccountToken(ctx, "default", name, []string{agent.Audience}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fleet) runner(token string) *agent.Runner {
	return &agent.Runner{
		Site: func(node string) (diagnose.Site, error) {
			u, ok := f.urls[node]
			if !ok {
				return nil, agent.ErrUnreachableNode(node)
			}
			return &agent.Client{Node: node, URL: u, HTTP: f.client, Token: func() (string, error) { return token, nil }}, nil
		},
		Local: &diagnose.LocalSite{},
	}
}

// TestMatrixThroughAgents runs the accuracy matrix with every node's part
// run by that node's agent, which finds the pods' namespaces itself, and
// wants the verdicts the local runner gives.
func TestMatrixThroughAgents(t *testing.T) {
	f := newFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rows, err := labview.RunMatrixWith(ctx, f.lab.Instance, labview.Cases(), f.runner(f.token), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	correct := labview.WriteMatrix(&b, rows)
	t.Log("\n" + b.String())
	if correct != len(rows) {
		for _, r := range rows {
			if !r.OK() {
				t.Errorf("%s %v: got %s (%s) %s, want %s", r.Name, r.Question, r.Got, r.Summary, r.Err, r.Want)
			}
		}
	}

	// A node whose agent is gone: the finding names it, from either end.
	web, _ := f.st.Pod("default/web")
	client, _ := f.st.Pod("default/client")
	f.stop[web.Node]()
	eng := &diagnose.Engine{Runner: f.runner(f.token)}
	for _, q := range []struct{ kind, name, to string }{
		{"pod", "default/client", "pod/default/web:8080"}, // the destination's node is down
		{"pod", "default/web", "pod/default/client:80"},   // the source's node is down
	} {
		req, err := labview.Request(f.st, q.kind, q.name, q.to, nil)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := eng.Diagnose(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if fd.Verdict() != diagnose.AgentDown || !strings.Contains(fd.Summary, "node "+web.Node) {
			t.Errorf("%s %s with node %s's agent down: %s: %s", q.name, q.to, web.Node, fd.Verdict(), fd.Summary)
		}
		t.Logf("%s to %s, %s's agent down (client on %s): %s (%.2f) %s", q.name, q.to, web.Node, client.Node, fd.Verdict(), fd.Confidence, fd.Summary)
	}
}
