// Package amtest gives tests a real Alertmanager: the v0.28.1 binary that
// scripts/install-deps builds into $(go env GOPATH)/bin, started for one test
// with a configuration of one route to one webhook receiver, and stopped when
// the test ends. Code that posts alerts to Alertmanager, or that receives its
// webhook notifications, is tested against what Alertmanager really sends
// (grouping, group keys, resolved notifications, credentials, re-sends after
// a receiver refused) rather than against a hand-written imitation of it.
//
// Alertmanager listens on 127.0.0.1 only, with clustering (and so its gossip
// port on 0.0.0.0:9094) disabled. Without the binary a test skips, or fails
// when CI is set. Launch and Stop run it outside a test, for the demo.
package amtest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/tools"
	"sigs.k8s.io/yaml"
)

const (
	// Version is the Alertmanager release the tests are written against;
	// Start refuses a binary that reports another.
	Version = "0.28.1"
	// Receiver is the name of the configuration's only receiver, as
	// webhook messages carry it.
	Receiver = "amtest"

	// Defaults for the zero Options fields: short enough that a test sees
	// its first notification a fraction of a second after posting and
	// every re-send or resolution within a second, long enough that a
	// firing alert is not repeated during a test.
	DefaultGroupWait      = 100 * time.Millisecond
	DefaultGroupInterval  = time.Second
	DefaultRepeatInterval = time.Hour

	readyTimeout  = 20 * time.Second
	reloadTimeout = 20 * time.Second
	stopGrace     = 10 * time.Second
	startAttempts = 5
	logTailLines  = 60
)

// Options is the configuration Alertmanager runs with. Zero durations take
// the Default values above; a zero ResolveTimeout keeps Alertmanager's own
// (5m), so that an alert posted without EndsAt does not resolve by itself
// during a test.
type Options struct {
	// ReceiverURL is where the webhook receiver posts: an http or https
	// URL, normally an httptest server's on 127.0.0.1. Required.
	ReceiverURL string
	// Bearer is sent as "Authorization: Bearer <Bearer>".
	Bearer string
	// Username and Password are sent as basic auth. Alertmanager takes
	// either this or Bearer, not both.
	Username, Password string
	// GroupBy are the route's group_by labels. Empty puts every alert in
	// one group, as Alertmanager does; "..." groups by all labels.
	GroupBy []string

	GroupWait, GroupInterval, RepeatInterval time.Duration
	ResolveTimeout                           time.Duration
}

// AM is a running Alertmanager.
type AM struct {
	dir     string
	cfgPath string
	logPath string
	url     string
	hc      *http.Client

	// reconfig serialises Reconfigure: each call's check must see its own
	// file in force.
	reconfig sync.Mutex
	proc     *daemon.Process

	// ownDir: the directory is Launch's, for Stop to remove.
	ownDir     bool
	removeOnce sync.Once
	removeErr  error
}

// Find returns the path of the alertmanager binary: in PATH, $GOBIN,
// $GOPATH/bin, or where `go env` says go install puts programs (GOBIN or
// GOPATH may be set with `go env -w`, which the environment does not show).
func Find() (string, error) {
	p, err := tools.FindGoInstalled("alertmanager")
	if err != nil {
		return "", errors.New("alertmanager not found (looked in PATH, $GOBIN and $(go env GOPATH)/bin): run ./scripts/install-deps")
	}
	return p, nil
}

// missing skips the test, except in CI, where a missing binary is a broken
// machine and skipping would hide every test that needs it.
func missing(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("amtest: %v (CI is set, so this is not skipped)", err)
	}
	t.Skipf("amtest: %v", err)
}

