package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/netdiag/netdiag/internal/kubeapi"
)

// APIPods asks the API server where a pod runs, once per call: no watch
// to keep, nothing to poll, a few milliseconds per diagnosis.
type APIPods struct{ Client *kubeapi.Client }

func (a APIPods) PodNode(ctx context.Context, namespace, name string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	node, uid, err := a.Client.PodNode(ctx, namespace, name)
	if kubeapi.IsNotFound(err) {
		return "", "", fmt.Errorf("no pod %s/%s in the cluster", namespace, name)
	}
	if err != nil {
		return "", "", fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return node, uid, nil
}
