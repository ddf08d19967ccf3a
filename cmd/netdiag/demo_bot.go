package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
)

// The demo's bot part: the alert, the fault it is about, and where the
// thread goes.
const (
	demoBotFault   = "port-firewall"
	demoAlertName  = "PodCannotReachBackend"
	demoChannel    = "C0NETOPS"
	demoChannelTag = "#netops"
	// demoBotWait bounds each wait: the alert's finding in the thread, and
	// the thread's update once the alert is resolved.
	demoBotWait = 60 * time.Second
	// demoServeReady bounds the bot's start.
	demoServeReady = 30 * time.Second
)

// demoAlert is the alert the demo posts to Alertmanager: the client pod
// cannot reach web's port, as a blackbox probe or the app's own metrics
// would say.
func demoAlert(startsAt time.Time) amtest.Alert {
	return amtest.Alert{
		Labels: map[string]string{"alertname": demoAlertName, "namespace": "default", "pod": "client", "severity": "critical"},
		Annotations: map[string]string{
			"summary":    "client cannot reach web:8080",
			"netdiag_to": "pod/default/web:8080",
		},
		StartsAt: startsAt,
	}
}

// checkDemoBot says, before the lab is built, why the bot part cannot run
// on this machine.
func checkDemoBot() error {
	if _, err := amtest.Find(); err != nil {
		return fmt.Errorf("the bot part needs Alertmanager %s: %v (or give --no-bot)", amtest.Version, err)
	}
	return nil
}

