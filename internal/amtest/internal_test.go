package amtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRenderConfig checks the configuration written for Options, and that
// what Alertmanager would refuse is refused here, by name.
func TestRenderConfig(t *testing.T) {
	const hook = "http://127.0.0.1:8080/hook"
	for _, tc := range []struct {
		name    string
		opts    Options
		want    []string // lines of the YAML
		notWant []string
		err     string
	}{
		{
			name: "defaults",
			opts: Options{ReceiverURL: hook},
			want: []string{
				"  group_wait: 100ms", "  group_interval: 1s", "  repeat_interval: 1h",
				"  receiver: amtest", "- name: amtest", "  - send_resolved: true", "    url: " + hook,
			},
			notWant: []string{"global:", "group_by", "http_config", "max_alerts"},
		},
		{
			name: "bearer",
			opts: Options{ReceiverURL: hook, Bearer: "tok"},
			want: []string{"      authorization:", "        credentials: tok", "        type: Bearer"},
		},
		{
			name:    "basic auth, quoted",
			opts:    Options{ReceiverURL: hook, Username: "u", Password: "p:ss #1"},
			want:    []string{"      basic_auth:", "        username: u", "        password: 'p:ss #1'"},
			notWant: []string{"authorization"},
		},
		{
			name: "durations",
			opts: Options{ReceiverURL: hook, GroupBy: []string{"alertname", "node"}, GroupWait: 1500 * time.Millisecond,
				GroupInterval: 2 * time.Minute, RepeatInterval: 90 * time.Minute, ResolveTimeout: 30 * time.Second},
			want: []string{"  group_wait: 1500ms", "  group_interval: 2m", "  repeat_interval: 90m",
				"  resolve_timeout: 30s", "  - alertname", "  - node"},
		},
		{name: "no URL", opts: Options{}, err: "not an http or https URL"},
		{name: "not http", opts: Options{ReceiverURL: "127.0.0.1:8080"}, err: "not an http or https URL"},
		{name: "two kinds of credentials", opts: Options{ReceiverURL: hook, Bearer: "t", Username: "u"}, err: "one kind of credentials"},
		{name: "password alone", opts: Options{ReceiverURL: hook, Password: "p"}, err: "without a user name"},
		{name: "sub-millisecond", opts: Options{ReceiverURL: hook, GroupWait: 1500 * time.Microsecond}, err: "whole milliseconds"},
		{name: "negative", opts: Options{ReceiverURL: hook, GroupInterval: -time.Second}, err: "not negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := renderConfig(tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q; config:\n%s", err, tc.err, b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(b), "\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || l == w
				}
				if !found {
					t.Errorf("no line %q in:\n%s", w, b)
				}
			}
			for _, nw := range tc.notWant {
				if strings.Contains(string(b), nw) {
					t.Errorf("%q in:\n%s", nw, b)
				}
			}
		})
	}
}

// TestStartFailureShowsLog starts Alertmanager with a configuration it
// refuses: the error must come at once, not after the readiness timeout,
// and carry the end of its log; nothing may be left running.
func TestStartFailureShowsLog(t *testing.T) {
	bin, err := Find()
	if err != nil {
		missing(t, err)
	}
	am := newAM(t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := time.Now()
	err = am.start(ctx, bin, []byte("route:\n  receiver: nowhere\nreceivers:\n- name: amtest\n"))
	if serr := am.stop(); serr != nil {
		t.Errorf("stop: %v", serr)
	}
	if err == nil {
		t.Fatal("start succeeded with a route to an undefined receiver")
	}
	t.Logf("the error:\n%v", err)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the failure took %s to be reported", took)
	}
	if !strings.Contains(err.Error(), `undefined receiver \"nowhere\"`) && !strings.Contains(err.Error(), `undefined receiver "nowhere"`) {
		t.Errorf("the error does not carry Alertmanager's reason from its log")
	}
	select {
	case <-am.proc.Done():
	default:
		t.Error("alertmanager still running after a failed start")
	}
}

func TestPromDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		100 * time.Millisecond:  "100ms",
		time.Second:             "1s",
		1500 * time.Millisecond: "1500ms",
		90 * time.Second:        "90s",
		time.Minute:             "1m",
		24 * time.Hour:          "24h",
	} {
		if got := promDuration(d); got != want {
			t.Errorf("promDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestLaunchStop runs Alertmanager outside a test's lifetime, as the demo
// does: Launch, a notification through it, Stop, which leaves no process
// and no directory behind, and Stop again.
func TestLaunchStop(t *testing.T) {
	if _, err := Find(); err != nil {
		missing(t, err)
	}
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	am, err := Launch(ctx, Options{ReceiverURL: srv.URL + "/hook", Bearer: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			am.Stop()
		}
	}()
	pid := am.PID()
	if pid <= 0 || am.proc.Cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatalf("PID %d is not a running process", pid)
	}
	if err := am.PostAlerts(ctx, Alert{Labels: map[string]string{"alertname": "Launched"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case auth := <-got:
		if auth != "Bearer tok" {
			t.Errorf("Authorization %q", auth)
		}
	case <-ctx.Done():
		t.Fatal("no notification")
	}
	if err := am.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case <-am.proc.Done():
	default:
		t.Error("alertmanager still running after Stop")
	}
	if _, err := os.Stat(am.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", am.dir, err)
	}
	if err := am.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestLaunchRefusesOptions: a mistake in Options is an error, and leaves
// no directory behind.
func TestLaunchRefusesOptions(t *testing.T) {
	if _, err := Find(); err != nil {
		missing(t, err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "amtest-*"))
	_, err := Launch(t.Context(), Options{ReceiverURL: "nowhere"})
	if err == nil || !strings.Contains(err.Error(), "not an http or https URL") {
		t.Fatalf("error %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "amtest-*"))
	if len(after) > len(before) {
		t.Errorf("directories left behind: %v (before: %v)", after, before)
	}
}