// Start runs Alertmanager for the test and stops it when the test ends.
// Without the binary it skips the test ("run ./scripts/install-deps"), or
// fails it when CI is set. When the test fails, the end of Alertmanager's log
// is written to the test log.
func Start(t testing.TB, opts Options) *AM {
	t.Helper()
	bin, err := Find()
	if err != nil {
		missing(t, err)
	}
	start := time.Now()
	am, err := launch(t.Context(), bin, t.TempDir(), opts)
	if err != nil {
		t.Fatalf("amtest: %v", err)
	}
	// After the process is gone and its log complete, before the
	// temporary directory is removed.
	t.Cleanup(func() {
		if err := am.stop(); err != nil {
			t.Errorf("amtest: %v", err)
		}
		if t.Failed() {
			t.Logf("amtest: last lines of %s:\n%s", am.logPath, am.tail(logTailLines))
		}
	})
	t.Logf("amtest: alertmanager %s (%s) ready in %s", am.url, bin, time.Since(start).Round(time.Millisecond))
	return am
}

// Launch runs Alertmanager outside a test (the demo), in a temporary
// directory of its own (configuration, data, log), and returns once it is
// ready; Stop stops it and removes the directory. ctx bounds the start
// only, not the process. The errors are Start's: the binary missing, Options
// refused, Alertmanager not ready (with the end of its log). The process is
// killed with its parent should the parent die without calling Stop.
func Launch(ctx context.Context, opts Options) (*AM, error) {
	bin, err := Find()
	if err != nil {
		return nil, fmt.Errorf("amtest: %w", err)
	}
	dir, err := os.MkdirTemp("", "amtest-")
	if err != nil {
		return nil, fmt.Errorf("amtest: %w", err)
	}
	am, err := launch(ctx, bin, dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("amtest: %w", err)
	}
	am.ownDir = true
	return am, nil
}

// launch starts bin with opts in dir and waits until it is ready. On error
// nothing is left running.
func launch(ctx context.Context, bin, dir string, opts Options) (*AM, error) {
	cfg, err := renderConfig(opts)
	if err != nil {
		return nil, err
	}
	am := newAM(dir)
	ctx, cancel := context.WithTimeout(ctx, readyTimeout+10*time.Second)
	defer cancel()
	if err := am.start(ctx, bin, cfg); err != nil {
		return nil, err
	}
	return am, nil
}

// Stop stops Alertmanager: SIGTERM to the process it started, by its PID,
// SIGKILL if it has not exited 10 s later. For an AM from Launch it then
// removes its directory, log included. Calling it again returns the same
// result; Start's AM is stopped when the test ends without it.
func (am *AM) Stop() error {
	err := am.stop()
	if am.ownDir {
		am.removeOnce.Do(func() {
			if rerr := os.RemoveAll(am.dir); rerr != nil {
				am.removeErr = fmt.Errorf("amtest: %w", rerr)
			}
		})
		err = errors.Join(err, am.removeErr)
	}
	return err
}

// PID is the Alertmanager process's ID.
func (am *AM) PID() int {
	if am.proc == nil {
		return 0
	}
	return am.proc.PID()
}

func newAM(dir string) *AM {
	return &AM{
		dir:     dir,
		cfgPath: filepath.Join(dir, "alertmanager.yml"),
		logPath: filepath.Join(dir, "alertmanager.log"),
		hc: &http.Client{
			// Never through a proxy from the environment: Alertmanager is
			// on loopback.
			Transport: &http.Transport{Proxy: nil},
			Timeout:   10 * time.Second,
		},
	}
}

// URL is Alertmanager's base URL, http://127.0.0.1:PORT.
func (am *AM) URL() string { return am.url }

// Log is everything Alertmanager has logged so far (at debug level, which
// includes each notification attempt).
func (am *AM) Log() string {
	b, _ := os.ReadFile(am.logPath)
	return string(b)
}

