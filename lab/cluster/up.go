package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/netdiag/netdiag/internal/kubetest"
	"github.com/netdiag/netdiag/lab"
)

// Cluster is a lab of the cluster shape with its real cluster running on
// it: what `netdiag lab up --cluster` brings up.
type Cluster struct {
	Lab    *lab.Lab
	CP     *ControlPlane
	Nodes  *Nodes
	Addons *Addons
	Times  Times
}

// Times are how long each stage of Up took.
type Times struct {
	Lab, ControlPlane, Nodes, Addons, Total time.Duration
}

// UpOptions tune Up.
type UpOptions struct {
	// ModuleDir is a directory inside this module, for building the pause
	// and server images; empty means the working directory.
	ModuleDir string
	// Nodes tune the nodes (ModuleDir and Log are set from here).
	Nodes NodeOptions
	// Log says what each stage did; default: discarded.
	Log *slog.Logger
}

// Up builds the lab instance in the cluster shape, then the control plane,
// the nodes with their network, and the workloads. On error, or when ctx
// ends first, everything it made is removed.
func Up(ctx context.Context, instance string, opts UpOptions) (c *Cluster, err error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := findPrograms(); err != nil {
		return nil, err
	}
	if _, err := findNetPrograms(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	c = &Cluster{}
	if c.Lab, err = lab.UpShape(ctx, instance, lab.ShapeCluster, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_, derr := c.Down(context.WithoutCancel(ctx), log)
			err = errors.Join(err, derr)
			c = nil
		}
	}()
	c.Times.Lab = time.Since(t0)
	log.Info("lab up", "instance", instance, "took", c.Times.Lab.Round(time.Millisecond))

	t := time.Now()
	if c.CP, err = Start(ctx, c.Lab, Options{}); err != nil {
		return c, fmt.Errorf("control plane: %w", err)
	}
	c.Times.ControlPlane = time.Since(t)
	log.Info("control plane up", "apiserver", c.CP.URL, "took", c.Times.ControlPlane.Round(time.Millisecond))

	t = time.Now()
	no := opts.Nodes
	no.ModuleDir, no.Log = opts.ModuleDir, log
	if c.Nodes, err = c.CP.JoinNodes(ctx, no); err != nil {
		return c, fmt.Errorf("nodes: %w", err)
	}
	c.Times.Nodes = time.Since(t)
	log.Info("nodes Ready, flannel and kube-proxy up", "took", c.Times.Nodes.Round(time.Millisecond))

	t = time.Now()
	if c.Addons, err = c.Nodes.DeployAddons(ctx, AddonOptions{ModuleDir: opts.ModuleDir}); err != nil {
		return c, fmt.Errorf("workloads: %w", err)
	}
	c.Times.Addons = time.Since(t)
	c.Times.Total = time.Since(t0)
	log.Info("CoreDNS, web and client available", "took", c.Times.Addons.Round(time.Millisecond))
	return c, nil
}

// Down stops the nodes and the control plane and removes the lab
// instance: processes by PID, then namespaces, files and cgroups.
func (c *Cluster) Down(ctx context.Context, log *slog.Logger) (*lab.Removed, error) {
	var errs []error
	if c.Nodes != nil {
		errs = append(errs, c.Nodes.Stop(ctx))
	}
	if c.CP != nil {
		errs = append(errs, c.CP.Stop())
	}
	var r *lab.Removed
	if c.Lab != nil {
		var err error
		r, err = lab.Down(ctx, c.Lab.Instance, log)
		errs = append(errs, err)
	}
	return r, errors.Join(errs...)
}

// ServeLoopback forwards a port on this machine's loopback to the
// apiserver in the master's namespace, so that programs on this machine
// (netdiag, kubectl) reach the cluster, and writes a kubeconfig for it at
// path: the admin, and users (the first is the current context). It serves
// until ctx ends, then closes the listener and every forwarded connection.
func (cp *ControlPlane) ServeLoopback(ctx context.Context, path string, users ...kubetest.User) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	if err := cp.API.WriteKubeconfigServer(path, "https://"+addr, users...); err != nil {
		ln.Close()
		return "", err
	}
	target := net.JoinHostPort(cp.IP, strconv.Itoa(APIPort))
	lab.Forward(ctx, ln, func(ctx context.Context) (net.Conn, error) { return cp.ns.Dial(ctx, "tcp", target) })
	return addr, nil
}
