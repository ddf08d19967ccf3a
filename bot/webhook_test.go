package bot_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/bot/labdiag"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/store"
)

// What the webhook refuses, and that a refused notification records
// nothing.
func TestWebhookRefuses(t *testing.T) {
	h := startBot(t, &lab.Lab{Instance: "unused"}, config.Alertmanager{Username: "am", Password: config.NewSecret("pw")}, 0)
	valid := `{"version":"4","groupKey":"g","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","namespace":"default","pod":"web"},"fingerprint":"f1"}]}`
	tests := []struct {
		name, method, user, pass, body string
		code                           int
		want                           string
	}{
		{"no credentials", http.MethodPost, "", "", valid, 401, "bad or missing credentials"},
		{"wrong password", http.MethodPost, "am", "nope", valid, 401, "bad or missing credentials"},
		{"GET", http.MethodGet, "am", "pw", "", 405, "POST"},
		{"not JSON", http.MethodPost, "am", "pw", "alerts!", 400, "not an Alertmanager webhook notification"},
		{"no alerts", http.MethodPost, "am", "pw", `{"version":"4"}`, 400, "no alerts"},
		{"over 1 MiB", http.MethodPost, "am", "pw", `{"x":"` + strings.Repeat("a", bot.MaxWebhookBody) + `"}`, 413, "max_alerts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, h.server.URL+"/alertmanager", strings.NewReader(tt.body))
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b := new(strings.Builder)
			buf := make([]byte, 4096)
			n, _ := resp.Body.Read(buf)
			b.Write(buf[:n])
			if resp.StatusCode != tt.code || !strings.Contains(b.String(), tt.want) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, b.String(), tt.code, tt.want)
			}
		})
	}
	if open, _ := h.store.OpenAlerts(t.Context()); len(open) != 0 {
		t.Fatalf("a refused notification recorded %d alerts", len(open))
	}
	// The right credentials: recorded.
	req, _ := http.NewRequest(http.MethodPost, h.server.URL+"/alertmanager", strings.NewReader(valid))
	req.SetBasicAuth("am", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", err, resp)
	}
	resp.Body.Close()
	if open, _ := h.store.OpenAlerts(t.Context()); len(open) != 1 {
		t.Fatalf("%d alerts recorded, want 1", len(open))
	}
}

// The store fails under a running bot: the webhook answers 500, so that
// Alertmanager keeps the notification and sends it again; the bot
// restarted on its store records it and opens the group's thread. Nothing
// is lost.
func TestWebhookStoreDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "netdiag.db")
	fake := slackfake.New(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	run := func(st *store.Store, ln net.Listener) (stop func()) {
		b, err := bot.New(bot.Options{Store: st, Chat: bot.NewSlackChat(fake.BotToken(), fake.APIURL()),
			Diagnoser: &labdiag.Diagnoser{Instance: "unused", Log: log}, DefaultChannel: channel,
			Alertmanager: config.Alertmanager{Bearer: config.NewSecret("tok")}, Pace: 10 * time.Millisecond, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		bctx, bcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { b.Run(bctx); close(done) }()
		srv := &http.Server{Handler: b.Handler()}
		go srv.Serve(ln)
		return func() { srv.Close(); bcancel(); <-done }
	}
	st1, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	stop1 := run(st1, ln)
	st1.Close() // the bot's store is gone from under it

	am := amtest.Start(t, amtest.Options{ReceiverURL: "http://" + addr + "/alertmanager", Bearer: "tok", GroupBy: []string{"alertname"}})
	err = am.PostAlerts(ctx, amtest.Alert{Labels: map[string]string{"alertname": "PodCannotReachBackend", "namespace": "default", "pod": "client"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, func() bool { return strings.Contains(am.Log(), "unexpected status code 500") }); err != nil {
		t.Fatalf("Alertmanager was not answered 500:\n%s", am.Log())
	}
	stop1()
	t.Logf("Alertmanager was answered 500:\n%s", am.Log())

	// Restarted on the same store, at the same address.
	st2, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop2 := run(st2, ln2)
	defer stop2()
	if err := waitFor(ctx, func() bool { open, _ := st2.OpenAlerts(ctx); return len(open) == 1 }); err != nil {
		t.Fatalf("Alertmanager's retry was not recorded:\n%s", am.Log())
	}
	err = fake.WaitFor(ctx, func(s *slackfake.Server) bool {
		for _, m := range s.Messages() {
			if m.ThreadTS == "" && strings.Contains(m.Text, "alertname=PodCannotReachBackend") {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no thread for the group: %v%s", err, dump(fake.Messages()))
	}
}