// Alert is an alert as POST /api/v2/alerts takes it. A zero StartsAt is
// "now" to Alertmanager; a zero EndsAt makes the alert resolve after the
// resolve timeout unless posted again. Posting it again with EndsAt at or
// before the current time resolves it.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// GettableAlert is an alert as GET /api/v2/alerts returns it: only those
// not yet resolved.
type GettableAlert struct {
	Alert
	Fingerprint string    `json:"fingerprint"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Receivers   []struct {
		Name string `json:"name"`
	} `json:"receivers"`
	Status struct {
		// State is "unprocessed", "active" or "suppressed".
		State       string   `json:"state"`
		SilencedBy  []string `json:"silencedBy"`
		InhibitedBy []string `json:"inhibitedBy"`
		MutedBy     []string `json:"mutedBy"`
	} `json:"status"`
}

// PostAlerts posts alerts to /api/v2/alerts. Alertmanager takes the valid
// ones even when it refuses others; the error then carries its reason.
func (am *AM) PostAlerts(ctx context.Context, alerts ...Alert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return fmt.Errorf("encode alerts: %w", err)
	}
	_, err = am.do(ctx, http.MethodPost, "/api/v2/alerts", body)
	return err
}

// Alerts returns the alerts Alertmanager holds that are not resolved.
func (am *AM) Alerts(ctx context.Context) ([]GettableAlert, error) {
	body, err := am.do(ctx, http.MethodGet, "/api/v2/alerts", nil)
	if err != nil {
		return nil, err
	}
	var alerts []GettableAlert
	if err := json.Unmarshal(body, &alerts); err != nil {
		return nil, fmt.Errorf("decode GET /api/v2/alerts: %w", err)
	}
	return alerts, nil
}

// Reconfigure writes a new configuration and makes Alertmanager load it,
// as an operator fixing a wrong token or URL would. It returns once the new
// configuration is the one in force. Alertmanager then rebuilds its
// aggregation groups, so alerts it holds whose group wait is over are sent
// at once to the new receiver settings.
func (am *AM) Reconfigure(opts Options) error {
	cfg, err := renderConfig(opts)
	if err != nil {
		return err
	}
	am.reconfig.Lock()
	defer am.reconfig.Unlock()
	// Through a rename, so that a reload (or a SIGHUP from elsewhere)
	// never reads half a file.
	tmp := am.cfgPath + ".new"
	if err := os.WriteFile(tmp, cfg, 0o600); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := os.Rename(tmp, am.cfgPath); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
	defer cancel()
	// The handler answers only after the reload has run, 500 with the
	// reason when the configuration was refused.
	if _, err := am.do(ctx, http.MethodPost, "/-/reload", nil); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	// /api/v2/status shows the webhook URL and the credentials as
	// <secret>, so it cannot tell the new configuration from the old. The
	// config hash metric is of the file Alertmanager read: it proves that
	// the file now in force is the one just written.
	metrics, err := am.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return fmt.Errorf("check the reload: %w", err)
	}
	got, ok := metricValue(metrics, "alertmanager_config_hash")
	if want := configHash(cfg); !ok || got != want {
		return fmt.Errorf("reload returned OK but alertmanager_config_hash is %v (found: %t), want %v: the configuration in force is not the one written", got, ok, want)
	}
	return nil
}

// do sends a request to Alertmanager and returns the body of a 2xx answer.
func (am *AM) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, am.url+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := am.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// start runs the binary with cfg on a free loopback port and waits until it
// is ready. On error, a process that was started is stopped.
func (am *AM) start(ctx context.Context, bin string, cfg []byte) error {
	if err := os.WriteFile(am.cfgPath, cfg, 0o600); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		am.url = "http://127.0.0.1:" + strconv.Itoa(port)
		// A failed attempt's notification log and silences are not this
		// one's to inherit.
		os.RemoveAll(filepath.Join(am.dir, "data"))
		if err := am.spawn(bin, port); err != nil {
			return err
		}
		err = am.waitReady(ctx)
		if err == nil {
			return nil
		}
		serr := am.stop()
		if attempt < startAttempts && am.lostPortRace() {
			continue
		}
		return errors.Join(fmt.Errorf("alertmanager %s not ready: %w\nlast lines of %s:\n%s", am.url, err, am.logPath, am.tail(logTailLines)), serr)
	}
}

func (am *AM) spawn(bin string, port int) error {
	cmd := exec.Command(bin,
		"--config.file="+am.cfgPath,
		"--storage.path="+filepath.Join(am.dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		// Otherwise the links in notifications (externalURL) name the
		// machine's host name, which need not resolve to 127.0.0.1.
		"--web.external-url=http://127.0.0.1:"+strconv.Itoa(port),
		// Empty disables clustering: no gossip listener on
		// 0.0.0.0:9094, and no waiting for peers before notifying.
		"--cluster.listen-address=",
		"--log.level=debug",
	)
	// A test binary killed by its timeout, or a demo killed outright, runs
	// no cleanup; daemon.Start has the kernel kill Alertmanager with it
	// instead of leaving it to hold its port.
	p, err := daemon.Start("alertmanager", cmd, am.logPath)
	if err != nil {
		return err
	}
	am.proc = p
	return nil
}

// waitReady polls /-/ready, then checks that the binary is the expected
// release and runs without clustering.
func (am *AM) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := am.do(rctx, http.MethodGet, "/-/ready", nil)
		rcancel()
		if err == nil {
			break
		}
		select {
		case <-am.proc.Done():
			return fmt.Errorf("alertmanager exited: %v", am.proc.Err())
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w (last check: %v)", readyTimeout, ctx.Err(), err)
		case <-tick.C:
		}
	}
	body, err := am.do(ctx, http.MethodGet, "/api/v2/status", nil)
	if err != nil {
		return err
	}
	var st struct {
		VersionInfo struct {
			Version string `json:"version"`
		} `json:"versionInfo"`
		Cluster struct {
			Status string `json:"status"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("decode /api/v2/status: %w", err)
	}
	if v := st.VersionInfo.Version; v != Version {
		return fmt.Errorf("%s reports version %q, want %s: run ./scripts/install-deps, which builds it (with its version stamped) into $(go env GOPATH)/bin", am.proc.Cmd.Path, v, Version)
	}
	if st.Cluster.Status != "disabled" {
		return fmt.Errorf("cluster status %q, want disabled", st.Cluster.Status)
	}
	return nil
}

