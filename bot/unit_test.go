package bot

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/netdiag/netdiag/config"
)

// Slack's own example request (api.slack.com, "Verifying requests from
// Slack") verifies; anything else is refused.
func TestVerifySlack(t *testing.T) {
	const (
		secret = "8f742231b10e8888abcd99yyyzzz85a5"
		ts     = "1531420618"
		body   = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
		sig    = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
	)
	at := time.Unix(1531420618, 0).Add(30 * time.Second)
	hdr := func(sig, ts string) http.Header {
		h := http.Header{}
		if sig != "" {
			h.Set("X-Slack-Signature", sig)
		}
		if ts != "" {
			h.Set("X-Slack-Request-Timestamp", ts)
		}
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		body string
		now  time.Time
		want error
	}{
		{"slack's example", hdr(sig, ts), body, at, nil},
		{"body changed", hdr(sig, ts), body + "&x=1", at, ErrBadSignature},
		{"other secret's signature", hdr("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b504", ts), body, at, ErrBadSignature},
		{"not hex", hdr("v0=zz", ts), body, at, ErrBadSignature},
		{"no version", hdr(strings.TrimPrefix(sig, "v0="), ts), body, at, ErrBadSignature},
		{"no signature", hdr("", ts), body, at, ErrNoSignature},
		{"no timestamp", hdr(sig, ""), body, at, ErrNoSignature},
		{"timestamp not a number", hdr(sig, "yesterday"), body, at, ErrNoSignature},
		{"6 minutes late (a replay)", hdr(sig, ts), body, time.Unix(1531420618, 0).Add(6 * time.Minute), ErrStale},
		{"6 minutes early", hdr(sig, ts), body, time.Unix(1531420618, 0).Add(-6 * time.Minute), ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySlack(tt.h, []byte(tt.body), secret, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// No secret (Socket Mode): a request signed with the empty key, which
	// anyone can compute, is refused.
	mac := hmac.New(sha256.New, nil)
	fmt.Fprintf(mac, "v0:%s:%s", ts, body)
	if err := VerifySlack(hdr("v0="+hex.EncodeToString(mac.Sum(nil)), ts), []byte(body), "", at); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("empty secret: got %v, want %v", err, ErrBadSignature)
	}
}

func TestMapAlert(t *testing.T) {
	rules := []config.AlertMapping{
		{Match: map[string]string{"alertname": "BlackboxProbeFailed"}, Target: "pod {exported_namespace}/{exported_pod}", To: "{target}", Channel: "#shop"},
		{Match: map[string]string{"alertname": "DNSProbeFailed"}, Target: "pod {exported_namespace}/{exported_pod}", DNS: "{query}"},
	}
	tests := []struct {
		name        string
		labels, ann map[string]string
		want        string // command form
		channel     string
		reason      string
	}{
		{name: "pod", labels: map[string]string{"alertname": "X", "namespace": "default", "pod": "web"}, want: "pod default/web"},
		{name: "pod with annotations", labels: map[string]string{"namespace": "default", "pod": "web"}, ann: map[string]string{"netdiag_to": "svc/default/db:5432", "netdiag_dns": "kubernetes.default"},
			want: "pod default/web to svc/default/db:5432 dns kubernetes.default"},
		{name: "service", labels: map[string]string{"namespace": "shop", "service": "db"}, want: "svc shop/db"},
		{name: "node", labels: map[string]string{"node": "worker-1"}, want: "node worker-1"},
		{name: "instance with port", labels: map[string]string{"instance": "worker-2:9100"}, want: "node worker-2"},
		{name: "pod before instance", labels: map[string]string{"namespace": "a", "pod": "b", "instance": "10.0.0.1:9100"}, want: "pod a/b"},
		{name: "config rule first", labels: map[string]string{"alertname": "BlackboxProbeFailed", "exported_namespace": "shop", "exported_pod": "web", "target": "10.0.0.9:80", "namespace": "monitoring", "pod": "blackbox"},
			want: "pod shop/web to 10.0.0.9:80", channel: "#shop"},
		{name: "config rule without its labels falls through", labels: map[string]string{"alertname": "BlackboxProbeFailed", "namespace": "monitoring", "pod": "blackbox"}, want: "pod monitoring/blackbox"},
		{name: "config rule without its to label falls through", labels: map[string]string{"alertname": "BlackboxProbeFailed", "exported_namespace": "shop", "exported_pod": "web", "namespace": "monitoring", "pod": "blackbox"},
			want: "pod monitoring/blackbox"},
		{name: "config rule without its dns label falls through", labels: map[string]string{"alertname": "DNSProbeFailed", "exported_namespace": "shop", "exported_pod": "web"}, reason: "no target in its labels"},
		{name: "config rule with its dns label", labels: map[string]string{"alertname": "DNSProbeFailed", "exported_namespace": "shop", "exported_pod": "web", "query": "db.shop"},
			want: "pod shop/web dns db.shop"},
		{name: "a Service takes no annotations", labels: map[string]string{"namespace": "shop", "service": "db"}, ann: map[string]string{"netdiag_to": "10.0.0.9:80", "netdiag_dns": "db.shop"}, want: "svc shop/db"},
		{name: "a node takes netdiag_to, not netdiag_dns", labels: map[string]string{"node": "worker-1"}, ann: map[string]string{"netdiag_to": "10.0.0.9:80", "netdiag_dns": "db.shop"}, want: "node worker-1 to 10.0.0.9:80"},
		{name: "a mapping that does not parse falls through", labels: map[string]string{"node": "Worker_1!", "instance": "10.0.0.5:9100"}, want: "node 10.0.0.5"},
		{name: "an IPv6 instance", labels: map[string]string{"instance": "[2001:2::11]:9100"}, want: "node 2001:2::11"},
		{name: "an instance that is a URL", labels: map[string]string{"instance": "https://shop.example.com/health"}, reason: "no target in its labels (instance)"},
		{name: "nothing", labels: map[string]string{"alertname": "Watchdog", "severity": "none"}, reason: "no target in its labels (alertname, severity)"},
		{name: "bad pod name", labels: map[string]string{"namespace": "default", "pod": "<!channel>"}, reason: "cannot diagnose"},
		{name: "bad netdiag_to", labels: map[string]string{"namespace": "default", "pod": "web"}, ann: map[string]string{"netdiag_to": "a b"}, reason: "cannot diagnose"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, ch, reason := MapAlert(tt.labels, tt.ann, rules)
			if tt.reason != "" {
				if !strings.Contains(reason, tt.reason) {
					t.Fatalf("reason %q, want %q", reason, tt.reason)
				}
				return
			}
			if reason != "" {
				t.Fatalf("reason %q", reason)
			}
			if got := commandOf(q); got != tt.want || ch != tt.channel {
				t.Fatalf("got %q in %q, want %q in %q", got, ch, tt.want, tt.channel)
			}
		})
	}
}

type fakeMembers map[string][]string

func (f fakeMembers) GroupMembers(_ context.Context, g string) ([]string, error) {
	m, ok := f[g]
	if !ok {
		return nil, errors.New("usergroup_not_found")
	}
	return m, nil
}

func TestAccess(t *testing.T) {
	a := &Access{Members: fakeMembers{"S0SRE": {"U_SRE"}}, Rules: []config.AccessRule{
		{Users: []string{"U_DEV"}, Verbs: []string{"pod", "capture", "history"}, Namespaces: []string{"shop"}},
		{Groups: []string{"S0SRE", "S0GONE"}, Verbs: []string{"pod", "svc", "node", "capture", "capture-payload", "digest"}, Namespaces: []string{"*"}},
		{Channels: []string{"C_INCIDENT"}, Verbs: []string{"pod"}, Namespaces: []string{"*"}},
	}}
	ctx := context.Background()
	tests := []struct {
		who       Who
		verb, ns  string
		allowed   bool
		wantInErr string
	}{
		{Who{"U_DEV", "C1"}, "pod", "shop", true, ""},
		{Who{"U_DEV", "C1"}, "pod", "billing", false, `"pod" permission in namespace billing`},
		{Who{"U_DEV", "C1"}, "capture-payload", "shop", false, `"capture-payload"`},
		{Who{"U_DEV", "C1"}, "node", "", false, `every namespace`},
		{Who{"U_SRE", "C1"}, "capture-payload", "billing", true, ""},
		{Who{"U_SRE", "C1"}, "node", "", true, ""},
		{Who{"U_SRE", "C1"}, "history", "shop", false, `"history"`},
		{Who{"U_ANY", "C_INCIDENT"}, "pod", "billing", true, ""},
		{Who{"U_ANY", "C_INCIDENT"}, "capture", "billing", false, "user group could not be read"},
		{Who{"U_ANY", "C_OTHER"}, "pod", "shop", false, "ask an admin"},
	}
	for _, tt := range tests {
		err := a.Allow(ctx, tt.who, tt.verb, tt.ns)
		if (err == nil) != tt.allowed {
			t.Errorf("%+v %s in %q: %v, want allowed=%v", tt.who, tt.verb, tt.ns, err, tt.allowed)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tt.wantInErr) {
			t.Errorf("%+v %s: %q does not say %q", tt.who, tt.verb, err, tt.wantInErr)
		}
	}
	if g := a.Grants(ctx, Who{"U_DEV", "C1"}); g != "pod in shop; capture in shop; history in shop" {
		t.Errorf("grants %q", g)
	}
	if err := (&Access{}).Allow(ctx, Who{"U1", "C1"}, "pod", "default"); err == nil {
		t.Error("no rules allowed something")
	}
}

func TestPreformatted(t *testing.T) {
	long := strings.Repeat("line of evidence <b>\n", 400)
	tests := []struct {
		name, text string
		whole      bool
	}{
		{"short", "ping: 5/5 received\n", true},
		{"just fits", strings.Repeat("x", maxSectionText-6), true},
		{"escaping makes it too long", strings.Repeat("<", maxSectionText/4), false},
		{"many lines", long, false},
		{"one long line of runes", strings.Repeat("é", 4000), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, whole := Preformatted(tt.text, "_more in a file_")
			if whole != tt.whole {
				t.Fatalf("whole %v, want %v", whole, tt.whole)
			}
			if len(m.Text) > maxSectionText || !utf8.ValidString(m.Text) {
				t.Fatalf("%d bytes (limit %d), valid UTF-8 %v", len(m.Text), maxSectionText, utf8.ValidString(m.Text))
			}
			if !strings.HasPrefix(m.Text, "```") {
				t.Errorf("not a code block: %.40q", m.Text)
			}
			if whole && m.Text != "```"+esc(tt.text)+"```" {
				t.Errorf("a text that fits was changed: %.80q", m.Text)
			}
			if !whole {
				if !strings.HasSuffix(m.Text, "```\n_more in a file_") {
					t.Errorf("the note is not at the end: %q", m.Text[len(m.Text)-60:])
				}
				if strings.Contains(tt.text, "\n") && !strings.HasSuffix(strings.TrimSuffix(m.Text, "```\n_more in a file_"), "\n") {
					t.Errorf("cut inside a line")
				}
			}
		})
	}
}
