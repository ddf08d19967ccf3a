package amtest_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/prometheus/alertmanager/notify/webhook"
)

// TestDelivery posts an alert and resolves it, and checks what the webhook
// receiver gets from Alertmanager for each kind of credentials: the library's
// webhook.Message, with the alert's labels and a group key, firing and then
// resolved.
func TestDelivery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   amtest.Options
		authOK func(*http.Request) bool
	}{
		{
			name: "bearer",
			opts: amtest.Options{Bearer: "tok-1"},
			authOK: func(r *http.Request) bool {
				return r.Header.Get("Authorization") == "Bearer tok-1"
			},
		},
		{
			name: "basic",
			// The colon and the # check that the configuration quotes
			// what YAML would otherwise split or cut.
			opts: amtest.Options{Username: "netdiag", Password: "p:ss #1"},
			authOK: func(r *http.Request) bool {
				u, p, ok := r.BasicAuth()
				return ok && u == "netdiag" && p == "p:ss #1"
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			rec := newReceiver(t, func(r *http.Request) int {
				if !tc.authOK(r) {
					return http.StatusUnauthorized
				}
				return http.StatusOK
			})
			opts := tc.opts
			opts.ReceiverURL = rec.url + "/hook"
			opts.GroupBy = []string{"alertname"}
			am := amtest.Start(t, opts)

			alert := amtest.Alert{
				Labels:       map[string]string{"alertname": "AmtestDelivery", "case": tc.name, "severity": "warning"},
				Annotations:  map[string]string{"summary": "delivered with " + tc.name + " credentials"},
				StartsAt:     time.Now(),
				GeneratorURL: "http://127.0.0.1/graph?case=" + tc.name,
			}
			posted := time.Now()
			if err := am.PostAlerts(ctx, alert); err != nil {
				t.Fatal(err)
			}
			firing, n := rec.wait(ctx, t, 0, "firing")
			t.Logf("firing notification %s after posting", firing.at.Sub(posted).Round(time.Millisecond))
			checkMessage(t, firing, alert, "firing")
			if firing.msg.ExternalURL != am.URL() {
				t.Errorf("external URL %q, want %s", firing.msg.ExternalURL, am.URL())
			}
			if want := `{}:{alertname="AmtestDelivery"}`; firing.msg.GroupKey != want {
				t.Errorf("group key %q, want %s (the root route, grouped by alertname)", firing.msg.GroupKey, want)
			}

			held, err := am.Alerts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(held) != 1 || held[0].Labels["case"] != tc.name || held[0].Status.State != "active" ||
				len(held[0].Receivers) != 1 || held[0].Receivers[0].Name != amtest.Receiver {
				t.Errorf("GET /api/v2/alerts after the notification: %+v, want the one alert, active, for receiver %s", held, amtest.Receiver)
			}

			alert.EndsAt = time.Now()
			resolvedAt := time.Now()
			if err := am.PostAlerts(ctx, alert); err != nil {
				t.Fatal(err)
			}
			resolved, _ := rec.wait(ctx, t, n, "resolved")
			t.Logf("resolved notification %s after posting the end", resolved.at.Sub(resolvedAt).Round(time.Millisecond))
			checkMessage(t, resolved, alert, "resolved")
			if !resolved.msg.Alerts[0].EndsAt.Equal(alert.EndsAt) {
				t.Errorf("resolved alert ends at %s, want %s", resolved.msg.Alerts[0].EndsAt, alert.EndsAt)
			}
			if resolved.msg.GroupKey != firing.msg.GroupKey {
				t.Errorf("group key changed from %q to %q on resolution", firing.msg.GroupKey, resolved.msg.GroupKey)
			}
			for _, r := range rec.all() {
				if r.status != http.StatusOK {
					t.Errorf("the receiver refused a request (%d, Authorization %q): the credentials were not sent as configured", r.status, r.auth)
				}
			}
		})
	}
}