// stop sends SIGTERM to the process start started, by its PID, then SIGKILL
// after the grace period, and waits for it to exit.
func (am *AM) stop() error {
	p := am.proc
	if p == nil {
		return nil
	}
	return p.Stop(stopGrace)
}

// lostPortRace says the process exited because its port was taken between
// freePort and its bind.
func (am *AM) lostPortRace() bool {
	select {
	case <-am.proc.Done():
	default:
		return false
	}
	return strings.Contains(am.Log(), "address already in use")
}

func (am *AM) tail(n int) string {
	lines := strings.Split(strings.TrimRight(am.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort asks the kernel for a free port on 127.0.0.1. It is released
// before Alertmanager binds it, so another process may take it in between;
// start retries on that.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// The configuration file, in Alertmanager's field names. sigs.k8s.io/yaml
// writes YAML from the json tags and quotes what needs quoting (a password
// with a colon, a URL with a #).
type config struct {
	Global    *globalConfig `json:"global,omitempty"`
	Route     routeConfig   `json:"route"`
	Receivers []receiver    `json:"receivers"`
}

type globalConfig struct {
	ResolveTimeout string `json:"resolve_timeout,omitempty"`
}

type routeConfig struct {
	Receiver       string   `json:"receiver"`
	GroupBy        []string `json:"group_by,omitempty"`
	GroupWait      string   `json:"group_wait"`
	GroupInterval  string   `json:"group_interval"`
	RepeatInterval string   `json:"repeat_interval"`
}

type receiver struct {
	Name           string          `json:"name"`
	WebhookConfigs []webhookConfig `json:"webhook_configs"`
}

// webhookConfig leaves max_alerts unset (0: no limit), so that a test sees
// every alert of a group.
type webhookConfig struct {
	URL          string      `json:"url"`
	SendResolved bool        `json:"send_resolved"`
	HTTPConfig   *httpConfig `json:"http_config,omitempty"`
}

type httpConfig struct {
	Authorization *authorization `json:"authorization,omitempty"`
	BasicAuth     *basicAuth     `json:"basic_auth,omitempty"`
}

type authorization struct {
	Type        string `json:"type"`
	Credentials string `json:"credentials"`
}

type basicAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// renderConfig checks opts and writes the configuration. It refuses what
// Alertmanager would refuse, so that the mistake is reported by name
// instead of as a process that exits at start.
func renderConfig(opts Options) ([]byte, error) {
	u, err := url.Parse(opts.ReceiverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("receiver URL %q (Options.ReceiverURL) is not an http or https URL", opts.ReceiverURL)
	}
	if opts.Bearer != "" && (opts.Username != "" || opts.Password != "") {
		return nil, errors.New("both a bearer token and basic auth in Options: Alertmanager takes one kind of credentials per receiver")
	}
	if opts.Password != "" && opts.Username == "" {
		return nil, errors.New("a password without a user name in Options")
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"GroupWait", &opts.GroupWait, DefaultGroupWait},
		{"GroupInterval", &opts.GroupInterval, DefaultGroupInterval},
		{"RepeatInterval", &opts.RepeatInterval, DefaultRepeatInterval},
		{"ResolveTimeout", &opts.ResolveTimeout, 0},
	}
	for _, x := range durations {
		if *x.d < 0 || *x.d%time.Millisecond != 0 {
			return nil, fmt.Errorf("duration %s (Options.%s): Alertmanager takes whole milliseconds, not negative", *x.d, x.name)
		}
		if *x.d == 0 {
			*x.d = x.def
		}
	}
	wh := webhookConfig{URL: opts.ReceiverURL, SendResolved: true}
	switch {
	case opts.Bearer != "":
		wh.HTTPConfig = &httpConfig{Authorization: &authorization{Type: "Bearer", Credentials: opts.Bearer}}
	case opts.Username != "":
		wh.HTTPConfig = &httpConfig{BasicAuth: &basicAuth{Username: opts.Username, Password: opts.Password}}
	}
	c := config{
		Route: routeConfig{
			Receiver:       Receiver,
			GroupBy:        opts.GroupBy,
			GroupWait:      promDuration(opts.GroupWait),
			GroupInterval:  promDuration(opts.GroupInterval),
			RepeatInterval: promDuration(opts.RepeatInterval),
		},
		Receivers: []receiver{{Name: Receiver, WebhookConfigs: []webhookConfig{wh}}},
	}
	if opts.ResolveTimeout > 0 {
		c.Global = &globalConfig{ResolveTimeout: promDuration(opts.ResolveTimeout)}
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return append([]byte("# Written by internal/amtest.\n"), b...), nil
}

// promDuration writes d in Prometheus's duration syntax, which takes no
// fractions: time.Duration's "1.5s" would be refused, "1500ms" is not.
func promDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	default:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
}

// configHash is Alertmanager's alertmanager_config_hash of a file's content:
// the first 48 bits of its MD5, little-endian, as a float64.
func configHash(content []byte) float64 {
	sum := md5.Sum(content)
	var b [8]byte
	copy(b[:], sum[:6])
	return float64(binary.LittleEndian.Uint64(b[:]))
}

// metricValue finds an unlabelled sample in Prometheus's text format.
func metricValue(text []byte, name string) (float64, bool) {
	for _, line := range strings.Split(string(text), "\n") {
		v, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return f, err == nil
	}
	return 0, false
}
