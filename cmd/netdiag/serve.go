package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/bot/digest"
	"github.com/netdiag/netdiag/bot/kubediag"
	"github.com/netdiag/netdiag/bot/labdiag"
	"github.com/netdiag/netdiag/collectors/agent/remote"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/kubeview"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/store"
	"k8s.io/client-go/kubernetes"
)

const serveUsage = `Usage: netdiag serve --config FILE

Runs the bot: /netdiag in Slack, automatic replies to Alertmanager alerts in
the alert group's thread, and the scheduled digests. One HTTP server on the
config's listen address:

  /alertmanager        Alertmanager's webhook receiver (bearer token or basic
                       auth; 2xx only once the alerts are on disk)
  /slack/commands      the slash command's Request URL (signed by Slack)
  /slack/interactions  the app's interactivity Request URL (buttons)
                       (both only in slack.mode http)
  /healthz /readyz     liveness and readiness
  /metrics             Prometheus metrics

With slack.mode socket the bot dials out to Slack instead (Socket Mode,
slack.app_token): no public ingress is needed for Slack, only for
Alertmanager if it runs outside the cluster.

Findings, alerts, the audit log and undelivered messages live in the store
(store.path): a restart or a Slack outage loses nothing and posts nothing
twice. Diagnoses run on the cluster through the node agents, with the bot's
ServiceAccount token (agents.token_file), or on the fault lab with
diagnose.lab (the demo).

Every NETDIAG_* variable overrides the file: NETDIAG_LISTEN,
NETDIAG_STORE_PATH, NETDIAG_SLACK_MODE, NETDIAG_SLACK_CHANNEL,
NETDIAG_SLACK_BOT_TOKEN, NETDIAG_SLACK_SIGNING_SECRET, NETDIAG_SLACK_APP_TOKEN,
NETDIAG_ALERTMANAGER_BEARER, NETDIAG_AGENTS_NAMESPACE, NETDIAG_AGENTS_PORT.

Example:
  netdiag serve --config /etc/netdiag/config.yaml
`

func runServe(c *cli, args []string) int {
	fs := c.newFlags("serve", serveUsage)
	path := fs.String("config", "", "the bot's YAML config file")
	pos, code, err := c.parse(fs, args)
	if err != nil {
		return code
	}
	if len(pos) > 0 {
		return c.usageError("serve", "unexpected argument %q", pos[0])
	}
	if *path == "" {
		return c.usageError("serve", "--config FILE is needed")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return c.usageError("serve", "%v", err)
	}
	ctx, cancel := signalContext()
	defer cancel()
	if err := serve(ctx, c, cfg); err != nil {
		return c.failure("serve", err)
	}
	return exitOK
}

// serve runs the bot until ctx ends.
func serve(ctx context.Context, c *cli, cfg *config.Config) error {
	return serveReady(ctx, c, cfg, nil)
}

// serveReady is serve that tells ready the address it listens on once the
// bot is ready (the demo listens on port 0).
func serveReady(parent context.Context, c *cli, cfg *config.Config, ready func(addr string)) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	st, err := store.Open(ctx, cfg.Store.Path, store.Options{MaxAge: time.Duration(cfg.Store.MaxAge), MaxBytes: cfg.Store.MaxBytes, Logger: c.log})
	if err != nil {
		return err
	}
	defer st.Close()
	chat := bot.NewSlackChat(cfg.Slack.BotToken.Value(), cfg.Slack.APIURL)
	var diag bot.Diagnoser
	var sweeper digest.Sweeper
	if cfg.Diagnose.Lab != "" {
		diag = &labdiag.Diagnoser{Instance: cfg.Diagnose.Lab, Log: c.log}
		sweeper = func(ctx context.Context) (*sweep.Table, error) {
			st, err := lab.GetStatus(cfg.Diagnose.Lab)
			if err != nil {
				return nil, err
			}
			return labview.Sweep(ctx, st, c.log), nil
		}
	} else {
		rc, err := kubeConfig("", "")
		if err != nil {
			return err
		}
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		view := kubeview.New(client, kubeview.Options{AgentNamespace: cfg.Agents.Namespace, AgentSelector: cfg.Agents.Selector, Logger: c.log})
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		err = view.Start(sctx)
		scancel()
		if err != nil {
			return fmt.Errorf("reading the cluster: %w", err)
		}
		defer view.Stop()
		arc := *rc
		if cfg.Agents.TokenFile != "" {
			// The agents take a token for their audience, not the API
			// server's: the projected token, re-read as it rotates.
			arc.BearerToken, arc.BearerTokenFile = "", cfg.Agents.TokenFile
		}
		caller, err := remote.NewCaller(&arc, cfg.Agents.CAFile, cfg.Agents.Port, true)
		if err != nil {
			return err
		}
		defer caller.Close()
		diag = &kubediag.Diagnoser{View: view, Caller: caller, Log: c.log}
		sweeper = func(ctx context.Context) (*sweep.Table, error) {
			nodes, shared, err := view.SweepNodes()
			if err != nil {
				return nil, err
			}
			eng := &diagnose.Engine{Runner: kubediag.Runner(ctx, view, caller), Log: c.log}
			return sweep.Run(ctx, eng, nodes, sweep.Options{Cluster: shared}), nil
		}
	}
	b, err := bot.New(bot.Options{
		Store: st, Chat: chat, Diagnoser: diag,
		Access:        &bot.Access{Rules: cfg.Access, Members: chat},
		SigningSecret: cfg.Slack.SigningSecret.Value(), Alertmanager: cfg.Alertmanager, DefaultChannel: cfg.Slack.DefaultChannel,
		Workers: cfg.Diagnose.Workers, Timeout: time.Duration(cfg.Diagnose.Timeout), Capture: time.Duration(*cfg.Diagnose.Capture),
		Log: c.log,
	})
	if err != nil {
		return err
	}
	svc := &digest.Service{Store: st, Specs: cfg.Digests, Post: b.DigestPoster(), Sweep: sweeper, Log: c.log}
	b.SetDigest(func(ctx context.Context, channel string) error {
		spec := digest.Spec{Name: "on-demand", Schedule: "0 9 * * *", Channel: channel}
		for _, s := range cfg.Digests {
			if s.Channel == channel {
				spec = s
			}
		}
		spec.Channel = channel
		return svc.Now(ctx, spec)
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	errs := make(chan error, 3)
	botDone := make(chan struct{})
	go func() { b.Run(ctx); close(botDone) }()
	go func() {
		if err := svc.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("digests: %w", err)
		}
	}()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	if cfg.Slack.Mode == "socket" {
		go func() {
			err := b.RunSocket(ctx, bot.SocketOptions{AppToken: cfg.Slack.AppToken.Value(), BotToken: cfg.Slack.BotToken.Value(), APIURL: cfg.Slack.APIURL})
			if err != nil {
				errs <- fmt.Errorf("slack socket mode: %w", err)
			}
		}()
	}
	if ready != nil {
		go func() {
			select {
			case <-b.Ready():
				ready(ln.Addr().String())
			case <-ctx.Done():
			}
		}()
	}
	c.log.Info("netdiag bot listening", "addr", ln.Addr().String(), "slack_mode", cfg.Slack.Mode, "store", st.Path(), "lab", cfg.Diagnose.Lab, "digests", len(cfg.Digests), "access_rules", len(cfg.Access))
	var stopErr error
	select {
	case <-ctx.Done():
	case stopErr = <-errs:
		c.log.Error("stopping", "err", stopErr)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	cancel()
	<-botDone // running diagnoses end within diagnose.timeout
	c.log.Info("netdiag bot stopped")
	return stopErr
}
