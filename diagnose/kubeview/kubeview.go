// Package kubeview is the Kubernetes view of a question on a real cluster.
// It resolves what the user names ("pod default/client", "svc/default/web:80",
// "node node-a") to the nodes, pod IPs and UIDs, Service backends and the
// netdiag agent that can enter them; it fills the diagnose.Cluster facts the
// network cannot show (ready endpoints, kube-proxy's state, the DNS Service,
// the nodes' PodCIDRs and overlay); and it runs the static checks (a Service
// without ready endpoints, kube-proxy not Running, a NotReady node, a node
// without PodCIDR, NetworkPolicies that select the pod).
//
// It reads the API through shared informers: once the caches are synced a
// question costs no API call, and a cluster of thousands of pods is indexed
// (by node, by IP, by Service) rather than scanned. diagnose/labview is the
// same view of the fault lab.
package kubeview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// Options configures a View. The zero value is a kubeadm-shaped cluster
// with the agent deployed by netdiag's manifests.
type Options struct {
	// Resync is the informers' resync period. 0 (the default) never
	// resyncs: the view only reads its caches and has no handlers for a
	// resync to repair.
	Resync time.Duration
	// KubeProxyNamespace and KubeProxySelector find kube-proxy's pods
	// (default: kube-system, k8s-app=kube-proxy).
	KubeProxyNamespace string
	KubeProxySelector  string
	// DNSService is the cluster DNS Service, NAMESPACE/NAME (default
	// kube-system/kube-dns).
	DNSService string
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// AgentNamespace and AgentSelector find the netdiag agent pods
	// (default: netdiag, app.kubernetes.io/name=netdiag-agent).
	AgentNamespace string
	AgentSelector  string
	// Logger receives the view's events (sync, watch errors); default
	// slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultKubeProxyNamespace = "kube-system"
	DefaultKubeProxySelector  = "k8s-app=kube-proxy"
	DefaultDNSService         = "kube-system/kube-dns"
	DefaultClusterDomain      = "cluster.local"
	DefaultAgentNamespace     = "netdiag"
	DefaultAgentSelector      = "app.kubernetes.io/name=netdiag-agent"
)

// Index names on the informers' stores.
const (
	byNode      = "node"      // pods: spec.nodeName
	byIP        = "ip"        // pods: status.podIPs (not host-network); nodes: InternalIPs
	byName      = "name"      // pods, Services: metadata.name, for "did you mean"
	byRole      = "role"      // pods: "agent/NODE", "kube-proxy/NODE"
	byClusterIP = "clusterip" // Services: spec.clusterIPs
	byService   = "service"   // EndpointSlices: NAMESPACE/kubernetes.io/service-name
)

// View is the cluster as netdiag sees it, kept current by shared informers.
// Its methods are safe for concurrent use once Start has returned nil.
type View struct {
	opts         Options
	log          *slog.Logger
	optErr       error
	kubeProxySel labels.Selector
	agentSel     labels.Selector
	dnsNS        string
	dnsName      string

	factory   informers.SharedInformerFactory
	resources []resource

	podIdx   cache.Indexer
	pods     corelisters.PodLister
	svcIdx   cache.Indexer
	services corelisters.ServiceLister
	sliceIdx cache.Indexer
	nodeIdx  cache.Indexer
	nodes    corelisters.NodeLister
	policies networkinglisters.NetworkPolicyLister

	mu       sync.Mutex
	started  bool
	cancel   context.CancelFunc
	watchErr map[string]error
	synced   atomic.Bool
}

// resource is one informer, named as RBAC names it.
type resource struct {
	name     string // "networkpolicies.networking.k8s.io"
	informer cache.SharedIndexInformer
}

// New prepares a view of the cluster behind client; Start fills it.
// Options are checked here and a bad one is returned by Start.
func New(client kubernetes.Interface, opts Options) *View {
	opts = withDefaults(opts)
	v := &View{opts: opts, log: opts.Logger, watchErr: map[string]error{}}
	v.optErr = v.parseOptions()

	v.factory = informers.NewSharedInformerFactoryWithOptions(client, opts.Resync, informers.WithTransform(slim))
	podInf := v.factory.Core().V1().Pods()
	svcInf := v.factory.Core().V1().Services()
	sliceInf := v.factory.Discovery().V1().EndpointSlices()
	nodeInf := v.factory.Core().V1().Nodes()
	polInf := v.factory.Networking().V1().NetworkPolicies()
	v.resources = []resource{
		{"pods", podInf.Informer()},
		{"services", svcInf.Informer()},
		{"endpointslices.discovery.k8s.io", sliceInf.Informer()},
		{"nodes", nodeInf.Informer()},
		{"networkpolicies.networking.k8s.io", polInf.Informer()},
	}
	// Indexers can only be added before the informers start; they cannot
	// fail on a fresh informer, so an error here is a programming error
	// that Start reports.
	add := func(inf cache.SharedIndexInformer, idx cache.Indexers) {
		if err := inf.AddIndexers(idx); err != nil && v.optErr == nil {
			v.optErr = fmt.Errorf("kubernetes view: adding indexers: %w", err)
		}
	}
	add(podInf.Informer(), cache.Indexers{byNode: podNodeIndex, byIP: podIPIndex, byName: nameIndex, byRole: v.podRoleIndex})
	add(svcInf.Informer(), cache.Indexers{byClusterIP: serviceIPIndex, byName: nameIndex})
	add(sliceInf.Informer(), cache.Indexers{byService: sliceServiceIndex})
	add(nodeInf.Informer(), cache.Indexers{byIP: nodeIPIndex})
	for _, r := range v.resources {
		name := r.name
		// The reflector retries on its own; the last error is kept so
		// that a resource that never syncs is reported with its cause
		// (typically RBAC: "cannot list resource ...").
		err := r.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
			v.mu.Lock()
			v.watchErr[name] = err
			v.mu.Unlock()
			level := slog.LevelWarn
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.EOF) {
				// A watch that outlived its resource version: the
				// reflector lists again, as designed.
				level = slog.LevelDebug
			}
			v.log.Log(ctx, level, "kubernetes view: list/watch failed", "resource", name, "err", err)
		})
		if err != nil && v.optErr == nil {
			v.optErr = fmt.Errorf("kubernetes view: watch error handler for %s: %w", name, err)
		}
	}
	v.podIdx, v.pods = podInf.Informer().GetIndexer(), podInf.Lister()
	v.svcIdx, v.services = svcInf.Informer().GetIndexer(), svcInf.Lister()
	v.sliceIdx = sliceInf.Informer().GetIndexer()
	v.nodeIdx, v.nodes = nodeInf.Informer().GetIndexer(), nodeInf.Lister()
	v.policies = polInf.Lister()
	return v
}