// runDemoBot is the demo's last part: with one fault in the lab, the bot
// runs as `netdiag serve` runs it on the lab, behind a real Alertmanager
// and in front of the Slack test server; an alert fires and its thread is
// printed as the channel shows it, then the alert resolves. Everything it
// starts is stopped, and its files removed, before it returns, whatever
// happened.
func runDemoBot(ctx context.Context, c *cli, inst string) (err error) {
	w := c.stdout
	f, err := lab.FaultByName(demoBotFault)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n== the bot: an alert through a real Alertmanager to the channel's thread\n")
	fmt.Fprintf(w, "   fault %s (must read %s/%s)\n   %s\n", f.Name, f.Class, f.Cause, f.Summary)
	if _, err := lab.InjectFault(ctx, inst, f.Name, c.log); err != nil {
		return err
	}
	defer func() {
		if _, cerr := lab.Clear(context.WithoutCancel(ctx), inst, c.log); cerr != nil {
			err = errors.Join(err, cerr)
		} else if err == nil {
			fmt.Fprintf(w, "   (fault %s cleared)\n", f.Name)
		}
	}()

	dir, err := os.MkdirTemp("", "netdiag-demo-bot-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	fake, err := slackfake.Start()
	if err != nil {
		return err
	}
	defer fake.Close()

	bearer := rand.Text()
	// As a deployment configures the bot: a file, and the secrets and the
	// address in NETDIAG_* variables (here a map, not the process's
	// environment, which does not reach this config). Port 0: serve says
	// which port it bound.
	file := fmt.Sprintf("slack: {api_url: %q}\ndiagnose: {lab: %q}\n", fake.APIURL(), inst)
	env := map[string]string{
		"NETDIAG_LISTEN":               "127.0.0.1:0",
		"NETDIAG_STORE_PATH":           filepath.Join(dir, "netdiag.db"),
		"NETDIAG_SLACK_CHANNEL":        demoChannel,
		"NETDIAG_SLACK_BOT_TOKEN":      fake.BotToken(),
		"NETDIAG_SLACK_SIGNING_SECRET": rand.Text(),
		"NETDIAG_ALERTMANAGER_BEARER":  bearer,
	}
	cfg, err := config.Parse([]byte(file), func(k string) string { return env[k] })
	if err != nil {
		return err
	}
	bot, err := startDemoServe(ctx, c, cfg)
	if err != nil {
		return fmt.Errorf("starting the bot: %w", err)
	}
	defer func() {
		if serr := bot.stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("the bot: %w", serr))
		}
	}()

	amOpts := amtest.Options{ReceiverURL: bot.url + "/alertmanager", Bearer: bearer, GroupBy: []string{"alertname"}}
	am, err := amtest.Launch(ctx, amOpts)
	if err != nil {
		return err
	}
	// Stopped first (deferred last): nothing is sent to a bot that is gone.
	defer func() {
		if err != nil && ctx.Err() == nil {
			// What Alertmanager made of it (a refused webhook, say)
			// goes with its directory.
			lines := strings.Split(strings.TrimRight(am.Log(), "\n"), "\n")
			fmt.Fprintf(c.stderr, "last lines of Alertmanager's log:\n%s\n", strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
		if serr := am.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	fmt.Fprintf(w, "   Slack test server  %s (slackfake, on slack-go's slacktest), channel %s (%s)\n", fake.APIURL(), demoChannelTag, demoChannel)
	fmt.Fprintf(w, "   the bot            %s: `netdiag serve` with diagnose.lab %s, in this process\n", bot.url, inst)
	fmt.Fprintf(w, "   Alertmanager %s %s (pid %d): one route, group_by alertname, group_wait %s,\n", amtest.Version, am.URL(), am.PID(), amtest.DefaultGroupWait)
	fmt.Fprintf(w, "                      webhook receiver %s with a bearer token\n", amOpts.ReceiverURL)

	// Fire.
	alert := demoAlert(time.Now().Truncate(time.Millisecond))
	printAlertPost(w, am.URL(), alert)
	t0 := time.Now()
	if err := am.PostAlerts(ctx, alert); err != nil {
		return err
	}
	var head slackfake.Message
	var thread threadView
	var tThread, tFinding, tEvidence, tDone time.Duration
	mark := func(d *time.Duration) {
		if *d == 0 {
			*d = time.Since(t0)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, demoBotWait)
	defer cancel()
	werr := fake.WaitFor(wctx, func(s *slackfake.Server) bool {
		if head.TS == "" {
			head = threadHead(s)
			if head.TS == "" {
				return false
			}
		}
		mark(&tThread)
		thread = viewThread(s, head.TS)
		if thread.summary < 0 {
			return false
		}
		mark(&tFinding)
		if !thread.evidence {
			return false
		}
		mark(&tEvidence)
		// The pcap, or a reply saying why there is none.
		if !thread.pcap && len(thread.replies)+len(thread.files) < 3 {
			return false
		}
		mark(&tDone)
		return true
	})
	fmt.Fprintf(w, "\n%s (%s), as the channel shows it:\n\n", demoChannelTag, demoChannel)
	if head.TS == "" {
		fmt.Fprintln(w, "   (nothing)")
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("no thread for the alert in %s: %w", demoBotWait, werr)
	}
	thread = viewThread(fake, head.TS)
	printMessage(w, "", thread.head)
	fmt.Fprintf(w, "  thread: %s\n", thread.counts())
	for _, m := range thread.replies {
		fmt.Fprintln(w)
		printMessage(w, "    ", m)
	}
	for _, fl := range thread.files {
		fmt.Fprintln(w)
		printFile(w, "    ", fl)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if werr != nil {
		return fmt.Errorf("the alert's finding did not reach its thread in %s: %w", demoBotWait, werr)
	}
	verdict := f.Class + "/" + f.Cause
	if !strings.Contains(thread.replies[thread.summary].Latest().Text, verdict+" (confidence") {
		return fmt.Errorf("the finding in the thread does not read %s", verdict)
	}
	fmt.Fprintf(w, "\n   alert posted to Alertmanager -> thread opened %s, finding in the thread %s, evidence %s, %s %s\n",
		secs(tThread), secs(tFinding), secs(tEvidence), map[bool]string{true: "pcap", false: "last reply"}[thread.pcap], secs(tDone))
	fmt.Fprintf(w, "   (Alertmanager waits group_wait, the diagnosis captures %s of packets, the bot posts at most one\n   message a second in a channel, as Slack asks)\n", time.Duration(*bot.cfg.Diagnose.Capture))

	// Resolve.
	before := len(thread.replies)
	alert.EndsAt = time.Now().Add(-100 * time.Millisecond).Truncate(time.Millisecond)
	printAlertPost(w, am.URL(), alert)
	t1 := time.Now()
	if err := am.PostAlerts(ctx, alert); err != nil {
		return err
	}
	var tHead, tReply time.Duration
	rctx, rcancel := context.WithTimeout(ctx, demoBotWait)
	defer rcancel()
	werr = fake.WaitFor(rctx, func(s *slackfake.Server) bool {
		v := viewThread(s, head.TS)
		if strings.Contains(v.head.Latest().Text, "[RESOLVED]") && tHead == 0 {
			tHead = time.Since(t1)
		}
		for _, m := range v.replies[min(before, len(v.replies)):] {
			if strings.Contains(m.Text, "resolved:") && tReply == 0 {
				tReply = time.Since(t1)
			}
		}
		return tHead != 0 && tReply != 0
	})
	v := viewThread(fake, head.TS)
	fmt.Fprintf(w, "\n%s, the thread once the alert is resolved:\n\n", demoChannelTag)
	printMessage(w, "", v.head)
	fmt.Fprintf(w, "  thread: %s\n", v.counts())
	fmt.Fprintf(w, "    ...\n")
	for _, m := range v.replies[min(before, len(v.replies)):] {
		fmt.Fprintln(w)
		printMessage(w, "    ", m)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if werr != nil {
		return fmt.Errorf("the thread did not show the alert resolved in %s: %w", demoBotWait, werr)
	}
	fmt.Fprintf(w, "\n   alert resolved in Alertmanager -> first message edited %s, reply %s\n", secs(tHead), secs(tReply))
	return nil
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// printAlertPost shows the alert as it is posted: the request anyone can
// send to Alertmanager's API.
func printAlertPost(w io.Writer, amURL string, a amtest.Alert) {
	body, _ := json.Marshal([]amtest.Alert{a})
	what := "fire the alert"
	if !a.EndsAt.IsZero() {
		what = "resolve it: the same alert, ending now"
	}
	fmt.Fprintf(w, "\n# %s\n$ curl -XPOST %s/api/v2/alerts -H 'Content-Type: application/json' -d '%s'\n", what, amURL, body)
}

// threadHead is the first message of the demo alert's group: the message
// whose thread the bot answers in.
func threadHead(s *slackfake.Server) slackfake.Message {
	for _, m := range s.Messages() {
		if m.Channel == demoChannel && m.ThreadTS == "" && strings.Contains(m.Text, "alertname="+demoAlertName) {
			return m
		}
	}
	return slackfake.Message{}
}

// threadView is an alert group's thread: its first message, the replies,
// the files shared in it, and which reply is the finding's summary.
type threadView struct {
	head     slackfake.Message
	replies  []slackfake.Message
	files    []slackfake.File
	summary  int // index in replies, -1 until posted
	evidence bool
	pcap     bool
}

type threadReader interface {
	Thread(channel, ts string) []slackfake.Message
	Files() []slackfake.File
}

func viewThread(s threadReader, ts string) threadView {
	v := threadView{summary: -1}
	for i, m := range s.Thread(demoChannel, ts) {
		if i == 0 {
			v.head = m
			continue
		}
		v.replies = append(v.replies, m)
		text := m.Latest().Text
		switch {
		case strings.HasPrefix(text, "```"):
			v.evidence = true // the whole finding, when it fits a message
		case strings.Contains(text, "(confidence") && v.summary < 0:
			v.summary = len(v.replies) - 1
		}
	}
	for _, f := range s.Files() {
		if f.Channel != demoChannel || f.ThreadTS != ts {
			continue
		}
		v.files = append(v.files, f)
		switch {
		case strings.HasSuffix(f.Name, ".pcap"):
			v.pcap = true
		case strings.HasSuffix(f.Name, ".txt"):
			v.evidence = true // the whole finding, when it does not
		}
	}
	return v
}

func (v threadView) counts() string {
	return fmt.Sprintf("%d %s, %d %s", len(v.replies), plural(len(v.replies), "reply", "replies"), len(v.files), plural(len(v.files), "file", "files"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// printMessage shows a message as it reads now, under the bot's name;
// "(edited)" when it was updated since first posted.
func printMessage(w io.Writer, indent string, m slackfake.Message) {
	edited := ""
	if len(m.Updates) > 0 {
		edited = "  (edited)"
	}
	fmt.Fprintf(w, "%s%s  APP%s\n", indent, slackfake.BotName, edited)
	for _, line := range strings.Split(slackfake.Render(m.Latest()), "\n") {
		fmt.Fprintf(w, "%s| %s\n", indent, line)
	}
}

// printFile shows a file shared in the thread: its name, size and title,
// and for a capture how many packets it holds.
func printFile(w io.Writer, indent string, f slackfake.File) {
	fmt.Fprintf(w, "%s%s  APP  uploaded a file\n", indent, slackfake.BotName)
	what := ""
	if n, err := collectors.PcapPackets(f.Bytes); err == nil {
		what = fmt.Sprintf(", a capture of %d %s", n, plural(n, "packet", "packets"))
	}
	fmt.Fprintf(w, "%s| [file] %s  %d bytes%s\n", indent, f.Name, len(f.Bytes), what)
	if f.Title != "" && f.Title != f.Name {
		fmt.Fprintf(w, "%s| %s\n", indent, f.Title)
	}
}

// demoServe is the bot, run by serve as `netdiag serve` runs it.
type demoServe struct {
	url    string // http://127.0.0.1:PORT
	cfg    *config.Config
	cancel context.CancelFunc
	done   chan error // serve's result
}

// startDemoServe runs serve with cfg and returns once the bot is ready,
// with the address it listens on.
func startDemoServe(ctx context.Context, c *cli, cfg *config.Config) (*demoServe, error) {
	sctx, cancel := context.WithCancel(ctx)
	s := &demoServe{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	addrs := make(chan string, 1)
	go func() { s.done <- serveReady(sctx, c, cfg, func(addr string) { addrs <- addr }) }()
	timeout := time.NewTimer(demoServeReady)
	defer timeout.Stop()
	select {
	case addr := <-addrs:
		s.url = "http://" + addr
		return s, nil
	case err := <-s.done:
		s.done <- err // for stop
		if err == nil {
			err = errors.New("serve returned before the bot was ready")
		}
		return nil, err
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), s.stop())
	case <-timeout.C:
		return nil, errors.Join(fmt.Errorf("the bot was not ready in %s", demoServeReady), s.stop())
	}
}

// stop ends serve and returns its error; it waits for the running
// diagnoses, which end with the context.
func (s *demoServe) stop() error {
	s.cancel()
	err := <-s.done
	s.done <- err
	return err
}
