package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `
listen: ":9090"
store: {path: /var/lib/netdiag/x.db, max_age: 720h, max_bytes: 1000000}
slack:
  mode: http
  bot_token: {file: %[1]s/bot}
  signing_secret: {env: TEST_SIGNING}
  default_channel: "#netops"
alertmanager:
  bearer: {file: %[1]s/am}
  cooldown: 15m
digests:
- {name: morning, schedule: "0 9 * * 1-5", tz: Europe/Berlin, channel: "#netops", sweep: true}
access:
- {groups: [S0SRE], verbs: [pod, svc, node, dns, capture], namespaces: ["*"]}
- {users: [U123], channels: [C0SHOP], verbs: [pod], namespaces: [shop]}
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bot"), []byte("xoxb-sekrit-bot\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "am"), []byte("am-sekrit"), 0o600)
	c, err := Parse(fmt.Appendf(nil, good, dir), env(map[string]string{"TEST_SIGNING": "sign-sekrit"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9090" || c.Slack.BotToken.Value() != "xoxb-sekrit-bot" || c.Slack.SigningSecret.Value() != "sign-sekrit" ||
		c.Alertmanager.Bearer.Value() != "am-sekrit" || time.Duration(c.Alertmanager.Cooldown) != 15*time.Minute ||
		c.Alertmanager.Channel != "#netops" || c.Agents.Port != 9443 || len(c.Digests) != 1 || !c.Digests[0].Sweep || len(c.Access) != 2 {
		t.Errorf("config %+v", c)
	}
	// Secrets never print: not with %v, %+v, %#v, nor in JSON.
	b, _ := json.Marshal(c)
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c.Slack), string(b)} {
		if strings.Contains(out, "sekrit") {
			t.Errorf("a secret printed: %s", out)
		}
	}
	// The environment overrides the file.
	c, err = Parse(fmt.Appendf(nil, good, dir), env(map[string]string{"TEST_SIGNING": "x", "NETDIAG_LISTEN": ":7070",
		"NETDIAG_SLACK_BOT_TOKEN": "xoxb-from-env", "NETDIAG_AGENTS_PORT": "10443"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":7070" || c.Slack.BotToken.Value() != "xoxb-from-env" || c.Agents.Port != 10443 {
		t.Errorf("overrides not applied: %s %s %d", c.Listen, c.Slack.BotToken.Value(), c.Agents.Port)
	}
}

// TestErrors: every wrong field is named, with what is accepted; all of
// them at once.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bot"), []byte("xoxb"), 0o600)
	os.WriteFile(filepath.Join(dir, "am"), []byte("am"), 0o600)
	base := fmt.Sprintf(good, dir)
	for _, tc := range []struct {
		name, from, to string
		env            map[string]string
		want           []string
	}{
		{"unknown field", "listen:", "lisen:", nil, []string{`unknown field "lisen"`}},
		{"mode", "mode: http", "mode: sockets", nil, []string{`slack.mode "sockets": accepted: http`}},
		{"socket mode without app token", "mode: http", "mode: socket", nil, []string{"slack.app_token: needed in socket mode"}},
		{"socket mode with a bot token as app token", "mode: http", "mode: socket\n  app_token: {env: TEST_APP}", map[string]string{"TEST_SIGNING": "x", "TEST_APP": "xoxb-1"}, []string{"slack.app_token: not an app-level token (they start with xapp-"}},
		{"signing secret env unset", "", "", map[string]string{}, []string{"slack.signing_secret: environment variable TEST_SIGNING is empty or not set"}},
		{"secret file missing", dir + "/am", dir + "/nope", nil, []string{"alertmanager.bearer:", "no such file"}},
		{"no webhook auth", "  bearer: {file: " + dir + "/am}\n", "", nil, []string{"alertmanager: the webhook needs bearer"}},
		{"bad cron", `"0 9 * * 1-5"`, `"0 9 * *"`, nil, []string{"digests[0]:", "schedule"}},
		{"bad time zone", "Europe/Berlin", "Mars/Olympus", nil, []string{"digests[0]:", "Mars/Olympus"}},
		{"bad verb", "verbs: [pod]", "verbs: [pod, ssh]", nil, []string{`access[1].verbs[1] "ssh": accepted: pod, svc, node`}},
		{"no namespaces", "namespaces: [shop]", "namespaces: []", nil, []string{"access[1].namespaces: none given"}},
		{"bad listen", `":9090"`, `"9090"`, nil, []string{`listen "9090": give HOST:PORT`}},
		{"bad duration", "cooldown: 15m", "cooldown: soon", nil, []string{`duration "soon"`}},
		{"no channel", `default_channel: "#netops"`, "", nil, []string{"slack.default_channel: needed"}},
		{"several at once", "mode: http", "mode: x", map[string]string{"TEST_SIGNING": "s", "NETDIAG_AGENTS_PORT": "70000"}, []string{"slack.mode", "agents.port 70000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := base
			if tc.from != "" || tc.to != "" {
				if !strings.Contains(text, tc.from) {
					t.Fatalf("fixture lacks %q", tc.from)
				}
				text = strings.Replace(text, tc.from, tc.to, 1)
			}
			e := tc.env
			if e == nil {
				e = map[string]string{"TEST_SIGNING": "s"}
			}
			_, err := Parse([]byte(text), env(e))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "xoxb") {
				t.Errorf("a secret in an error: %v", err)
			}
		})
	}
}