func withDefaults(o Options) Options {
	set := func(s *string, def string) {
		if *s == "" {
			*s = def
		}
	}
	set(&o.KubeProxyNamespace, DefaultKubeProxyNamespace)
	set(&o.KubeProxySelector, DefaultKubeProxySelector)
	set(&o.DNSService, DefaultDNSService)
	set(&o.ClusterDomain, DefaultClusterDomain)
	set(&o.AgentNamespace, DefaultAgentNamespace)
	set(&o.AgentSelector, DefaultAgentSelector)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (v *View) parseOptions() error {
	var errs []error
	var err error
	if v.kubeProxySel, err = labels.Parse(v.opts.KubeProxySelector); err != nil {
		errs = append(errs, fmt.Errorf("kube-proxy selector %q: %w (accepted: a label selector such as k8s-app=kube-proxy)", v.opts.KubeProxySelector, err))
	}
	if v.agentSel, err = labels.Parse(v.opts.AgentSelector); err != nil {
		errs = append(errs, fmt.Errorf("agent selector %q: %w (accepted: a label selector such as app.kubernetes.io/name=netdiag-agent)", v.opts.AgentSelector, err))
	}
	for _, ns := range []struct{ what, v string }{{"kube-proxy namespace", v.opts.KubeProxyNamespace}, {"agent namespace", v.opts.AgentNamespace}} {
		if len(validation.IsDNS1123Label(ns.v)) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %s", ns.what, ns.v, namespaceRule))
		}
	}
	ns, name, ok := strings.Cut(v.opts.DNSService, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1035Label(name)) > 0 {
		errs = append(errs, fmt.Errorf("DNS Service %q: give NAMESPACE/NAME, e.g. kube-system/kube-dns", v.opts.DNSService))
	}
	v.dnsNS, v.dnsName = ns, name
	if len(validation.IsDNS1123Subdomain(v.opts.ClusterDomain)) > 0 {
		errs = append(errs, fmt.Errorf("cluster domain %q: give a DNS domain such as cluster.local", v.opts.ClusterDomain))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kubernetes view options: %w", err)
	}
	return nil
}

// Start runs the informers and waits, at most until ctx ends, for their
// first List. The informers then keep the view current until Stop; ctx
// bounds only the wait. When a resource does not sync the error names it
// with the API's last answer (RBAC's "cannot list resource" most often),
// and the view is stopped: make a new one to retry.
func (v *View) Start(ctx context.Context) error {
	if v.optErr != nil {
		return v.optErr
	}
	v.mu.Lock()
	if v.started {
		v.mu.Unlock()
		return errors.New("kubernetes view: already started")
	}
	v.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancel = cancel
	v.mu.Unlock()

	begin := time.Now()
	v.factory.Start(runCtx.Done())
	v.factory.WaitForCacheSyncWithContext(ctx)
	var missing []string
	for _, r := range v.resources {
		if r.informer.HasSynced() {
			continue
		}
		m := r.name
		v.mu.Lock()
		if err := v.watchErr[r.name]; err != nil {
			m += " (" + err.Error() + ")"
		}
		v.mu.Unlock()
		missing = append(missing, m)
	}
	if len(missing) > 0 {
		v.Stop()
		why := "the wait ended"
		if err := context.Cause(ctx); err != nil {
			why = err.Error()
		}
		return fmt.Errorf("kubernetes view: not synced after %s (%s): %s; netdiag needs get, list and watch on pods, services, nodes, endpointslices.discovery.k8s.io and networkpolicies.networking.k8s.io in all namespaces",
			time.Since(begin).Round(time.Millisecond), why, strings.Join(missing, "; "))
	}
	v.synced.Store(true)
	v.log.Info("kubernetes view synced", "took", time.Since(begin).Round(time.Millisecond),
		"pods", len(v.podIdx.ListKeys()), "services", len(v.svcIdx.ListKeys()), "nodes", len(v.nodeIdx.ListKeys()))
	return nil
}

// Stop ends the informers and waits for them. The view answers no more
// questions after it.
func (v *View) Stop() {
	v.synced.Store(false)
	v.mu.Lock()
	cancel := v.cancel
	v.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	v.factory.Shutdown()
}

func (v *View) ready() error {
	if !v.synced.Load() {
		return errors.New("kubernetes view is not started (or was stopped): call Start and wait for it to return nil")
	}
	return nil
}