// TestWrongTokenFixedByReconfigure: a receiver that refuses Alertmanager's
// token keeps the alert undelivered, and once an operator fixes the token
// the alert is delivered without being posted again.
func TestWrongTokenFixedByReconfigure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rec := newReceiver(t, func(r *http.Request) int {
		if r.Header.Get("Authorization") != "Bearer right" {
			return http.StatusUnauthorized
		}
		return http.StatusOK
	})
	opts := amtest.Options{ReceiverURL: rec.url + "/hook", Bearer: "wrong"}
	am := amtest.Start(t, opts)

	alert := amtest.Alert{Labels: map[string]string{"alertname": "AmtestWrongToken", "severity": "critical"}}
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}
	// Alertmanager does not retry a 4xx within one notification; it sends
	// the group again at the next group interval, since nothing was
	// recorded as delivered. Two refusals show both.
	first, n := rec.wait(ctx, t, 0, "")
	second, n := rec.wait(ctx, t, n, "")
	for _, r := range []request{first, second} {
		if r.status != http.StatusUnauthorized || r.auth != "Bearer wrong" {
			t.Fatalf("request with Authorization %q answered %d, want the wrong token refused with 401", r.auth, r.status)
		}
	}
	t.Logf("refused twice, %s apart (group interval %s)", second.at.Sub(first.at).Round(time.Millisecond), amtest.DefaultGroupInterval)
	if !strings.Contains(am.Log(), "unexpected status code 401") {
		t.Errorf("Alertmanager's log does not report the 401:\n%s", am.Log())
	}

	opts.Bearer = "right"
	fixed := time.Now()
	if err := am.Reconfigure(opts); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	for {
		r, next := rec.wait(ctx, t, n, "")
		n = next
		if r.auth == "Bearer wrong" && r.at.Before(reloaded) {
			// Sent with the old configuration while the reload ran.
			continue
		}
		if r.status != http.StatusOK {
			t.Fatalf("after Reconfigure: request with Authorization %q answered %d", r.auth, r.status)
		}
		t.Logf("delivered %s after Reconfigure", r.at.Sub(fixed).Round(time.Millisecond))
		checkMessage(t, r, alert, "firing")
		break
	}
}

// checkMessage checks a notification of the one alert want in status.
func checkMessage(t *testing.T, r request, want amtest.Alert, status string) {
	t.Helper()
	m := r.msg
	if r.status != http.StatusOK {
		t.Errorf("the receiver answered %d (Authorization %q)", r.status, r.auth)
	}
	if m.Version != "4" || m.Receiver != amtest.Receiver || m.Status != status {
		t.Errorf("message version %q, receiver %q, status %q; want 4, %s, %s", m.Version, m.Receiver, m.Status, amtest.Receiver, status)
	}
	if m.GroupKey == "" {
		t.Error("empty group key")
	}
	if len(m.Alerts) != 1 {
		t.Fatalf("%d alerts in the message, want 1: %+v", len(m.Alerts), m.Alerts)
	}
	a := m.Alerts[0]
	if a.Status != status {
		t.Errorf("alert status %q, want %s", a.Status, status)
	}
	if !equal(a.Labels, want.Labels) {
		t.Errorf("alert labels %v, want %v", a.Labels, want.Labels)
	}
	if len(want.Annotations) > 0 && !equal(a.Annotations, want.Annotations) {
		t.Errorf("alert annotations %v, want %v", a.Annotations, want.Annotations)
	}
	if !want.StartsAt.IsZero() && !a.StartsAt.Equal(want.StartsAt) {
		t.Errorf("alert starts at %s, want %s", a.StartsAt, want.StartsAt)
	}
	if a.GeneratorURL != want.GeneratorURL {
		t.Errorf("generator URL %q, want %q", a.GeneratorURL, want.GeneratorURL)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// request is one POST Alertmanager made to the receiver.
type request struct {
	at     time.Time
	auth   string
	status int // what the receiver answered
	msg    webhook.Message
}

// receiver is a webhook endpoint on 127.0.0.1 that records every request
// and answers what answer says.
type receiver struct {
	url string

	mu      sync.Mutex
	reqs    []request
	changed chan struct{} // closed and replaced on each request
}

func newReceiver(t *testing.T, answer func(*http.Request) int) *receiver {
	t.Helper()
	rec := &receiver{changed: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := request{at: time.Now(), auth: r.Header.Get("Authorization"), status: answer(r)}
		if err := json.NewDecoder(r.Body).Decode(&req.msg); err != nil {
			t.Errorf("receiver: decode %s %s: %v", r.Method, r.URL, err)
			req.status = http.StatusBadRequest
		}
		w.WriteHeader(req.status)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, req)
		close(rec.changed)
		rec.changed = make(chan struct{})
		rec.mu.Unlock()
	}))
	// Explicitly loopback, whatever -httptest.serve says.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	rec.url = srv.URL
	return rec
}

// wait returns the first request from index from on whose message has the
// given status (any when empty), and the index after it.
func (rec *receiver) wait(ctx context.Context, t *testing.T, from int, status string) (request, int) {
	t.Helper()
	for {
		rec.mu.Lock()
		for i := from; i < len(rec.reqs); i++ {
			if status == "" || rec.reqs[i].msg.Status == status {
				r := rec.reqs[i]
				rec.mu.Unlock()
				return r, i + 1
			}
		}
		from = len(rec.reqs)
		changed := rec.changed
		rec.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			what := "a notification"
			if status != "" {
				what = "a " + status + " notification"
			}
			t.Fatalf("no %s arrived: %v (requests so far: %d)", what, ctx.Err(), len(rec.all()))
		}
	}
}

func (rec *receiver) all() []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]request(nil), rec.reqs...)
}
