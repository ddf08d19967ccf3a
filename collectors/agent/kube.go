package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// nodePods knows the pods of one node through a watch on them alone (a
// field selector on spec.nodeName): near nothing to keep, nothing to poll.
// A pod it does not know is asked for once, to say where it runs instead.
type nodePods struct {
	client kubernetes.Interface
	lister listers.PodLister
}

// NodePods starts watching the node's pods and waits for the first list.
func NodePods(ctx context.Context, client kubernetes.Interface, node string) (PodLocator, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}))
	inf := f.Core().V1().Pods()
	// Only what the agent reads is kept.
	if err := inf.Informer().SetTransform(func(obj any) (any, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
			Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}}, nil
	}); err != nil {
		return nil, err
	}
	lister := inf.Lister()
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), inf.Informer().HasSynced) {
		return nil, fmt.Errorf("the pods of node %s could not be listed within 30s (does the agent's ServiceAccount may list and watch pods?)", node)
	}
	return &nodePods{client: client, lister: lister}, nil
}

func (n *nodePods) PodNode(namespace, name string) (string, string, error) {
	if p, err := n.lister.Pods(namespace).Get(name); err == nil {
		return p.Spec.NodeName, string(p.UID), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := n.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", fmt.Errorf("no pod %s/%s in the cluster", namespace, name)
	}
	if err != nil {
		return "", "", fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return p.Spec.NodeName, string(p.UID), nil
}
