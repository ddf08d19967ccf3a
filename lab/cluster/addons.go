package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/podns"
	"github.com/netdiag/netdiag/internal/elfinfo"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab/containerd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The cluster's workloads, as the seeds' clusters had them: CoreDNS as a
// Deployment with the kubernetes plugin behind the kube-dns Service, and
// the lab's application, web (a Service in front of an HTTP server on
// node-a) and client (on node-b, where the seeds' broken pods were). Their
// images are built here from static binaries and imported on every node;
// nothing is pulled (imagePullPolicy Never).
const (
	CoreDNSRef = "netdiag.lab/coredns:1"
	// WebPort is the web server's container port; the web Service
	// serves it on port 80.
	WebPort = 8080

	corednsName = "coredns"
	dnsLabel    = "kube-dns" // k8s-app=kube-dns, as every CoreDNS install labels it
)

// AddonOptions tune DeployAddons.
type AddonOptions struct {
	// ModuleDir is a directory inside this module, for building the
	// server binary; empty means the working directory.
	ModuleDir string
	// Timeout bounds the wait for every Deployment to be available; 0
	// means 3 minutes.
	Timeout time.Duration
}

// Addons are the deployed workloads.
type Addons struct {
	// Images is how long building and importing the images took; Ready
	// how long from the first object created until every Deployment was
	// available.
	Images, Ready time.Duration
}

// Workload names, as `netdiag diagnose` takes them: NAMESPACE/NAME of the
// Deployments (and of the web Service).
var (
	CoreDNS = Workload{Namespace: "kube-system", Name: corednsName, Node: "node-b"}
	Web     = Workload{Namespace: "default", Name: "web", Node: "node-a"}
	Client  = Workload{Namespace: "default", Name: "client", Node: "node-b"}
)

// Workload is a Deployment of the lab's cluster, pinned to one node.
type Workload struct{ Namespace, Name, Node string }

func (w Workload) String() string { return w.Namespace + "/" + w.Name }

// DeployAddons builds and imports the images, creates CoreDNS, web and
// client, and waits until every Deployment is available.
func (ns *Nodes) DeployAddons(ctx context.Context, opts AddonOptions) (*Addons, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.ModuleDir == "" {
		opts.ModuleDir = "."
	}
	l := ns.CP.Lab
	dnsSvc, err := l.Service(l.DNSService)
	if err != nil {
		return nil, err
	}
	ext, err := l.Host("ext")
	if err != nil {
		return nil, err
	}
	a := &Addons{}
	t0 := time.Now()
	coredns, err := tools.FindGoInstalled("coredns")
	if err != nil {
		return nil, &MissingError{Names: []string{"coredns"}}
	}
	if err := elfinfo.Static(coredns); err != nil {
		return nil, fmt.Errorf("the CoreDNS image holds %s alone, which must be static: %w (scripts/install-deps builds it with CGO_ENABLED=0)", coredns, err)
	}
	server := filepath.Join(ns.CP.Dir, "nodes", "server")
	if err := containerd.BuildStatic(ctx, opts.ModuleDir, containerd.ServerPackage, server); err != nil {
		return nil, fmt.Errorf("server image: %w", err)
	}
	for _, n := range ns.Nodes {
		for _, img := range []containerd.Image{
			{Ref: containerd.ServerRef, Binary: server},
			{Ref: CoreDNSRef, Binary: coredns},
		} {
			if err := n.Runtime.ImportImage(ctx, img); err != nil {
				return nil, fmt.Errorf("import %s on %s: %w", img.Ref, n.Name, err)
			}
		}
	}
	a.Images = time.Since(t0)

	t0 = time.Now()
	cs := ns.CP.API.Clientset()
	if err := createCoreDNS(ctx, cs, dnsSvc.ClusterIP, l.ClusterDomain, ext.IP); err != nil {
		return nil, err
	}
	if err := createApp(ctx, cs); err != nil {
		return nil, err
	}
	if err := waitAvailable(ctx, cs, opts.Timeout, CoreDNS, Web, Client); err != nil {
		return nil, err
	}
	a.Ready = time.Since(t0)
	return a, nil
}

// corefile is CoreDNS's configuration as kubeadm writes it, forwarding
// other names to the outside network's resolver by address: the lab's
// kubelets give dnsPolicy Default pods an empty resolv.conf.
func corefile(domain, upstream string) string {
	return fmt.Sprintf(`.:53 {
    errors
    health
    ready
    kubernetes %s in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . %s:53
    cache 30
    loop
    loadbalance
}
`, domain, upstream)
}

