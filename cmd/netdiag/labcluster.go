package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/netdiag/netdiag/lab/cluster"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// labUpCluster brings a real cluster up on a lab of the cluster shape,
// checks its health, serves its apiserver on this machine's loopback and
// holds it until interrupted (or for hold), then takes everything down.
// Its processes are this command's children: they die with it, and `netdiag
// lab down` removes what a killed run left.
func labUpCluster(c *cli, inst, out string, hold time.Duration, module string) (code int) {
	ctx, cancel := signalContext()
	defer cancel()
	start := time.Now()
	// With -o json, stdout is the one JSON document; progress goes to
	// stderr.
	info := c.stdout
	if out == "json" {
		info = c.stderr
	}
	fmt.Fprintf(info, "lab %q: building a real cluster (control plane, 2 nodes with containerd, kubelet, flannel and kube-proxy, CoreDNS, web, client)...\n", inst)
	cl, err := cluster.Up(ctx, inst, cluster.UpOptions{ModuleDir: module, Log: c.log})
	if err != nil {
		return c.failure("lab up --cluster", err)
	}
	// The deferred teardown's failure is the command's exit code.
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		d0 := time.Now()
		r, err := cl.Down(dctx, c.log)
		if err != nil {
			code = c.failure("lab up --cluster", fmt.Errorf("take the cluster down: %w", err))
			return
		}
		fmt.Fprintf(info, "lab %q is down (%.2fs): removed %d namespaces, %d processes, %d files\n",
			inst, time.Since(d0).Seconds(), len(r.Namespaces), len(r.Processes), len(r.Files))
	}()

	health := cl.Nodes.Health(ctx)
	kubeconfig := filepath.Join(cl.Lab.StateDir, "kubeconfig")
	addr, err := cl.CP.ServeLoopback(ctx, kubeconfig)
	if err != nil {
		return c.failure("lab up --cluster", err)
	}
	healthy := true
	for _, h := range health {
		healthy = healthy && h.Err == nil
	}
	if !healthy {
		code = exitInternal
	}
	if out == "json" {
		type check struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail,omitempty"`
			Error  string `json:"error,omitempty"`
			MS     int64  `json:"ms"`
		}
		var checks []check
		for _, h := range health {
			ch := check{Name: h.Name, OK: h.Err == nil, Detail: h.Detail, MS: h.Took.Milliseconds()}
			if h.Err != nil {
				ch.Error = h.Err.Error()
			}
			checks = append(checks, ch)
		}
		t := cl.Times
		if rc := writeJSON(c, map[string]any{
			"instance": inst, "healthy": healthy, "kubeconfig": kubeconfig, "apiserver": "https://" + addr,
			"up_ms": time.Since(start).Milliseconds(), "lab_ms": t.Lab.Milliseconds(), "control_plane_ms": t.ControlPlane.Milliseconds(),
			"nodes_ms": t.Nodes.Milliseconds(), "workloads_ms": t.Addons.Milliseconds(), "health": checks,
		}); rc != exitOK {
			return rc
		}
	} else {
		printCluster(ctx, c.stdout, cl, health, time.Since(start))
		fmt.Fprintf(c.stdout, "\nkubeconfig: %s (the apiserver, forwarded to https://%s)\n", kubeconfig, addr)
	}
	if hold > 0 {
		fmt.Fprintf(info, "holding the cluster for %s (Ctrl-C ends it sooner)\n", hold)
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
	} else {
		fmt.Fprintln(info, "the cluster runs until Ctrl-C")
		<-ctx.Done()
	}
	return code
}

func printCluster(ctx context.Context, w io.Writer, cl *cluster.Cluster, health []cluster.HealthCheck, took time.Duration) {
	t := cl.Times
	fmt.Fprintf(w, "lab %q: real cluster up in %.1fs (lab %.1fs, control plane %.1fs, nodes Ready with flannel and kube-proxy %.1fs, workloads available %.1fs)\n\n",
		cl.Lab.Instance, took.Seconds(), t.Lab.Seconds(), t.ControlPlane.Seconds(), t.Nodes.Seconds(), t.Addons.Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tINTERNAL IPS\tPODCIDRS\tNETNS\tREADY AFTER")
	for _, n := range cl.Nodes.Nodes {
		fmt.Fprintf(tw, "%s\t%s,%s\t%s,%s\t%s\t%.1fs\n", n.Name, n.Lab.InternalIP, n.Lab.InternalIP6, n.Lab.PodCIDR, n.Lab.PodCIDR6, n.Lab.NetnsPath, n.Ready.Seconds())
	}
	tw.Flush()
	fmt.Fprintln(w)
	if pods, err := cl.CP.API.Clientset().CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "POD\tNODE\tPHASE\tIPS")
		for _, p := range pods.Items {
			var ips []string
			for _, ip := range p.Status.PodIPs {
				ips = append(ips, ip.IP)
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%v\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, ips)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "health:")
	for _, h := range health {
		if h.Err != nil {
			fmt.Fprintf(w, "  FAIL %s: %v\n", h.Name, h.Err)
			continue
		}
		fmt.Fprintf(w, "  ok   %s: %s\n", h.Name, h.Detail)
	}
}
