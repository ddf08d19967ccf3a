package bot_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/internal/amtest"
	"github.com/netdiag/netdiag/internal/slackfake"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/store"
)

// End to end with a real Alertmanager: alerts for lab pods reach the bot
// through it, a wrong token is refused and the alerts still arrive once it
// is right, each group gets one thread with its findings, an alert with no
// target says why in the thread, Slack refusing everything for a while
// loses nothing and posts nothing twice, and resolving updates the thread.
func TestAlertmanagerToThread(t *testing.T) {
	l := labtest.Up(t, "bota")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := lab.InjectFault(ctx, l.Instance, "port-firewall", nil); err != nil {
		t.Fatal(err)
	}
	h := startBot(t, l, config.Alertmanager{Bearer: config.NewSecret("right-token"), Cooldown: config.Duration(10 * time.Minute)}, 0)
	am := amtest.Start(t, amtest.Options{ReceiverURL: h.server.URL + "/alertmanager", Bearer: "wrong-token", GroupBy: []string{"alertname"}})

	starts := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	alerts := []amtest.Alert{
		{Labels: map[string]string{"alertname": "PodCannotReachBackend", "namespace": "default", "pod": "client"},
			Annotations: map[string]string{"netdiag_to": "pod/default/web:8080", "summary": "client cannot reach web"}, StartsAt: starts},
		// The same target again in the same group: one diagnosis, not two.
		{Labels: map[string]string{"alertname": "PodCannotReachBackend", "namespace": "default", "pod": "client", "probe": "second"},
			Annotations: map[string]string{"netdiag_to": "pod/default/web:8080"}, StartsAt: starts},
		{Labels: map[string]string{"alertname": "NodeNetworkErrors", "node": "node-b"}, StartsAt: starts},
		{Labels: map[string]string{"alertname": "Watchdog", "severity": "none"}, StartsAt: starts},
		// A pod that is not there: the thread says so, the bot goes on.
		{Labels: map[string]string{"alertname": "GhostPod", "namespace": "default", "pod": "ghost"}, StartsAt: starts},
	}
	if err := am.PostAlerts(ctx, alerts...); err != nil {
		t.Fatal(err)
	}
	// The wrong token: Alertmanager is refused at each group interval,
	// and nothing is recorded.
	time.Sleep(1500 * time.Millisecond)
	if open, _ := h.store.OpenAlerts(ctx); len(open) != 0 || len(h.slack.Messages()) != 0 {
		t.Fatalf("the wrong token got through: %d alerts, %d messages", len(open), len(h.slack.Messages()))
	}
	if !strings.Contains(am.Log(), "401") {
		t.Errorf("Alertmanager's log does not show the 401")
	}

	// Slack is down (429) when the right token arrives.
	h.slack.Outage(http.StatusTooManyRequests, time.Second)
	if err := am.Reconfigure(amtest.Options{ReceiverURL: h.server.URL + "/alertmanager", Bearer: "right-token", GroupBy: []string{"alertname"}}); err != nil {
		t.Fatal(err)
	}
	err := waitFor(ctx, func() bool { open, _ := h.store.OpenAlerts(ctx); return len(open) == 5 })
	if err != nil {
		t.Fatal("alerts not recorded after the token was fixed")
	}
	// Wait until the diagnoses are done and their deliveries refused.
	if err := waitFor(ctx, func() bool {
		recs, _ := h.store.History(ctx, store.HistoryQuery{})
		return len(recs) == 2
	}); err != nil {
		t.Fatal("the two diagnoses did not finish")
	}
	time.Sleep(time.Second)
	if h.slack.Refused() == 0 {
		t.Fatal("the outage refused nothing")
	}
	h.slack.Restore()

	// Every group's thread, with its findings, once.
	var threads map[string]slackfake.Message
	err = h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		threads = headers(s.Messages())
		if len(threads) != 4 {
			return false
		}
		if count(s.Thread(channel, threads["GhostPod"].TS), "default/ghost") < 2 {
			return false
		}
		pod := s.Thread(channel, threads["PodCannotReachBackend"].TS)
		node := s.Thread(channel, threads["NodeNetworkErrors"].TS)
		wd := s.Thread(channel, threads["Watchdog"].TS)
		return summaries(pod) == 1 && count(pod, "no diagnosis: cooldown") == 1 && count(pod, "port-unreachable/firewall") == 2 && summaries(node) == 1 && count(wd, "no diagnosis: no target in its labels") == 1
	})
	if err != nil {
		t.Fatalf("threads: %v\n%s", err, dump(h.slack.Messages()))
	}
	for name, hd := range threads {
		if n := countTop(h.slack.Messages(), "alertname="+name); n != 1 {
			t.Errorf("group %s has %d first messages, want 1", name, n)
		}
		_ = hd
	}
	// The ghost's alert keeps why it has no finding, so a restart does not
	// diagnose it again.
	open, err := h.store.OpenAlerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range open {
		if a.Name == "GhostPod" && (!strings.HasPrefix(a.Reason, "no finding: ") || !strings.Contains(a.Reason, "ghost")) {
			t.Errorf("the ghost pod's alert records %q, want why it has no finding", a.Reason)
		}
	}
	// A node resolves through its own resolver: its self-check is healthy,
	// not a pod's DNS misconfiguration.
	if node := h.slack.Thread(channel, threads["NodeNetworkErrors"].TS); count(node, "healthy/") == 0 {
		t.Errorf("node-b's self-check is not healthy:%s", dump(node))
	}
	// and what it ruled out is said of the node, not of a pod.
	recs, err := h.store.History(ctx, store.HistoryQuery{TargetPrefix: "node node-b"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("node-b's findings: %d, %v", len(recs), err)
	}
	if rec, err := h.store.Finding(ctx, recs[0].ID, false); err != nil {
		t.Fatal(err)
	} else {
		var b strings.Builder
		rec.Finding.WriteText(&b)
		if !strings.Contains(b.String(), "the node's resolv.conf") || strings.Contains(b.String(), "pod's") {
			t.Errorf("node-b's finding speaks of a pod:\n%s", b.String())
		}
	}
	pod := h.slack.Thread(channel, threads["PodCannotReachBackend"].TS)
	if n := summaries(pod); n != 1 {
		t.Errorf("the group's thread has %d findings, want 1 (two alerts, one target):%s", n, dump(pod))
	}
	// Said as "being diagnosed for another alert" when both come in one
	// notification, "was diagnosed ... ago" when Alertmanager sent them
	// apart (it may, after a reload).
	if n := count(pod, "no diagnosis: cooldown: pod default/client"); n != 1 {
		t.Errorf("the second alert's cooldown is not said in the thread:%s", dump(pod))
	}

	// Resolve: the thread hears it and the first message says RESOLVED.
	for i := range alerts {
		alerts[i].EndsAt = time.Now().Add(-100 * time.Millisecond)
	}
	if err := am.PostAlerts(ctx, alerts...); err != nil {
		t.Fatal(err)
	}
	err = h.slack.WaitFor(ctx, func(s *slackfake.Server) bool {
		ms := s.Messages()
		for _, m := range ms {
			if strings.Contains(m.Text, "alertname=PodCannotReachBackend") {
				return strings.Contains(m.Latest().Text, "[RESOLVED]") && count(s.Thread(channel, m.TS), "resolved:") == 2
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("resolved not shown: %v\n%s", err, dump(h.slack.Messages()))
	}
	if open, _ := h.store.OpenAlerts(ctx); len(open) != 0 {
		t.Errorf("%d alerts still open after resolving", len(open))
	}
	// Nothing twice: every finding's summary was posted once.
	total := 0
	for _, m := range h.slack.Messages() {
		if isSummary(m) {
			total++
			if m.ThreadTS == "" {
				t.Errorf("a finding outside its thread: %q", m.Text)
			}
		}
	}
	if total != 2 {
		t.Errorf("%d finding summaries posted, want 2:%s", total, dump(h.slack.Messages()))
	}

	// /metrics says the same.
	m := scrape(t, h.server.URL+"/metrics")
	for _, w := range []struct {
		series string
		min    float64
		max    float64
	}{
		{`netdiag_alerts_total{result="diagnosing"}`, 3, 3}, // client, node-b, ghost
		{`netdiag_alerts_total{result="cooldown"}`, 1, 1},
		{`netdiag_alerts_total{result="unmapped"}`, 1, 1},
		{`netdiag_alerts_total{result="resolved"}`, 5, 5},
		{`netdiag_diagnoses_total{cause="firewall",class="port-unreachable",source="alert"}`, 1, 1},
		{`netdiag_diagnosis_failures_total{source="alert"}`, 1, 1},
		{`netdiag_diagnosis_duration_seconds_count{source="alert"}`, 2, 2},
		{`netdiag_requests_total{code="Unauthorized",handler="alertmanager"}`, 1, 1e9},
		{`netdiag_requests_total{code="OK",handler="alertmanager"}`, 2, 1e9},
		{`netdiag_slack_api_errors_total`, 1, 1e9}, // the outage, summed over kinds
		{`netdiag_messages_given_up_total`, 0, 0},
		{`netdiag_queue_depth`, 0, 0},
	} {
		v, ok := m[w.series]
		if !ok && w.min == 0 {
			ok = true // a vector with no series yet counts nothing
		}
		if !ok || v < w.min || v > w.max {
			t.Errorf("%s = %v (present %v), want %v to %v", w.series, v, ok, w.min, w.max)
		}
	}
}

// scrape reads a Prometheus text page into series -> value; a name alone
// sums its series.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	out := map[string]float64{}
	add := func(name string, labels []*dto.LabelPair, v float64) {
		var ls []string
		for _, l := range labels {
			ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		sort.Strings(ls)
		if len(ls) > 0 {
			out[name+"{"+strings.Join(ls, ",")+"}"] = v
		}
		out[name] += v
	}
	for name, f := range fams {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.Counter != nil:
				add(name, mt.GetLabel(), mt.GetCounter().GetValue())
			case mt.Gauge != nil:
				add(name, mt.GetLabel(), mt.GetGauge().GetValue())
			case mt.Histogram != nil:
				add(name+"_count", mt.GetLabel(), float64(mt.GetHistogram().GetSampleCount()))
			}
		}
	}
	return out
}

// headers maps alert group names to the message that opened their thread.
func headers(ms []slackfake.Message) map[string]slackfake.Message {
	out := map[string]slackfake.Message{}
	for _, m := range ms {
		if m.ThreadTS != "" {
			continue
		}
		if _, name, ok := strings.Cut(m.Text, "alertname="); ok {
			name, _, _ = strings.Cut(name, "\n")
			name, _, _ = strings.Cut(name, " ")
			out[name] = m
		}
	}
	return out
}

func count(ms []slackfake.Message, s string) int {
	n := 0
	for _, m := range ms {
		if strings.Contains(m.Latest().Text, s) {
			n++
		}
	}
	return n
}

// isSummary tells a finding's summary from its evidence (a code block).
func isSummary(m slackfake.Message) bool {
	text := m.Latest().Text
	return strings.Contains(text, "(confidence") && !strings.HasPrefix(text, "```")
}

func summaries(ms []slackfake.Message) int {
	n := 0
	for _, m := range ms {
		if isSummary(m) {
			n++
		}
	}
	return n
}

func countTop(ms []slackfake.Message, s string) int {
	n := 0
	for _, m := range ms {
		if m.ThreadTS == "" && strings.Contains(m.Text, s) {
			n++
		}
	}
	return n
}

func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
