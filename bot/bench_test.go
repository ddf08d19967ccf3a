package bot_test

// Benchmarks of the bot on a lab, with Slack played by slackfake and a real
// Alertmanager. Each runs its scenario once per iteration and reports its
// figures; run them with
//
//	CI=1 go test ./bot/ -run '^$' -bench . -benchtime 1x

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// The webhook at 10,000 alerts a minute (one alert per notification, the
// worst case: Alertmanager usually batches a group) for 15 s, over 20
// targets: every alert recorded, at most one diagnosis per target.
func BenchmarkWebhookAck(b *testing.B) {
	l := labtest.Up(b, "bwh")
	for range b.N {
		h := startBot(b, l, config.Alertmanager{Bearer: config.NewSecret("tok"), Cooldown: config.Duration(10 * time.Minute)}, 0)
		const rate, span, targets = 10000.0 / 60, 15 * time.Second, 20
		n := int(rate * span.Seconds())
		lat := make([]time.Duration, n)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		start := time.Now()
		for i := range n {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				pod := fmt.Sprintf("app-%d", i%targets)
				if i%targets == 0 {
					pod = "client"
				}
				body := fmt.Sprintf(`{"version":"4","groupKey":"g%[1]d","status":"firing","receiver":"netdiag","groupLabels":{"alertname":"A%[1]d"},
"alerts":[{"status":"firing","labels":{"alertname":"A%[1]d","namespace":"default","pod":"%[2]s"},"startsAt":"%[3]s","fingerprint":"fp%[1]d"}]}`,
					i, pod, time.Now().UTC().Format(time.RFC3339Nano))
				req, _ := http.NewRequest(http.MethodPost, h.server.URL+"/alertmanager", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer tok")
				t0 := time.Now()
				resp, err := http.DefaultClient.Do(req)
				lat[i] = time.Since(t0)
				if err != nil || resp.StatusCode != 200 {
					b.Errorf("alert %d: %v %v", i, err, resp)
					return
				}
				resp.Body.Close()
			}()
		}
		wg.Wait()
		tick.Stop()
		took := time.Since(start)
		ctx := context.Background()
		open, err := h.store.OpenAlerts(ctx)
		if err != nil || len(open) != n {
			b.Fatalf("%d of %d alerts recorded: %v", len(open), n, err)
		}
		perTarget := map[string]int{}
		for _, a := range open {
			if a.Reason == "" && a.FindingID != "" {
				perTarget[a.Target]++
			}
		}
		for tg, c := range perTarget {
			if c > 1 {
				b.Errorf("%s: %d diagnoses in one cooldown", tg, c)
			}
		}
		b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(n)/took.Minutes(), "alerts/min")
		b.Logf("%d alerts in %s (%.0f/min): ack p50 %s, p99 %s, max %s; %d targets diagnosed once each",
			n, took.Round(time.Millisecond), float64(n)/took.Minutes(), percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1), len(perTarget))
	}
}

// The slash command's acknowledgement: 300 commands that start a
// diagnosis, 20 a second.
func BenchmarkSlashAck(b *testing.B) {
	l := labtest.Up(b, "bsl")
	for range b.N {
		h := startBot(b, l, config.Alertmanager{}, 0)
		lat := make([]time.Duration, 300)
		for i := range lat {
			t0 := time.Now()
			resp, body := h.slash(b, sre, "pod default/client", true)
			lat[i] = time.Since(t0)
			if resp.StatusCode != 200 || !strings.Contains(body, "ephemeral") {
				b.Fatalf("%d %s", resp.StatusCode, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
		b.Logf("slash command ack: p50 %s, p99 %s, max %s", percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1))
	}
}

// An alert posted to a real Alertmanager until its finding is in the
// thread: without a capture and with a 3 s one.
func BenchmarkAlertToFinding(b *testing.B) {
	l := labtest.Up(b, "bal")
	ctx := context.Background()
	if _, err := lab.InjectFault(ctx, l.Instance, "port-firewall", nil); err != nil {
		b.Fatal(err)
	}
	for _, capture := range []time.Duration{0, 3 * time.Second} {
		b.Run(fmt.Sprintf("capture=%s", capture), func(b *testing.B) {
			for i := range b.N {
				h := startBot(b, l, config.Alertmanager{Bearer: config.NewSecret("tok")}, capture)
				am := amtest.Start(b, amtest.Options{ReceiverURL: h.server.URL + "/alertmanager", Bearer: "tok", GroupBy: []string{"alertname"}})
				t0 := time.Now()
				err := am.PostAlerts(ctx, amtest.Alert{Labels: map[string]string{"alertname": fmt.Sprintf("Bench%d", i), "namespace": "default", "pod": "client"},
					Annotations: map[string]string{"netdiag_to": "pod/default/web:8080"}})
				if err != nil {
					b.Fatal(err)
				}
				var received time.Duration
				err = waitFor(ctx, func() bool {
					if received == 0 {
						if open, _ := h.store.OpenAlerts(ctx); len(open) > 0 {
							received = time.Since(t0)
						}
					}
					for _, m := range h.slack.Messages() {
						if m.ThreadTS != "" && strings.Contains(m.Latest().Text, "port-unreachable/firewall (confidence") {
							return true
						}
					}
					return false
				})
				total := time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				recs, _ := h.store.History(ctx, store.HistoryQuery{})
				b.ReportMetric(total.Seconds(), "s-alert-to-thread")
				b.Logf("capture %s: alert to bot %s (Alertmanager's group_wait %s), alert to finding in the thread %s; %d finding",
					capture, received.Round(time.Millisecond), amtest.DefaultGroupWait, total.Round(time.Millisecond), len(recs))
			}
		})
	}
}
