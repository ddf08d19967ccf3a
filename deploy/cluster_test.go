package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/diagnose/kubeview"
	"github.com/netdiag/netdiag/internal/kubeapi"
	"github.com/netdiag/netdiag/internal/kubetest"
)

const chartFieldManager = "netdiag-test"

// chartApplier server-side applies unstructured objects as the admin.
type chartApplier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapperWithContext
	// created are the objects applied for real, deleted at the end.
	created []*unstructured.Unstructured
}

func chartNewApplier(t *testing.T, ctx context.Context, kc *kubetest.Cluster) *chartApplier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(kc.Admin)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResourcesWithContext(ctx, discovery.ToDiscoveryInterfaceWithContext(dc))
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kc.Admin)
	if err != nil {
		t.Fatal(err)
	}
	a := &chartApplier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapperWithContext(groups)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Newest first: bindings before roles, objects before namespaces.
		for i := len(a.created) - 1; i >= 0; i-- {
			o := a.created[i]
			ri, err := a.resource(ctx, o)
			if err == nil {
				err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: delete %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})
	return a
}

func (a *chartApplier) resource(ctx context.Context, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMappingWithContext(ctx, gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

// apply applies o, as a dry run on the server (admission, validation,
// defaulting, nothing stored) or for real.
func (a *chartApplier) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	ri, err := a.resource(ctx, o)
	if err != nil {
		return err
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: chartFieldManager, Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
		return err
	}
	if !dryRun {
		a.created = append(a.created, o)
	}
	return nil
}

// exists says whether o is stored.
func (a *chartApplier) exists(ctx context.Context, o *unstructured.Unstructured) (bool, error) {
	ri, err := a.resource(ctx, o)
	if err != nil {
		return false, err
	}
	_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func chartUnstructured(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range chartDocs(t, b) {
		m := map[string]any{}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

// chartIsRBAC: what a ServiceAccount's permissions are made of.
func chartIsRBAC(o *unstructured.Unstructured) bool {
	switch o.GetKind() {
	case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		return true
	}
	return false
}

// chartSAUser is how the API server names a ServiceAccount's requests.
func chartSAUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// chartCan asks the API server, as the admin, whether the ServiceAccount
// may do it.
func chartCan(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace, sa string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	user, groups := chartSAUser(namespace, sa)
	r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &attrs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview for %s %+v: %v", user, attrs, err)
	}
	return r.Status.Allowed
}

// chartAccess is one question for the authorizer.
type chartAccess struct {
	verb, group, resource, sub, namespace string
}

func (a chartAccess) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.sub != "" {
		r += "/" + a.sub
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	return a.verb + " " + r + " " + where
}

func chartExpect(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace, sa string, allowed bool, as []chartAccess) {
	t.Helper()
	for _, a := range as {
		attrs := authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Namespace: a.namespace}
		got := chartCan(t, ctx, cs, namespace, sa, attrs)
		// The RBAC authorizer reads roles and bindings through its
		// informers: one just applied is seen a moment later, later
		// still on a loaded machine. A grant is waited for (10 s); a
		// refusal needs no wait.
		for deadline := time.Now().Add(10 * time.Second); allowed && !got && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			got = chartCan(t, ctx, cs, namespace, sa, attrs)
		}
		if got != allowed {
			t.Errorf("ServiceAccount %s/%s: %s: allowed %v, want %v", namespace, sa, a, got, allowed)
		}
	}
}

// chartNeverAllowed is what neither the bot nor the agent may do.
func chartNeverAllowed(ns string) []chartAccess {
	return []chartAccess{
		{verb: "get", resource: "secrets", namespace: ns},
		{verb: "list", resource: "secrets"},
		{verb: "watch", resource: "secrets"},
		{verb: "get", resource: "secrets", namespace: "kube-system"},
		{verb: "create", resource: "pods", sub: "exec", namespace: "default"},
		{verb: "get", resource: "pods", sub: "exec", namespace: ns},
		{verb: "create", resource: "pods", sub: "attach", namespace: "default"},
		{verb: "create", resource: "pods", sub: "portforward", namespace: ns},
		{verb: "create", resource: "pods", namespace: "default"},
		{verb: "delete", resource: "pods", namespace: "default"},
		{verb: "get", resource: "configmaps", namespace: ns},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
		{verb: "create", resource: "serviceaccounts", sub: "token", namespace: ns},
	}
}

// TestClusterManifests applies deploy/manifests to a real kube-apiserver
// (RBAC authorization, the default admission plugins): every object passes
// a server-side dry run, the pods are admitted, and the RBAC, applied for
// real, lets the bot and the agent do what they do and nothing more.
func TestClusterManifests(t *testing.T) {
	kc := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	admin := kc.Clientset()
	a := chartNewApplier(t, ctx, kc)

	nsObjs := chartUnstructured(t, chartReadFile(t, filepath.Join(chartManifestsDir, "namespace.yaml")))
	manifest := chartReadFile(t, filepath.Join(chartManifestsDir, "netdiag.yaml"))
	objs := chartUnstructured(t, manifest)
	typed := chartParse(t, manifest)
	if len(nsObjs) != 1 || nsObjs[0].GetKind() != "Namespace" {
		t.Fatalf("namespace.yaml: want one Namespace")
	}
	// Objects in a namespace that does not exist fail even a dry run.
	if err := a.apply(ctx, nsObjs[0], false); err != nil {
		t.Fatalf("apply %s: %v", nsObjs[0].GetName(), err)
	}
	ns := nsObjs[0].GetName()

	t.Run("dry-run", func(t *testing.T) {
		for _, o := range objs {
			if err := a.apply(ctx, o, true); err != nil {
				t.Errorf("server-side dry-run apply of %s %s: %v", o.GetKind(), o.GetName(), err)
				continue
			}
			if ok, err := a.exists(ctx, o); ok || err != nil {
				t.Errorf("%s %s is stored after a dry run (%v)", o.GetKind(), o.GetName(), err)
			}
		}
	})

	t.Run("pods", func(t *testing.T) {
		// The pods the Deployment and the DaemonSet would make: the
		// manifests' namespace admits both (the agents need Pod Security's
		// privileged level); a restricted one admits the bot and refuses
		// the agent, which shows the check is on.
		restricted := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netdiag-restricted",
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
		if _, err := admin.CoreV1().Namespaces().Create(ctx, restricted, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			admin.CoreV1().Namespaces().Delete(context.Background(), restricted.Name, metav1.DeleteOptions{})
		})
		pod := func(name, namespace string, tpl corev1.PodTemplateSpec) *corev1.Pod {
			return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: tpl.Labels, Annotations: tpl.Annotations}, Spec: tpl.Spec}
		}
		dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
		bot, agentPod := typed.deploy.Spec.Template, typed.ds.Spec.Template
		for _, p := range []*corev1.Pod{pod("bot", ns, bot), pod("agent", ns, agentPod), pod("bot", restricted.Name, bot)} {
			if _, err := admin.CoreV1().Pods(p.Namespace).Create(ctx, p, dry); err != nil {
				t.Errorf("pod %s in namespace %s refused: %v", p.Name, p.Namespace, err)
			}
		}
		_, err := admin.CoreV1().Pods(restricted.Name).Create(ctx, pod("agent", restricted.Name, agentPod), dry)
		if err == nil || !strings.Contains(err.Error(), "PodSecurity") {
			t.Errorf("the agent's pod in a restricted namespace: %v, want Pod Security's refusal", err)
		}
	})

	for _, o := range objs {
		if chartIsRBAC(o) {
			if err := a.apply(ctx, o, false); err != nil {
				t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
	botSA, agentSA := typed.deploy.Spec.Template.Spec.ServiceAccountName, typed.ds.Spec.Template.Spec.ServiceAccountName

	t.Run("access", func(t *testing.T) {
		var reads []chartAccess
		for _, r := range chartBotReads {
			group, resource, _ := strings.Cut(r, "/")
			for _, v := range []string{"get", "list", "watch"} {
				reads = append(reads, chartAccess{verb: v, group: group, resource: resource})
				if resource != "nodes" {
					reads = append(reads, chartAccess{verb: v, group: group, resource: resource, namespace: "default"})
				}
			}
		}
		diagnose := []chartAccess{
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource, namespace: "default"},
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource},
		}
		payload := []chartAccess{
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource, sub: agent.SubPayload, namespace: "default"},
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource, sub: agent.SubPayload},
		}
		reviews := []chartAccess{
			{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
			{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
		}
		chartExpect(t, ctx, admin, ns, botSA, true, append(reads, diagnose...))
		chartExpect(t, ctx, admin, ns, botSA, false, append(append(chartNeverAllowed(ns), payload...), reviews...))
		chartExpect(t, ctx, admin, ns, agentSA, true, append(reviews, chartAccess{verb: "get", resource: "pods", namespace: "default"}))
		chartExpect(t, ctx, admin, ns, agentSA, false, append(append(chartNeverAllowed(ns), diagnose...),
			chartAccess{verb: "list", resource: "pods"}, chartAccess{verb: "list", resource: "nodes"}))
	})

	// The config the bot loads, for where it looks for agents.
	var cfg *config.Config
	{
		env := chartEnv(t, typed.deploy.Spec.Template.Spec.Containers[0])
		var err error
		cfg, err = config.Parse([]byte(typed.cm.Data["config.yaml"]), func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("kubeview", func(t *testing.T) {
		// The bot's view of the cluster, with the bot's own token: it syncs
		// only if the ClusterRole covers every informer.
		start := func(sa string, wait time.Duration) error {
			tok, err := kc.ServiceAccountToken(ctx, ns, sa, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			cs, err := kubernetes.NewForConfig(kc.ConfigFor(tok))
			if err != nil {
				t.Fatal(err)
			}
			v := kubeview.New(cs, kubeview.Options{AgentNamespace: cfg.Agents.Namespace, AgentSelector: cfg.Agents.Selector,
				Logger: slog.New(slog.DiscardHandler)})
			sctx, scancel := context.WithTimeout(ctx, wait)
			defer scancel()
			err = v.Start(sctx)
			if err == nil {
				v.Stop()
			}
			return err
		}
		if err := start(botSA, 30*time.Second); err != nil {
			t.Errorf("kubeview with the bot's ServiceAccount: %v", err)
		}
		// The agent may read none of it: the same start fails, so the
		// success above is the role's doing.
		if err := start(agentSA, 5*time.Second); err == nil {
			t.Errorf("kubeview with the agent's ServiceAccount synced: the check above proves nothing")
		}
	})

	t.Run("agent auth", func(t *testing.T) {
		// The agent's own check, with the agent's ServiceAccount, of the
		// bot's projected token: who it is, what it may diagnose.
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
		if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "web", Image: "web"}}}}
		if _, err := admin.CoreV1().Pods("default").Create(ctx, web, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			bg := context.Background()
			zero := int64(0)
			admin.CoreV1().Pods("default").Delete(bg, "web", metav1.DeleteOptions{GracePeriodSeconds: &zero})
			admin.CoreV1().Nodes().Delete(bg, "node-a", metav1.DeleteOptions{})
		})
		agentTok, err := kc.ServiceAccountToken(ctx, ns, agentSA, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		api, err := kubeapi.New(&kubeapi.Config{Host: kc.URL, CAPEM: kc.CAPEM, Token: agentTok})
		if err != nil {
			t.Fatal(err)
		}
		var audiences []string
		for _, arg := range typed.ds.Spec.Template.Spec.Containers[0].Args {
			if v, ok := strings.CutPrefix(arg, "--token-audience="); ok {
				audiences = append(audiences, v)
			}
		}
		auth := &agent.KubeAuth{Client: api, Audiences: audiences}
		caller := func(tok string) *http.Request {
			r := httptest.NewRequest(http.MethodPost, agent.PathRun, nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		}

		botTok, err := kc.ServiceAccountToken(ctx, ns, botSA, []string{agent.Audience}, 0)
		if err != nil {
			t.Fatal(err)
		}
		u, err := auth.Authenticate(ctx, caller(botTok))
		if want, _ := chartSAUser(ns, botSA); err != nil || u.Name != want {
			t.Fatalf("the agent authenticates the bot's projected token as %v (%v), want %s", u, err, want)
		}
		for _, acc := range []agent.Access{{Namespace: "default", Name: "web"}, {Name: "node-a"}} {
			if err := auth.Authorize(ctx, u, acc); err != nil {
				t.Errorf("the agent refuses the bot %+v: %v", acc, err)
			}
		}
		if err := auth.Authorize(ctx, u, agent.Access{Namespace: "default", Name: "web", Payload: true}); !errors.Is(err, agent.ErrForbidden) {
			t.Errorf("the agent lets the bot capture payload with bot.payloadCapture off: %v", err)
		}
		if node, _, err := (agent.APIPods{Client: api}).PodNode(ctx, "default", "web"); err != nil || node != "node-a" {
			t.Errorf("the agent's pod lookup: node %q, %v", node, err)
		}
		// A token of the bot's for the API server is not for the agents.
		apiTok, err := kc.ServiceAccountToken(ctx, ns, botSA, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auth.Authenticate(ctx, caller(apiTok)); !errors.Is(err, agent.ErrUnauthenticated) {
			t.Errorf("the agent takes the bot's API-server token: %v", err)
		}
	})

	t.Run("payload", func(t *testing.T) {
		// bot.payloadCapture adds the subresource, for that release's bot
		// alone.
		helm := chartHelm(t)
		const release = "netdiag-payload"
		out, err := chartTemplate(t, helm, release, release, "bot: {payloadCapture: true}\n", chartDir)
		if err != nil {
			t.Fatal(err)
		}
		other := chartParse(t, out)
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: release}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), release, metav1.DeleteOptions{}) })
		for _, o := range chartUnstructured(t, out) {
			if chartIsRBAC(o) {
				if err := a.apply(ctx, o, false); err != nil {
					t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		}
		payload := []chartAccess{
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource, sub: agent.SubPayload, namespace: "default"},
			{verb: agent.Verb, group: agent.ResourceGroup, resource: agent.Resource, sub: agent.SubPayload},
		}
		chartExpect(t, ctx, admin, release, other.deploy.Spec.Template.Spec.ServiceAccountName, true, payload)
		chartExpect(t, ctx, admin, release, other.deploy.Spec.Template.Spec.ServiceAccountName, false, chartNeverAllowed(release))
		chartExpect(t, ctx, admin, ns, botSA, false, payload)
	})
}
