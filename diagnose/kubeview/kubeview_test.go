package kubeview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestPod(t *testing.T) {
	c := baseCluster()
	v, _ := startView(t, c.objects(), Options{})
	tests := []struct {
		ns, name string
		node     string
		ips      []string
		host     bool
	}{
		{"default", "web", "node-a", []string{"198.19.1.7", "2001:2:0:1::7"}, false},
		{"default", "api", "node-a", []string{"198.19.1.8"}, false},
		{"kube-system", "kube-proxy-b", "node-b", []string{"198.18.0.12"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Pod(tt.ns, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			var ips []string
			for _, a := range p.IPs {
				ips = append(ips, a.String())
			}
			if p.Node != tt.node || !slices.Equal(ips, tt.ips) || p.UID != "uid-"+tt.name || p.HostNetwork != tt.host ||
				p.Phase != "Running" || !p.Ready || p.State != "Running" || p.Labels == nil {
				t.Errorf("got %+v", p)
			}
		})
	}
	// The cache holds the slimmed pod: no managedFields, annotations, env.
	obj, ok, err := v.podIdx.GetByKey("default/web")
	if err != nil || !ok {
		t.Fatalf("cache: %v %v", ok, err)
	}
	cp := obj.(*corev1.Pod)
	if cp.ManagedFields != nil || cp.Annotations != nil || cp.Spec.Containers[0].Env != nil || cp.Spec.Containers[0].Image != "" ||
		cp.Spec.Containers[0].Ports[0].Name != "http" || cp.Labels["app"] != "web" {
		t.Errorf("pod not slimmed as documented: %+v", cp)
	}
	nobj, _, _ := v.nodeIdx.GetByKey("node-a")
	cn := nobj.(*corev1.Node)
	if cn.Status.Images != nil || len(cn.Annotations) != 3 || cn.ManagedFields != nil || len(cn.Status.Conditions) != 1 || len(cn.Status.Addresses) != 2 {
		t.Errorf("node not slimmed as documented: %+v", cn)
	}
	on, err := v.PodsOnNode("node-a")
	var keys []string
	for _, p := range on {
		keys = append(keys, p.Key())
	}
	if want := []string{"default/api", "default/web", "kube-system/kube-proxy-a", "netdiag/agent-a"}; err != nil || !slices.Equal(keys, want) {
		t.Errorf("PodsOnNode(node-a) = %q, %v; want %q", keys, err, want)
	}
	// Pod by IP: either family, and never a host-network pod.
	for ip, want := range map[string]string{"198.19.1.7": "default/web", "2001:2:0:1::7": "default/web", "198.18.0.12": ""} {
		p, err := v.PodByIP(netip.MustParseAddr(ip))
		switch {
		case want == "" && err == nil:
			t.Errorf("PodByIP(%s) = %s, want none (host-network pods share the node's address)", ip, p.Key())
		case want != "" && (err != nil || p.Key() != want):
			t.Errorf("PodByIP(%s) = %v, %v; want %s", ip, p, err, want)
		}
	}
}

func TestNotFoundAndBadNames(t *testing.T) {
	c := baseCluster()
	v, _ := startView(t, c.objects(), Options{})
	tests := []struct {
		name string
		q    Question
		want string
	}{
		{"near names", Question{Kind: "pod", Name: "default/wbe"}, "pod default/wbe not found (pods in default: web, api, client)"},
		{"prefix first", Question{Kind: "pod", Namespace: "default", Name: "cli"}, "pod default/cli not found (pods in default: client, api, web)"},
		{"other namespace", Question{Kind: "pod", Name: "default/coredns-1"}, "pod coredns-1 exists as kube-system/coredns-1"},
		{"empty namespace", Question{Kind: "pod", Name: "kube-sytem/coredns-1"}, "pod kube-sytem/coredns-1 not found (no pods in namespace kube-sytem; namespaces with pods: kube-system, default, netdiag; pod coredns-1 exists as kube-system/coredns-1)"},
		{"svc not found", Question{Kind: "pod", Name: "default/client", To: "svc/default/wbe:80"}, "--to svc/default/wbe:80: svc default/wbe not found (Services in default: web, kubernetes)"},
		{"node not found", Question{Kind: "node", Name: "node-c"}, "node node-c not found (nodes: node-a, node-b)"},
		{"node by an IP no node has", Question{Kind: "node", Name: "198.18.0.99"}, "no node has InternalIP 198.18.0.99"},
		{"no namespace", Question{Kind: "pod", Name: "web"}, `bad pod "web": give NAMESPACE/NAME, e.g. pod default/web`},
		{"three parts", Question{Kind: "pod", Name: "default/web/x"}, `bad pod "default/web/x": give NAMESPACE/NAME`},
		{"bad namespace", Question{Kind: "pod", Name: "Default/web"}, `bad namespace "Default" in pod Default/web: a namespace is at most 63 lowercase letters`},
		{"bad pod name", Question{Kind: "pod", Name: "default/Web_1"}, `bad pod name "Web_1" in pod default/Web_1: a pod name is`},
		{"bad svc name", Question{Kind: "svc", Name: "default/9web"}, `bad Service name "9web" in svc default/9web: a Service name is at most 63 lowercase letters, digits and '-', starting with a letter`},
		{"bad node name", Question{Kind: "node", Name: "node_a"}, `bad node name "node_a": a node name is`},
		{"node with namespace", Question{Kind: "node", Namespace: "default", Name: "node-a"}, "a node has no namespace"},
		{"unknown kind", Question{Kind: "deployment", Name: "default/web"}, `unknown target "deployment" (accepted: pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME)`},
		{"to without namespace", Question{Kind: "pod", Name: "default/client", To: "svc/web:80"}, `bad --to "svc/web:80" (accepted: pod/NAMESPACE/NAME[:PORT], svc/NAMESPACE/NAME:PORT`},
		{"to bad kind", Question{Kind: "pod", Name: "default/client", To: "deploy/default/web:80"}, `bad --to "deploy/default/web:80": "deploy" is not a kind`},
		{"to bad port", Question{Kind: "pod", Name: "default/client", To: "pod/default/web:99999"}, `bad port "99999" in --to pod/default/web:99999: a port is a number from 1 to 65535 or a port's name`},
		{"to bad port name", Question{Kind: "pod", Name: "default/client", To: "pod/default/web:Bad_Name"}, `bad port "Bad_Name"`},
		{"to bad address", Question{Kind: "pod", Name: "default/client", To: "198.19.1.7:http"}, `bad --to "198.19.1.7:http"`},
		{"svc port not found", Question{Kind: "pod", Name: "default/client", To: "svc/default/web:8080"}, "--to svc/default/web:8080: svc default/web has no port 8080 (ports: http 80/TCP)"},
		{"svc port name not found", Question{Kind: "pod", Name: "default/client", To: "svc/default/web:grpc"}, `svc default/web has no port "grpc" (ports: http 80/TCP)`},
		{"svc without port", Question{Kind: "pod", Name: "default/client", To: "svc/default/web"}, "--to svc/default/web: a Service needs its port (ports: http 80/TCP), e.g. svc/default/web:80"},
		{"ClusterIP without port", Question{Kind: "pod", Name: "default/client", To: "198.18.128.10"}, "198.18.128.10 is the ClusterIP of svc default/web: give its port (ports: http 80/TCP), e.g. 198.18.128.10:80"},
		{"ClusterIP wrong port", Question{Kind: "pod", Name: "default/client", To: "198.18.128.10:8080"}, "svc default/web has no port 8080"},
		{"pod port name not found", Question{Kind: "pod", Name: "default/client", To: "pod/default/web:grpc"}, `pod default/web has no port named "grpc" (ports: http 8080/TCP)`},
		{"bad DNS name", Question{Kind: "pod", Name: "default/client", DNS: []string{"bad name!"}}, `bad DNS name "bad name!"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := v.Resolve(tt.q)
			if err == nil {
				t.Fatalf("Resolve(%+v) = %+v, want an error with %q", tt.q, r, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tt.want)
			}
		})
	}
}

func TestService(t *testing.T) {
	c := baseCluster()
	c.pod("default/web").Labels["app"] = "web"
	c.add(
		mkPod("default", "web-2", "node-b", []string{"198.19.2.8"}, map[string]string{"app": "web"}, port("http", 8080)),
		mkPod("default", "web-old", "node-b", []string{"198.19.2.9"}, map[string]string{"app": "web"}, port("http", 8080)),
		// web-2 is not ready yet; web-old is shutting down but still
		// serving; web (198.19.1.7) also sits in a second slice for a
		// moment, with the same port.
		mkSlice("default", "web", "web-x3", []discoveryv1.EndpointPort{epPort("http", 8080, "TCP")},
			mkEP("198.19.2.8", "default/web-2", "node-b", false, false, false),
			mkEP("198.19.2.9", "default/web-old", "node-b", false, true, true),
			mkEP("198.19.1.7", "default/web", "node-a", true, true, false)),
	)
	v, _ := startView(t, c.objects(), Options{})
	s, err := v.Service("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ClusterIPs) != 1 || s.ClusterIPs[0].String() != "198.18.128.10" || len(s.Ports) != 1 || s.Ports[0].TargetPort != "http" {
		t.Errorf("service: %+v", s)
	}
	want := []string{
		"198.19.1.7 ready=true serving=true terminating=false pod=default/web node=node-a port=8080",
		"198.19.2.8 ready=false serving=false terminating=false pod=default/web-2 node=node-b port=8080",
		"198.19.2.9 ready=false serving=true terminating=true pod=default/web-old node=node-b port=8080",
		"2001:2:0:1::7 ready=true serving=true terminating=false pod=default/web node=node-a port=8080",
	}
	var got []string
	for _, e := range s.Endpoints {
		got = append(got, fmt.Sprintf("%s ready=%t serving=%t terminating=%t pod=%s node=%s port=%d", e.IP, e.Ready, e.Serving, e.Terminating, e.Pod, e.Node, e.Ports["http"]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	r, err := v.Resolve(Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"})
	if err != nil {
		t.Fatal(err)
	}
	ck := check(r, CheckEndpoints, "svc default/web:80")
	if ck == nil || ck.Result != Pass || !strings.Contains(ck.Message, "svc default/web port http 80/TCP has 2 ready endpoint(s): pod default/web 198.19.1.7:8080 on node-a, pod default/web [2001:2:0:1::7]:8080 on node-a; 1 not ready, 1 terminating") {
		t.Errorf("check: %+v", ck)
	}
	// The rules get the ClusterIP's family, the chosen backend first and
	// the terminating one as not ready.
	var eps []string
	for _, e := range r.Cluster.Service.Endpoints {
		eps = append(eps, fmt.Sprintf("%s %s %t", e.IP, e.Pod, e.Ready))
	}
	if w := []string{"198.19.1.7 default/web true", "198.19.2.8 default/web-2 false", "198.19.2.9 default/web-old false"}; !slices.Equal(eps, w) {
		t.Errorf("Cluster.Service.Endpoints = %q, want %q", eps, w)
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(c cluster)
		opts  Options
		q     Question
		check func(t *testing.T, r *Resolved)
	}{{
		// A scrape target's instance label names a node by its address.
		name: "node by its InternalIP, v4 and v6",
		q:    Question{Kind: "node", Name: "198.18.0.12", To: "node/2001:2::11:10250"},
		check: func(t *testing.T, r *Resolved) {
			if r.Source.Name != "node node-b" || r.Dest == nil || r.Dest.Name != "node node-a" {
				t.Errorf("source %+v dest %+v", r.Source, r.Dest)
			}
		},
	}, {
		name: "pod to Service port",
		q:    Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80", DNS: []string{"example.com"}},
		check: func(t *testing.T, r *Resolved) {
			want := Resolved{Question: "pod default/client to svc/default/web:80 resolving example.com"}
			if r.Question != want.Question {
				t.Errorf("question %q", r.Question)
			}
			s := r.Source
			if s.Kind != "pod" || s.Name != "pod default/client" || s.Node != "node-b" || s.Pod.UID != "uid-client" || len(s.Pod.IPs) != 2 || s.HostNetwork {
				t.Errorf("source %+v", s)
			}
			d := r.Dest
			if d.Kind != "svc" || d.Name != "svc default/web" || d.Node != "node-a" || d.Pod == nil || d.Pod.Key() != "default/web" || d.Port.Port != 80 || d.TargetPort != 8080 {
				t.Errorf("dest %+v", d)
			}
			if r.To.String() != "198.18.128.10:80" || r.AltTo != nil {
				t.Errorf("to %v also %v", r.To, r.AltTo)
			}
			c := r.Cluster
			if c.ClusterDomain != "cluster.local" || c.APIName != "kubernetes.default.svc.cluster.local" || c.SourceName != "pod default/client" || c.PeerName != "pod default/web" {
				t.Errorf("cluster %+v", c)
			}
			if sv := c.Service; sv == nil || sv.Name != "default/web" || sv.ClusterIP != "198.18.128.10" || sv.Port != 80 || sv.TargetPort != 8080 || sv.Protocol != "TCP" ||
				len(sv.Endpoints) != 1 || sv.Endpoints[0].IP != "198.19.1.7" || !sv.Endpoints[0].Ready || sv.Endpoints[0].Pod != "default/web" {
				t.Errorf("Cluster.Service %+v", c.Service)
			}
			if n := c.SourceNode; n == nil || n.Name != "node-b" || n.InternalIP != "198.18.0.12" || n.PodCIDR != "198.19.2.0/24" || n.KubeProxy != "Running" || n.OverlayDevice != "flannel.1" || n.OverlayPort != 8472 {
				t.Errorf("SourceNode %+v", c.SourceNode)
			}
			if n := c.PeerNode; n == nil || n.Name != "node-a" || n.InternalIP != "198.18.0.11" {
				t.Errorf("PeerNode %+v", c.PeerNode)
			}
			if d := c.DNS; d == nil || d.Name != "kube-system/kube-dns" || d.ClusterIP != "198.18.128.53" || d.Port != 53 || d.Protocol != "UDP" || len(d.ReadyEndpoints()) != 1 {
				t.Errorf("DNS %+v", c.DNS)
			}
			for _, ck := range r.Checks {
				if ck.Result != Pass {
					t.Errorf("healthy cluster, check %s: %s %s", ck.Name, ck.Result, ck.Message)
				}
			}
			for _, n := range []string{CheckPodReady, CheckNodeReady, CheckPodCIDR, CheckOverlay, CheckKubeProxy, CheckEndpoints, CheckDNSEndpoints, CheckNetworkPolicy} {
				if check(r, n, "") == nil {
					t.Errorf("no %s check:%s", n, checkList(r))
				}
			}
		},
	}, {
		name: "Service port with a leading zero",
		q:    Question{Kind: "pod", Name: "default/client", To: "svc/default/web:080"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.18.128.10:80" {
				t.Errorf("to %v", r.To)
			}
		},
	}, {
		name: "Service port by name",
		q:    Question{Kind: "pod", Namespace: "default", Name: "client", To: "svc/default/web:http"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.18.128.10:80" || r.Cluster.Service.Port != 80 || r.Cluster.Service.TargetPort != 8080 {
				t.Errorf("to %v service %+v", r.To, r.Cluster.Service)
			}
		},
	}, {
		name: "dual-stack pod to pod: the IPv6 twin",
		q:    Question{Kind: "pod", Name: "default/client", To: "pod/default/web:8080"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.19.1.7:8080" || r.AltTo == nil || r.AltTo.String() != "[2001:2:0:1::7]:8080" {
				t.Errorf("to %v also %v", r.To, r.AltTo)
			}
			if r.Dest.Kind != "pod" || r.Dest.Node != "node-a" || r.Cluster.PeerNode.Name != "node-a" || r.Cluster.PeerName != "pod default/web" || r.Cluster.Service != nil {
				t.Errorf("dest %+v cluster %+v", r.Dest, r.Cluster)
			}
			if ck := check(r, CheckPodReady, "pod default/web"); ck == nil || ck.Result != Pass || ck.Message != "pod default/web is Running and ready on node node-a (198.19.1.7, 2001:2:0:1::7)" {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "pod port by name, no port",
		q:    Question{Kind: "pod", Name: "default/client", To: "pod/default/web:http"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.19.1.7:8080" {
				t.Errorf("to %v", r.To)
			}
		},
	}, {
		name: "single-stack pod without port",
		q:    Question{Kind: "pod", Name: "default/client", To: "pod/default/api"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.19.1.8" || r.AltTo != nil {
				t.Errorf("to %v also %v", r.To, r.AltTo)
			}
		},
	}, {
		name: "HOST:PORT that is a pod",
		q:    Question{Kind: "pod", Name: "default/client", To: "198.19.1.7:8080"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.19.1.7:8080" || r.Dest.Kind != "pod" || r.Dest.Name != "pod default/web" || r.Cluster.PeerNode.Name != "node-a" {
				t.Errorf("to %v dest %+v", r.To, r.Dest)
			}
		},
	}, {
		name: "IPv6 [addr]:port",
		q:    Question{Kind: "pod", Name: "default/client", To: "[2001:2:0:1::7]:8080"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "[2001:2:0:1::7]:8080" || r.AltTo != nil || r.Dest.Name != "pod default/web" {
				t.Errorf("to %v also %v dest %+v", r.To, r.AltTo, r.Dest)
			}
		},
	}, {
		name: "HOST:PORT that is a ClusterIP",
		q:    Question{Kind: "pod", Name: "default/client", To: "198.18.128.10:80"},
		check: func(t *testing.T, r *Resolved) {
			if r.Dest.Kind != "svc" || r.Cluster.Service == nil || r.Cluster.Service.ClusterIP != "198.18.128.10" || r.Cluster.PeerName != "pod default/web" {
				t.Errorf("dest %+v cluster %+v", r.Dest, r.Cluster)
			}
		},
	}, {
		name: "HOST:PORT that is a node",
		q:    Question{Kind: "pod", Name: "default/client", To: "198.18.0.11:10250"},
		check: func(t *testing.T, r *Resolved) {
			if r.Dest.Kind != "node" || r.Dest.Node != "node-a" || r.Cluster.PeerNode == nil || r.Cluster.PeerNode.Name != "node-a" {
				t.Errorf("dest %+v", r.Dest)
			}
		},
	}, {
		name: "HOST:PORT outside",
		q:    Question{Kind: "pod", Name: "default/client", To: "198.18.200.7:443"},
		check: func(t *testing.T, r *Resolved) {
			if r.Dest.Kind != "host" || r.Dest.Name != "198.18.200.7" || r.Dest.Node != "" || r.Cluster.PeerNode != nil || r.To.String() != "198.18.200.7:443" {
				t.Errorf("dest %+v to %v", r.Dest, r.To)
			}
		},
	}, {
		name: "a Service's DNS name",
		q:    Question{Kind: "pod", Name: "default/client", To: "web.default.svc.cluster.local:80"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.Name != "web.default.svc.cluster.local" || r.To.Addr.IsValid() || r.Dest.Kind != "svc" || r.Cluster.Service == nil || r.Cluster.Service.TargetPort != 8080 {
				t.Errorf("to %+v dest %+v", r.To, r.Dest)
			}
		},
	}, {
		name: "an outside name",
		q:    Question{Kind: "pod", Name: "default/client", To: "example.com:443"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.Name != "example.com" || r.Dest.Kind != "host" || r.Cluster.Service != nil {
				t.Errorf("to %+v dest %+v", r.To, r.Dest)
			}
		},
	}, {
		name: "node to node",
		q:    Question{Kind: "node", Name: "node-a", To: "node/node-b:10250"},
		check: func(t *testing.T, r *Resolved) {
			if r.Source.Kind != "node" || r.Source.Node != "node-a" || r.Source.Pod != nil || r.To.String() != "198.18.0.12:10250" || r.AltTo.String() != "[2001:2::12]:10250" {
				t.Errorf("source %+v to %v also %v", r.Source, r.To, r.AltTo)
			}
			if check(r, CheckPodReady, "") != nil || check(r, CheckNetworkPolicy, "") != nil || check(r, CheckNodeReady, "node node-b") == nil {
				t.Errorf("checks:%s", checkList(r))
			}
		},
	}, {
		name: "host-network pod",
		q:    Question{Kind: "pod", Name: "kube-system/kube-proxy-a", To: "pod/kube-system/kube-proxy-b"},
		check: func(t *testing.T, r *Resolved) {
			if !r.Source.HostNetwork || !r.Dest.HostNetwork || r.To.String() != "198.18.0.12" {
				t.Errorf("source %+v dest %+v to %v", r.Source, r.Dest, r.To)
			}
			if ck := check(r, CheckNetworkPolicy, "pod kube-system/kube-proxy-a"); ck == nil || ck.Result != Skip || !strings.Contains(ck.Message, "NetworkPolicies do not apply") {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "Service as the source: its backend",
		q:    Question{Kind: "svc", Name: "kube-system/kube-dns", DNS: []string{"kubernetes.default"}},
		check: func(t *testing.T, r *Resolved) {
			if r.Source.Kind != "svc" || r.Source.Pod == nil || r.Source.Pod.Key() != "kube-system/coredns-1" || r.Source.Node != "node-b" || r.Dest != nil {
				t.Errorf("source %+v", r.Source)
			}
			if ck := check(r, CheckEndpoints, "svc kube-system/kube-dns"); ck == nil || ck.Result != Pass {
				t.Errorf("checks:%s", checkList(r))
			}
		},
	}, {
		name: "Service without endpoints: the selector matches no pod",
		mod: func(c cluster) {
			c.svc("default/web").Spec.Selector = map[string]string{"app": "webapp"}
			delete(c, "slice/default/web-x1")
			delete(c, "slice/default/web-x2")
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckEndpoints, "svc default/web:80")
			want := "svc default/web port http 80/TCP has no ready endpoint: its selector app=webapp matches no pod in namespace default (api has app=api, client has app=client, web has app=web)"
			if ck == nil || ck.Result != Fail || ck.Message != want || ck.Verdict != "port-unreachable/no-endpoints" {
				t.Errorf("check %+v\nwant %s", ck, want)
			}
			if r.Dest.Pod != nil || r.Dest.Node != "" || r.Cluster.PeerNode != nil || len(r.Cluster.Service.Endpoints) != 0 {
				t.Errorf("dest %+v", r.Dest)
			}
		},
	}, {
		name: "Service without endpoints: its pods are not ready",
		mod: func(c cluster) {
			notReady(c.pod("default/web"))
			f := false
			c.slice("default/web-x1").Endpoints[0].Conditions.Ready = &f
			delete(c, "slice/default/web-x2")
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckEndpoints, "svc default/web:80")
			want := "svc default/web port http 80/TCP has no ready endpoint (1 not ready): its selector app=web matches 1 pod(s), none ready: web Running, not ready: ContainersNotReady: containers with unready status: [main]"
			if ck == nil || ck.Result != Fail || ck.Message != want {
				t.Errorf("check %+v\nwant %s", ck, want)
			}
			// The unready backend is still the peer: its namespace shows
			// whether anything listens.
			if r.Dest.Pod == nil || r.Dest.Pod.Name != "web" || r.Cluster.Service.Endpoints[0].Ready {
				t.Errorf("dest %+v", r.Dest)
			}
			if ck := check(r, CheckPodReady, "pod default/web"); ck != nil {
				t.Errorf("a Service's backend is checked through the endpoints, got %+v", ck)
			}
		},
	}, {
		name: "Service without endpoints: targetPort names no container port",
		mod: func(c cluster) {
			c.svc("default/web").Spec.Ports[0].TargetPort = intstr.FromString("web")
			delete(c, "slice/default/web-x1")
			delete(c, "slice/default/web-x2")
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckEndpoints, "svc default/web:80")
			if ck == nil || ck.Result != Fail || !strings.Contains(ck.Message, `its targetPort "web" names no container port of the 1 ready pod(s) it selects (web: http 8080/TCP)`) {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "node NotReady",
		mod: func(c cluster) {
			n := c.node("node-a")
			n.Status.Conditions[1] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady",
				Message: "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady", LastTransitionTime: metav1.NewTime(t0)}
		},
		q: Question{Kind: "pod", Name: "default/client", To: "pod/default/web:8080"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckNodeReady, "node node-a")
			want := "node node-a is NotReady: KubeletNotReady: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady (since 2026-01-02T03:04:05Z)"
			if ck == nil || ck.Result != Fail || ck.Message != want {
				t.Errorf("check %+v\nwant %s", ck, want)
			}
			if ck := check(r, CheckNodeReady, "node node-b"); ck == nil || ck.Result != Pass {
				t.Errorf("node-b: %+v", ck)
			}
		},
	}, {
		name: "node without PodCIDR",
		mod: func(c cluster) {
			n := c.node("node-b")
			n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckPodCIDR, "node node-b")
			if ck == nil || ck.Result != Fail || !strings.HasPrefix(ck.Message, "node node-b has no PodCIDR while node node-a has 198.19.1.0/24: ") || ck.Verdict != "cni-anomaly/podcidr-exhausted" {
				t.Errorf("check %+v", ck)
			}
			if r.Cluster.SourceNode.PodCIDR != "" {
				t.Errorf("SourceNode %+v", r.Cluster.SourceNode)
			}
		},
	}, {
		name: "no node has a PodCIDR (the CNI allocates)",
		mod: func(c cluster) {
			for _, n := range []string{"node-a", "node-b"} {
				c.node(n).Spec.PodCIDR, c.node(n).Spec.PodCIDRs = "", nil
				delete(c.node(n).Annotations, flannelBackendType)
			}
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			if ck := check(r, CheckPodCIDR, "node node-b"); ck == nil || ck.Result != Skip {
				t.Errorf("check %+v", ck)
			}
			if check(r, CheckOverlay, "") != nil || r.Cluster.SourceNode.OverlayDevice != "" {
				t.Errorf("no flannel, yet:%s", checkList(r))
			}
		},
	}, {
		name: "kube-proxy evicted",
		mod: func(c cluster) {
			p := c.pod("kube-system/kube-proxy-b")
			p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi."}
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			want := "Failed: Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi."
			if r.Cluster.SourceNode.KubeProxy != want || r.Cluster.PeerNode.KubeProxy != "Running" {
				t.Errorf("KubeProxy %q, want %q", r.Cluster.SourceNode.KubeProxy, want)
			}
			ck := check(r, CheckKubeProxy, "node node-b")
			if ck == nil || ck.Result != Fail || ck.Message != "kube-proxy is not running on node node-b: pod kube-system/kube-proxy-b is "+want+"; without it the node's Service rules go stale or are missing" {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "kube-proxy Pending after an eviction",
		mod: func(c cluster) {
			p := c.pod("kube-system/kube-proxy-b")
			p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory."}
			// The DaemonSet's replacement: not bound, pinned to node-b
			// by affinity, unschedulable.
			np := hostNet(mkPod("kube-system", "kube-proxy-b2", "", nil, map[string]string{"k8s-app": "kube-proxy"}))
			np.CreationTimestamp = metav1.NewTime(t0.Add(time.Minute))
			np.Spec.Affinity = nodeNameAffinity("node-b")
			np.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "Unschedulable", Message: "0/2 nodes are available: 1 Insufficient memory, 1 node(s) didn't match Pod's node affinity/selector."}}}
			c.add(np)
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			want := "Pending: Unschedulable: 0/2 nodes are available: 1 Insufficient memory, 1 node(s) didn't match Pod's node affinity/selector.; earlier pod kube-proxy-b: Failed: Evicted: The node was low on resource: memory."
			if r.Cluster.SourceNode.KubeProxy != want {
				t.Errorf("KubeProxy\n  %q\nwant\n  %q", r.Cluster.SourceNode.KubeProxy, want)
			}
			if ck := check(r, CheckKubeProxy, "node node-b"); ck == nil || ck.Result != Fail || !strings.Contains(ck.Message, "pod kube-system/kube-proxy-b2 is Pending: Unschedulable") {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "kube-proxy crash-looping",
		mod: func(c cluster) {
			p := c.pod("kube-system/kube-proxy-b")
			notReady(p)
			p.Status.ContainerStatuses[0].RestartCount = 7
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s restarting failed container=main"}}
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			want := "Running, not ready: container main: CrashLoopBackOff: back-off 5m0s restarting failed container=main, 7 restarts"
			if r.Cluster.SourceNode.KubeProxy != want {
				t.Errorf("KubeProxy %q, want %q", r.Cluster.SourceNode.KubeProxy, want)
			}
		},
	}, {
		name: "kube-proxy missing on the node only",
		mod:  func(c cluster) { delete(c, "pod/kube-system/kube-proxy-b") },
		q:    Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			if ck := check(r, CheckKubeProxy, "node node-b"); ck == nil || ck.Result != Fail || !strings.Contains(ck.Message, "no kube-proxy pod for this node (kube-proxy runs on 1 other node(s))") {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "no kube-proxy in the cluster",
		mod: func(c cluster) {
			delete(c, "pod/kube-system/kube-proxy-a")
			delete(c, "pod/kube-system/kube-proxy-b")
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			if ck := check(r, CheckKubeProxy, "node node-b"); ck == nil || ck.Result != Skip || r.Cluster.SourceNode.KubeProxy != "" {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "kube-proxy found by a configured selector",
		mod: func(c cluster) {
			delete(c, "pod/kube-system/kube-proxy-a")
			p := c.pod("kube-system/kube-proxy-b")
			p.Namespace, p.Labels = "proxy", map[string]string{"component": "kube-proxy"}
			c.add(p)
			delete(c, "pod/kube-system/kube-proxy-b")
		},
		opts: Options{KubeProxyNamespace: "proxy", KubeProxySelector: "component in (kube-proxy)"},
		q:    Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			if r.Cluster.SourceNode.KubeProxy != "Running" {
				t.Errorf("KubeProxy %q", r.Cluster.SourceNode.KubeProxy)
			}
		},
	}, {
		name: "DNS Service without endpoints",
		mod: func(c cluster) {
			notReady(c.pod("kube-system/coredns-1"))
			f := false
			c.slice("kube-system/kube-dns-x1").Endpoints[0].Conditions.Ready = &f
			c.slice("kube-system/kube-dns-x1").Endpoints[0].Conditions.Serving = &f
		},
		q: Question{Kind: "pod", Name: "default/client", DNS: []string{"example.com"}},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckDNSEndpoints, "")
			want := "svc kube-system/kube-dns port dns 53/UDP has no ready endpoint (1 not ready): its selector k8s-app=kube-dns matches 1 pod(s), none ready: coredns-1 Running, not ready: ContainersNotReady: containers with unready status: [main]"
			if ck == nil || ck.Result != Fail || ck.Message != want || ck.Verdict != "dns-failure/dns-service-down" {
				t.Errorf("check %+v\nwant %s", ck, want)
			}
			if d := r.Cluster.DNS; d == nil || len(d.Endpoints) != 1 || len(d.ReadyEndpoints()) != 0 {
				t.Errorf("DNS %+v", r.Cluster.DNS)
			}
		},
	}, {
		name: "DNS Service renamed, found by its label",
		mod: func(c cluster) {
			s := c.svc("kube-system/kube-dns")
			s.Name = "coredns"
			c.add(s)
			delete(c, "svc/kube-system/kube-dns")
			for _, k := range []string{"slice/kube-system/kube-dns-x1"} {
				c[k].(*discoveryv1.EndpointSlice).Labels[discoveryv1.LabelServiceName] = "coredns"
			}
		},
		q: Question{Kind: "pod", Name: "default/client"},
		check: func(t *testing.T, r *Resolved) {
			if r.Cluster.DNS == nil || r.Cluster.DNS.Name != "kube-system/coredns" || len(r.Cluster.DNS.ReadyEndpoints()) != 1 {
				t.Errorf("DNS %+v", r.Cluster.DNS)
			}
		},
	}, {
		name: "NetworkPolicies that select the pods, and those that do not",
		mod: func(c cluster) {
			c.add(
				mkPolicy("default", "deny-ingress", metav1.LabelSelector{}, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, 0, 0),
				mkPolicy("default", "client-egress", metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, 0, 1),
				mkPolicy("default", "front-egress", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"front", "edge"}}}}, nil, 0, 2),
				mkPolicy("default", "api-only", metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, 1, 1),
				mkPolicy("default", "not-front", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}}, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, 0, 0),
				mkPolicy("other", "deny-all", metav1.LabelSelector{}, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, 0, 0),
			)
		},
		q: Question{Kind: "pod", Name: "default/client", To: "pod/default/web:8080"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckNetworkPolicy, "pod default/client")
			want := "egress from pod default/client is restricted by NetworkPolicy default/client-egress (app=client), default/front-egress (tier in (edge,front)): only what they allow passes"
			if ck == nil || ck.Result != Note || ck.Message != want {
				t.Errorf("egress %+v\nwant %s", ck, want)
			}
			ck = check(r, CheckNetworkPolicy, "pod default/web")
			want = "ingress to pod default/web is restricted by NetworkPolicy default/deny-ingress (all pods; denies all ingress): only what they allow passes"
			if ck == nil || ck.Result != Note || ck.Message != want {
				t.Errorf("ingress %+v\nwant %s", ck, want)
			}
		},
	}, {
		name: "no NetworkPolicy selects the pod",
		mod: func(c cluster) {
			c.add(mkPolicy("default", "api-only", metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}, nil, 1, 0))
		},
		q: Question{Kind: "pod", Name: "default/client", To: "pod/default/web:8080"},
		check: func(t *testing.T, r *Resolved) {
			if ck := check(r, CheckNetworkPolicy, "pod default/web"); ck == nil || ck.Result != Pass || ck.Message != "no NetworkPolicy in default selects pod default/web for ingress: its ingress is not restricted by policy" {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "a source pod not scheduled",
		mod: func(c cluster) {
			p := c.pod("default/client")
			p.Spec.NodeName = ""
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/2 nodes are available: 2 Insufficient cpu."}}}
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			if r.Source.Node != "" || r.Cluster.SourceNode != nil {
				t.Errorf("source %+v", r.Source)
			}
			if ck := check(r, CheckPodReady, "pod default/client"); ck == nil || ck.Result != Fail ||
				ck.Message != "pod default/client is Pending: Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.; it is on no node yet" {
				t.Errorf("check %+v", ck)
			}
		},
	}, {
		name: "flannel sends from another address",
		mod: func(c cluster) {
			c.node("node-a").Annotations[flannelPublicIP] = "198.18.5.11"
		},
		q: Question{Kind: "pod", Name: "default/client", To: "pod/default/web:8080"},
		check: func(t *testing.T, r *Resolved) {
			ck := check(r, CheckOverlay, "node node-a")
			if ck == nil || ck.Result != Fail || !strings.HasPrefix(ck.Message, "flannel on node node-a uses 198.18.5.11 for its overlay (flannel.1, vxlan UDP 8472; its public-ip annotation), not the node's InternalIP 198.18.0.11, 2001:2::11") {
				t.Errorf("check %+v", ck)
			}
			if ck := check(r, CheckOverlay, "node node-b"); ck == nil || ck.Result != Pass {
				t.Errorf("node-b %+v", ck)
			}
		},
	}, {
		name: "headless Service: the backend is the destination",
		mod: func(c cluster) {
			s := c.svc("default/web")
			s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
		},
		q: Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"},
		check: func(t *testing.T, r *Resolved) {
			if r.To.String() != "198.19.1.7:8080" || r.Cluster.Service != nil || r.Dest.Pod.Name != "web" {
				t.Errorf("to %v service %+v", r.To, r.Cluster.Service)
			}
		},
	}, {
		name: "dual-stack Service",
		mod: func(c cluster) {
			s := c.svc("default/web")
			s.Spec.ClusterIPs = []string{"198.18.128.10", "2001:2:ffff::10"}
		},
		q: Question{Kind: "pod", Name: "default/client", To: "[2001:2:ffff::10]:80"},
		check: func(t *testing.T, r *Resolved) {
			sv := r.Cluster.Service
			if sv == nil || sv.ClusterIP != "2001:2:ffff::10" || len(sv.Endpoints) != 1 || sv.Endpoints[0].IP != "2001:2:0:1::7" {
				t.Errorf("service %+v", sv)
			}
		},
	}, {
		name: "cluster domain option",
		opts: Options{ClusterDomain: "corp.example"},
		q:    Question{Kind: "pod", Name: "default/client", To: "web.default.svc.corp.example:80"},
		check: func(t *testing.T, r *Resolved) {
			if r.Cluster.APIName != "kubernetes.default.svc.corp.example" || r.Cluster.Service == nil {
				t.Errorf("cluster %+v", r.Cluster)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster()
			if tt.mod != nil {
				tt.mod(c)
			}
			v, _ := startView(t, c.objects(), tt.opts)
			r, err := v.Resolve(tt.q)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			tt.check(t, r)
			if t.Failed() {
				t.Logf("checks:%s", checkList(r))
			}
		})
	}
}

func TestAgent(t *testing.T) {
	agent := func(name, node string, age time.Duration, mod func(p *corev1.Pod)) *corev1.Pod {
		p := mkPod("netdiag", name, node, []string{"198.19.9.1"}, map[string]string{"app.kubernetes.io/name": "netdiag-agent"})
		p.CreationTimestamp = metav1.NewTime(t0.Add(-age))
		if mod != nil {
			mod(p)
		}
		return p
	}
	pending := func(p *corev1.Pod) {
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "main", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}}
	}
	deleting := func(p *corev1.Pod) { now := metav1.NewTime(t0); p.DeletionTimestamp = &now }
	c := cluster{}
	c.add(
		mkNode("node-a", "198.18.0.11", "2001:2::11"), mkNode("node-b", "198.18.0.12", "2001:2::12"), mkNode("node-c", "198.18.0.13", "2001:2::13"),
		// node-a: a rollout in progress: the old, the new, one more
		// coming up and one going away.
		agent("agent-old", "node-a", time.Hour, nil),
		agent("agent-new", "node-a", time.Minute, nil),
		agent("agent-coming", "node-a", 0, pending),
		agent("agent-going", "node-a", -time.Minute, deleting),
		// node-b: only an agent that cannot start.
		agent("agent-b", "node-b", time.Minute, pending),
		// The label in another namespace is not an agent.
		func() *corev1.Pod {
			p := agent("impostor", "node-c", 0, nil)
			p.Namespace = "default"
			return p
		}(),
	)
	v, _ := startView(t, c.objects(), Options{})
	tests := []struct{ node, want, err string }{
		{"node-a", "netdiag/agent-new", ""},
		{"node-b", "", "the netdiag agent on node node-b is not running: pod netdiag/agent-b is Pending: container main: ImagePullBackOff: Back-off pulling image"},
		{"node-c", "", "no netdiag agent on node node-c (looked for pods labelled app.kubernetes.io/name=netdiag-agent in namespace netdiag; agents run on: node-a, node-b)"},
		{"Node_C", "", `bad node name "Node_C"`},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			p, err := v.Agent(tt.node)
			switch {
			case tt.err != "":
				if err == nil || err.Error() != tt.err && !strings.HasPrefix(err.Error(), tt.err) {
					t.Errorf("Agent(%s) = %v, %v; want error %q", tt.node, p, err, tt.err)
				}
			case err != nil || p.Key() != tt.want:
				t.Errorf("Agent(%s) = %v, %v; want %s", tt.node, p, err, tt.want)
			}
		})
	}
}

// TestInformersFollowChanges shows a question sees a change made after
// Start through the watch alone: no List is issued again.
func TestInformersFollowChanges(t *testing.T) {
	c := baseCluster()
	v, cs := startView(t, c.objects(), Options{})
	lists := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "list" {
				n++
			}
		}
		return n
	}
	before := lists()
	if before != 5 {
		t.Errorf("%d lists at start, want one per resource (5)", before)
	}
	ctx := t.Context()
	// eventually waits, boundedly, for the informers to see an event.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("the view did not see %s within 5s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	late := mkPod("default", "late", "node-b", []string{"198.19.2.20"}, map[string]string{"app": "late"})
	if _, err := cs.CoreV1().Pods("default").Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the new pod", func() bool { _, err := v.Pod("default", "late"); return err == nil })
	if p, _ := v.PodByIP(netip.MustParseAddr("198.19.2.20")); p == nil || p.Name != "late" {
		t.Errorf("PodByIP: %v", p)
	}

	sl := c.slice("default/web-x1").DeepCopy()
	f := false
	sl.Endpoints[0].Conditions.Ready = &f
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-x2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the endpoints go unready", func() bool {
		r, err := v.Resolve(Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"})
		return err == nil && check(r, CheckEndpoints, "").Result == Fail
	})

	kp := c.pod("kube-system/kube-proxy-b").DeepCopy()
	kp.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory."}
	if _, err := cs.CoreV1().Pods("kube-system").UpdateStatus(ctx, kp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("kube-proxy evicted", func() bool {
		n, err := v.Node("node-b")
		return err == nil && n.KubeProxy == "Failed: Evicted: The node was low on resource: memory."
	})

	if err := cs.CoreV1().Pods("default").Delete(ctx, "late", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the pod deleted", func() bool { _, err := v.Pod("default", "late"); return err != nil })

	if after := lists(); after != before {
		t.Errorf("%d List calls after Start, want none: the informers' watches carry the changes", after-before)
	}
}

func TestStartErrors(t *testing.T) {
	forbid := func(resource, group string) func(cs *fake.Clientset) {
		return func(cs *fake.Clientset) {
			cs.PrependReactor("list", resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: group, Resource: resource}, "",
					errors.New(`User "system:serviceaccount:netdiag:netdiag" cannot list resource "`+resource+`" in API group "`+group+`" at the cluster scope`))
			})
		}
	}
	tests := []struct {
		name  string
		opts  Options
		setup func(cs *fake.Clientset)
		want  []string
	}{
		{"RBAC forbids NetworkPolicies", Options{}, forbid("networkpolicies", "networking.k8s.io"), []string{
			"kubernetes view: not synced after ", "(context deadline exceeded)",
			`networkpolicies.networking.k8s.io (failed to list *v1.NetworkPolicy: networkpolicies.networking.k8s.io is forbidden: User "system:serviceaccount:netdiag:netdiag" cannot list resource "networkpolicies"`,
			"netdiag needs get, list and watch on pods, services, nodes",
		}},
		{"bad selectors", Options{AgentSelector: "app=(", DNSService: "kube-dns", AgentNamespace: "Net_Diag"}, nil, []string{
			`agent selector "app=("`, `agent namespace "Net_Diag": a namespace is`, `DNS Service "kube-dns": give NAMESPACE/NAME, e.g. kube-system/kube-dns`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(baseCluster().objects()...)
			if tt.setup != nil {
				tt.setup(cs)
			}
			tt.opts.Logger = slog.New(slog.DiscardHandler)
			v := New(cs, tt.opts)
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			err := v.Start(ctx)
			if err == nil {
				v.Stop()
				t.Fatal("Start succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\nwant it to contain\n  %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "pods (") {
				t.Errorf("names a resource that synced: %v", err)
			}
			if _, err := v.Pod("default", "web"); err == nil || !strings.Contains(err.Error(), "not started") {
				t.Errorf("after a failed Start, Pod: %v", err)
			}
		})
	}
}

func TestNearest(t *testing.T) {
	tests := []struct {
		typed string
		names []string
		want  []string
	}{
		{"web", []string{"api", "web-7d9f8-x2k4q", "client", "my-web", "wbe"}, []string{"web-7d9f8-x2k4q", "my-web", "wbe", "api", "client"}},
		{"kube-sytem", []string{"default", "kube-system", "kube-public"}, []string{"kube-system", "kube-public", "default"}},
		{"x", nil, nil},
	}
	for _, tt := range tests {
		if got := nearest(tt.names, tt.typed); !slices.Equal(got, tt.want) {
			t.Errorf("nearest(%q) = %q, want %q", tt.typed, got, tt.want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance = %d", d)
	}
}

func TestPodState(t *testing.T) {
	running := func(mod func(p *corev1.Pod)) *corev1.Pod {
		p := mkPod("default", "p", "node-a", []string{"198.19.1.9"}, nil)
		if mod != nil {
			mod(p)
		}
		return p
	}
	now := metav1.NewTime(t0)
	tests := []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"running and ready", running(nil), "Running"},
		{"not ready, init container done", running(func(p *corev1.Pod) {
			notReady(p)
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}
		}), "Running, not ready: ContainersNotReady: containers with unready status: [main]"},
		{"init container failing", running(func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodPending
			p.Status.Conditions = nil
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init", RestartCount: 3, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 2}}}}
		}), "Pending: container init: Error (exit code 2), 3 restarts"},
		{"terminating", running(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), "Running, terminating"},
		{"evicted", running(func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: ephemeral-storage. " + strings.Repeat("Container main was using 9Gi. ", 20)}
			// The message is cut at 200 characters.
		}), "Failed: Evicted: The node was low on resource: ephemeral-storage. " + strings.Repeat("Container main was using 9Gi. ", 4) + "Container main was using 9Gi..."},
		{"no phase yet", running(func(p *corev1.Pod) { p.Status = corev1.PodStatus{} }), "Pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podFrom(slimPod(tt.pod)).State; got != tt.want {
				t.Errorf("state\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

func TestPlace(t *testing.T) {
	c := baseCluster()
	v, _ := startView(t, c.objects(), Options{})
	tests := []struct {
		q    Question
		src  string
		dest string
	}{
		{Question{Kind: "pod", Name: "default/client", To: "svc/default/web:80"}, "pod default/client on node node-b", "pod default/web on node node-a"},
		{Question{Kind: "pod", Name: "kube-system/kube-proxy-a", To: "198.18.200.7:80"}, "node node-a", ""},
		{Question{Kind: "node", Name: "node-b", To: "node/node-a"}, "node node-b", "node node-a"},
	}
	for _, tt := range tests {
		r, err := v.Resolve(tt.q)
		if err != nil {
			t.Fatal(err)
		}
		src, dst := r.Source.Place(), r.Dest.Place()
		if src.String() != tt.src || dst.String() != tt.dest {
			t.Errorf("%+v: places %q, %q; want %q, %q", tt.q, src, dst, tt.src, tt.dest)
		}
		if src.Pod != nil && (src.Pod.UID == "" || !src.Pod.IP.IsValid()) {
			t.Errorf("source pod %+v", src.Pod)
		}
	}
}