func createCoreDNS(ctx context.Context, cs kubernetes.Interface, clusterIP, domain, upstream string) error {
	const ns = "kube-system"
	labels := map[string]string{"k8s-app": dnsLabel}
	role := "system:" + corednsName
	objs := []func() error{
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: corednsName}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: corednsName}}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: corednsName},
				Data: map[string]string{"Corefile": corefile(domain, upstream)}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			d := deployment(CoreDNS, labels, corev1.Container{
				Name: corednsName, Image: CoreDNSRef, ImagePullPolicy: corev1.PullNever,
				Args:         []string{"-conf", "/etc/coredns/Corefile"},
				VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
				Ports: []corev1.ContainerPort{
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
					{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
				},
				LivenessProbe:  httpProbe("/health", 8080),
				ReadinessProbe: httpProbe("/ready", 8181),
			})
			spec := &d.Spec.Template.Spec
			spec.ServiceAccountName = corednsName
			spec.DNSPolicy = corev1.DNSDefault
			spec.PriorityClassName = "system-cluster-critical"
			spec.Volumes = []corev1.Volume{{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: corednsName}}}}}
			_, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: dnsLabel, Labels: labels},
				Spec: corev1.ServiceSpec{Selector: labels, ClusterIP: clusterIP, Ports: []corev1.ServicePort{
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
					{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
					{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
				}},
			}, metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range objs {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("CoreDNS: %w", err)
		}
	}
	return nil
}

// createApp creates web (a Deployment and its Service, port 80) and client.
func createApp(ctx context.Context, cs kubernetes.Interface) error {
	server := func(w Workload) *appsv1.Deployment {
		return deployment(w, map[string]string{"app": w.Name}, corev1.Container{
			Name: w.Name, Image: containerd.ServerRef, ImagePullPolicy: corev1.PullNever,
			Args:           []string{"-listen", ":" + strconv.Itoa(WebPort)},
			Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: WebPort}},
			ReadinessProbe: httpProbe("/", WebPort),
		})
	}
	for _, w := range []Workload{Web, Client} {
		if _, err := cs.AppsV1().Deployments(w.Namespace).Create(ctx, server(w), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: Web.Name}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": Web.Name},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(WebPort)}},
	}}
	if _, err := cs.CoreV1().Services(Web.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("the web Service %s: %w", Web, err)
	}
	return nil
}

// deployment is a one-replica Deployment of c on w's node.
func deployment(w Workload, labels map[string]string, c corev1.Container) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{corev1.LabelHostname: w.Node},
					TerminationGracePeriodSeconds: new(int64),
					Containers:                    []corev1.Container{c},
				},
			},
		},
	}
}

func httpProbe(path string, port int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port)}},
		PeriodSeconds: 1}
}

// waitAvailable waits until every Deployment has all its replicas
// available; on timeout it says what each pod is waiting for.
func waitAvailable(ctx context.Context, cs kubernetes.Interface, limit time.Duration, ws ...Workload) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []string
		for _, w := range ws {
			d, err := cs.AppsV1().Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
			if err != nil {
				waiting = append(waiting, fmt.Sprintf("%s: %v", w, err))
				continue
			}
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.AvailableReplicas != want || d.Status.UpdatedReplicas != want {
				waiting = append(waiting, fmt.Sprintf("%s: %d of %d available (%s)", w, d.Status.AvailableReplicas, want, podStates(ctx, cs, w.Namespace, d.Spec.Selector)))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the Deployments are not available after %s: %s", limit, strings.Join(waiting, "; "))
		case <-tick.C:
		}
	}
}

// podStates says, for the pods a selector picks, where each is and what it
// waits for.
func podStates(ctx context.Context, cs kubernetes.Interface, namespace string, sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err.Error()
	}
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return err.Error()
	}
	if len(pods.Items) == 0 {
		return "no pods"
	}
	var out []string
	for _, p := range pods.Items {
		st := fmt.Sprintf("%s on %q %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				st += fmt.Sprintf(", %s: %s", c.Type, c.Message)
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				st += fmt.Sprintf(", %s waiting: %s %s", c.Name, w.Reason, w.Message)
			}
		}
		out = append(out, st)
	}
	return strings.Join(out, ", ")
}

// PodNetns asks the node's containerd, through CRI as the kubelet and
// netdiag's agent do, for the network namespace of the pod with this UID.
func (n *Node) PodNetns(ctx context.Context, uid string) (string, error) {
	conn, err := grpc.NewClient("unix://"+n.Runtime.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	list, err := rs.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{
		State:         &cri.PodSandboxStateValue{State: cri.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": uid}}})
	if err != nil {
		return "", err
	}
	if len(list.Items) != 1 {
		return "", fmt.Errorf("%d ready sandboxes for pod UID %s on %s, want 1", len(list.Items), uid, n.Name)
	}
	st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: list.Items[0].Id, Verbose: true})
	if err != nil {
		return "", err
	}
	_, path, err := podns.ParseSandboxInfo(st.GetInfo()["info"])
	return path, err
}

// RunningPod is the one Running pod of a workload.
func (ns *Nodes) RunningPod(ctx context.Context, w Workload) (*corev1.Pod, error) {
	cs := ns.CP.API.Clientset()
	pods, err := cs.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var running []corev1.Pod
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && slices.ContainsFunc(p.OwnerReferences, func(o metav1.OwnerReference) bool {
			return o.Kind == "ReplicaSet" && strings.HasPrefix(o.Name, w.Name+"-")
		}) {
			running = append(running, p)
		}
	}
	if len(running) != 1 {
		return nil, fmt.Errorf("%d Running pods of %s, want 1", len(running), w)
	}
	return &running[0], nil
}
