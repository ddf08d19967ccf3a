package kubetest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeAPIServer makes the test binary stand in for a kube-apiserver that
// cannot start, as TestStartFailureShowsLog needs.
const fakeAPIServer = "KUBETEST_FAKE_APISERVER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeAPIServer) != "" {
		fmt.Fprintln(os.Stderr, "E0101 00:00:00.000000 1 run.go:72] fake kube-apiserver cannot start with", len(os.Args)-1, "flags")
		os.Exit(1)
	}
	Main(m)
}

// TestListenAddr checks which listen addresses are taken: never one of the
// machine's own namespace other than loopback.
func TestListenAddr(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string // empty: refused
	}{
		{Options{}, "127.0.0.1"},
		{Options{Listen: "::1"}, "::1"},
		{Options{Listen: "127.0.0.2"}, "127.0.0.2"},
		{Options{Listen: "198.18.0.1"}, ""},
		{Options{Listen: "0.0.0.0"}, ""},
		{Options{Listen: "not-an-ip"}, ""},
		{Options{Netns: "/run/netns/ndl-x", Listen: "198.18.0.1"}, "198.18.0.1"},
		{Options{Netns: "/run/netns/ndl-x", Listen: "::ffff:198.18.0.1"}, "198.18.0.1"},
		{Options{Netns: "/run/netns/ndl-x", Listen: "2001:2::1"}, "2001:2::1"},
		{Options{Netns: "/run/netns/ndl-x", Listen: "::"}, ""},
		{Options{Netns: "/run/netns/ndl-x", Listen: "fe80::1%eth0"}, ""},
	} {
		got, err := listenAddr(tc.opts)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%+v: accepted %s, want refused", tc.opts, got)
		case tc.want != "" && err != nil:
			t.Errorf("%+v: %v", tc.opts, err)
		case tc.want != "" && got.String() != tc.want:
			t.Errorf("%+v: %s, want %s", tc.opts, got, tc.want)
		}
	}
}

// TestEndpointReconcilerNeedsRoutableAddress: the reconciler writes the
// advertised address into the kubernetes Endpoints, which refuses loopback,
// so Options with it and a loopback or IPv6 address fail before anything
// starts.
func TestEndpointReconcilerNeedsRoutableAddress(t *testing.T) {
	for _, opts := range []Options{
		{EndpointReconciler: true},
		{EndpointReconciler: true, Listen: "::1"},
		{EndpointReconciler: true, Netns: "/run/netns/ndl-x", Listen: "2001:2::1"},
		{Port: 70000},
	} {
		c := &Cluster{Dir: t.TempDir()}
		err := c.start(context.Background(), programs{}, opts)
		if err == nil || c.etcd != nil || c.ns != nil {
			t.Errorf("%+v: err %v, etcd %v, namespace %v: want refused before anything starts", opts, err, c.etcd, c.ns)
		}
	}
}

// TestStartFailureShowsLog runs a kube-apiserver that exits at once: the
// error must come at once, not after the readiness timeout, and carry the
// end of its log; etcd must be stopped with it.
func TestStartFailureShowsLog(t *testing.T) {
	bins, err := findPrograms()
	if err != nil {
		missing(t, err)
	}
	bins.apiserver = os.Args[0]
	t.Setenv(fakeAPIServer, "1")
	c := &Cluster{Dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = c.start(ctx, bins, Options{})
	if serr := c.stop(); serr != nil {
		t.Errorf("stop: %v", serr)
	}
	if err == nil {
		t.Fatal("start succeeded with a kube-apiserver that exits")
	}
	t.Logf("the error:\n%v", err)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the failure took %s to be reported", took)
	}
	for _, want := range []string{"kube-apiserver exited", "fake kube-apiserver cannot start with", "kube-apiserver.log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	select {
	case <-c.etcd.Done():
	default:
		t.Errorf("etcd (pid %d) still runs", c.etcd.PID())
	}
}

// TestShared gives two tests the same control plane.
func TestShared(t *testing.T) {
	var first *Cluster
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			c := Shared(t)
			if first == nil {
				first = c
			} else if c != first {
				t.Fatal("Shared started a second cluster")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.Clientset().CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
