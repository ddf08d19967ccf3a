package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/slack-go/slack"
)

// syncBuffer is a process's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs `netdiag serve` as a process of its own; kill ends it
// with SIGKILL, as an OOM kill or a node failure would.
func startServe(t *testing.T, cfgPath string) (out *syncBuffer, kill func()) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
		})
	}
	t.Cleanup(kill)
	return out, kill
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func postAlert(t *testing.T, url, token, pod string) {
	t.Helper()
	body := fmt.Sprintf(`{"version":"4","groupKey":"{}:{alertname=\"PodDown-%[1]s\"}","status":"firing","receiver":"netdiag",
"groupLabels":{"alertname":"PodDown-%[1]s"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am",
"alerts":[{"status":"firing","labels":{"alertname":"PodDown-%[1]s","namespace":"default","pod":"%[1]s"},"annotations":{},
"startsAt":"%[2]s","endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-%[1]s"}]}`, pod, time.Now().UTC().Format(time.RFC3339Nano))
	req, _ := http.NewRequest(http.MethodPost, url+"/alertmanager", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("webhook answered %d", resp.StatusCode)
	}
}

// The bot killed with SIGKILL between receiving an alert and posting its
// finding: after a restart the finding is posted, once. Twice over: killed
// while diagnosing (the alert is on disk, the finding not yet), and killed
// with the finding stored but Slack down (the finding is in the outbox).
func TestServeSurvivesSIGKILL(t *testing.T) {
	l := labtest.Up(t, "srv")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := lab.InjectFault(ctx, l.Instance, "port-firewall", nil); err != nil {
		t.Fatal(err)
	}
	fake := slackfake.New(t)
	dir := t.TempDir()
	secrets := map[string]string{"bot": fake.BotToken(), "signing": "sign-me", "bearer": "am-token"}
	for name, v := range secrets {
		os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600)
	}
	addr := freePort(t)
	cfg := fmt.Sprintf(`listen: %q
store: {path: %q}
slack:
  bot_token: {file: %q}
  signing_secret: {file: %q}
  default_channel: C0ALERTS
  api_url: %q
alertmanager:
  bearer: {file: %q}
diagnose: {lab: %q, capture: 0s}
`, addr, filepath.Join(dir, "netdiag.db"), filepath.Join(dir, "bot"), filepath.Join(dir, "signing"), fake.APIURL(), filepath.Join(dir, "bearer"), l.Instance)
	cfgPath := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	url := "http://" + addr

	// 1. Killed while diagnosing. Slack is down from the start, so that
	// the group's thread, which the bot posts before any finding, is not
	// posted before the kill either: the restarts must post everything.
	fake.Outage(http.StatusInternalServerError, 0)
	out, kill := startServe(t, cfgPath)
	if err := waitHTTP(ctx, url+"/readyz"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	postAlert(t, url, "am-token", "client")
	kill()
	if strings.Contains(out.String(), "msg=finding") {
		t.Fatalf("the diagnosis finished before the kill; the test shows nothing:\n%s", out)
	}

	// 2. Restarted (Slack still down): the interrupted diagnosis runs
	// again; a second alert's finding is stored but cannot be posted.
	// Killed.
	out2, kill2 := startServe(t, cfgPath)
	if err := waitHTTP(ctx, url+"/readyz"); err != nil {
		t.Fatalf("%v\n%s", err, out2)
	}
	postAlert(t, url, "am-token", "web")
	for strings.Count(out2.String(), "msg=finding") < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("no findings after the restart:\n%s", out2)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(out2.String(), "diagnosing an alert a restart interrupted") {
		t.Errorf("the restart did not say it resumed the interrupted diagnosis:\n%s", out2)
	}
	kill2()
	if len(fake.Messages()) != 0 {
		t.Fatalf("posted during the outage: %d:\n%+v\n%s", len(fake.Messages()), fake.Messages(), out2)
	}

	// 3. Slack back, restarted: both findings, each once.
	fake.Restore()
	out3, _ := startServe(t, cfgPath)
	err := fake.WaitFor(ctx, func(s *slackfake.Server) bool {
		n := 0
		for _, m := range s.Messages() {
			if strings.Contains(m.Latest().Text, "(confidence") && !strings.HasPrefix(m.Latest().Text, "```") {
				n++
			}
		}
		return n >= 2
	})
	if err != nil {
		t.Fatalf("findings not posted after the restart: %v\n%s", err, out3)
	}
	time.Sleep(time.Second) // anything posted twice would show by now
	var summaries, headers []string
	for _, m := range fake.Messages() {
		text := m.Latest().Text
		switch {
		case strings.Contains(text, "(confidence") && !strings.HasPrefix(text, "```"):
			summaries = append(summaries, text)
		case strings.Contains(text, "[FIRING"):
			headers = append(headers, text)
		}
	}
	if len(summaries) != 2 || len(headers) != 2 {
		t.Fatalf("%d summaries and %d thread headers, want 2 and 2:\n%s\n%s", len(summaries), len(headers), strings.Join(summaries, "\n"), strings.Join(headers, "\n"))
	}
}

// `netdiag serve` with slack.mode socket: the bot dials Slack, a slash
// command comes over the websocket, and there is no /slack endpoint to
// post to; a wrong app token stops it with what to fix.
func TestServeSocketMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fake := slackfake.New(t)
	dir := t.TempDir()
	write := func(appToken string) string {
		os.WriteFile(filepath.Join(dir, "bot"), []byte(fake.BotToken()), 0o600)
		os.WriteFile(filepath.Join(dir, "app"), []byte(appToken), 0o600)
		os.WriteFile(filepath.Join(dir, "bearer"), []byte("am-token"), 0o600)
		addr := freePort(t)
		cfg := fmt.Sprintf(`listen: %q
store: {path: %q}
slack:
  mode: socket
  bot_token: {file: %q}
  app_token: {file: %q}
  default_channel: C0ALERTS
  api_url: %q
alertmanager:
  bearer: {file: %q}
diagnose: {lab: ndl-unused}
`, addr, filepath.Join(dir, "netdiag.db"), filepath.Join(dir, "bot"), filepath.Join(dir, "app"), fake.APIURL(), filepath.Join(dir, "bearer"))
		os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600)
		return "http://" + addr
	}
	url := write(fake.AppToken())
	out, kill := startServe(t, filepath.Join(dir, "config.yaml"))
	if err := waitHTTP(ctx, url+"/readyz"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ack, err := fake.SendSlashCommand(ctx, slack.SlashCommand{Command: "/netdiag", Text: "help", UserID: "U0SRE", ChannelID: "C0ALERTS"})
	if err != nil || !strings.Contains(string(ack), "finds out why a pod") {
		t.Fatalf("help over the socket: %v %s\n%s", err, ack, out)
	}
	resp, err := http.Post(url+"/slack/commands", "application/x-www-form-urlencoded", strings.NewReader("text=help"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/slack/commands in socket mode answered %d, want 404", resp.StatusCode)
	}
	kill()

	write("xapp-1-revoked")
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, self, "serve", "--config", filepath.Join(dir, "config.yaml"))
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	b, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(b), "slack refused the app token") || !strings.Contains(string(b), "connections:write") {
		t.Fatalf("a revoked app token: %v, exit %v\n%s", err, cmd.ProcessState, b)
	}
}
