package bot

import (
	"context"
	"net/http"
	"time"

	"github.com/netdiag/netdiag/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are what /metrics shows of the bot.
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	diagnoses  *prometheus.CounterVec
	failures   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	slackErrs  *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	lostMsgs   *prometheus.CounterVec
	alerts     *prometheus.CounterVec
	outboxLen  prometheus.Gauge
	queueDepth func() float64
}

// NewMetrics registers the bot's metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_requests_total", Help: "HTTP requests by handler and status code."}, []string{"handler", "code"})
	m.diagnoses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_diagnoses_total", Help: "Findings made, by verdict class and cause and by what asked (slack, alert)."}, []string{"class", "cause", "source"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_diagnosis_failures_total", Help: "Diagnoses that gave no finding (a target not found, a runner error)."}, []string{"source"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "netdiag_diagnosis_duration_seconds", Help: "Time from the start of a diagnosis to its finding.",
		Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120}}, []string{"source"})
	m.slackErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_slack_api_errors_total", Help: "Failed Slack API calls, by what was being sent."}, []string{"kind"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_messages_delivered_total", Help: "Outbox messages delivered to Slack, by kind."}, []string{"kind"})
	m.lostMsgs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_messages_given_up_total", Help: "Outbox messages given up (Slack refused them for good; each is logged)."}, []string{"kind"})
	m.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netdiag_alerts_total", Help: "Alerts received, by what became of them (diagnosing, duplicate, cooldown, unmapped, resolved)."}, []string{"result"})
	m.outboxLen = prometheus.NewGauge(prometheus.GaugeOpts{Name: "netdiag_outbox_messages", Help: "Messages in the outbox, not yet delivered."})
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "netdiag_queue_depth", Help: "Diagnoses waiting for a worker."}, func() float64 {
		if m.queueDepth == nil {
			return 0
		}
		return m.queueDepth()
	})
	m.reg.MustRegister(m.requests, m.diagnoses, m.failures, m.duration, m.slackErrs, m.deliveries, m.lostMsgs, m.alerts, m.outboxLen, queue,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is where the metrics live (for tests and other collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) request(handler string, code int) {
	m.requests.WithLabelValues(handler, http.StatusText(code)).Inc()
}

func (m *Metrics) diagnosed(class, cause, source string, took time.Duration) {
	m.diagnoses.WithLabelValues(class, cause, source).Inc()
	m.duration.WithLabelValues(source).Observe(took.Seconds())
}

func (m *Metrics) failedDiagnosis(source string) { m.failures.WithLabelValues(source).Inc() }
func (m *Metrics) slackError(kind string)        { m.slackErrs.WithLabelValues(kind).Inc() }
func (m *Metrics) delivered(kind string)         { m.deliveries.WithLabelValues(kind).Inc() }
func (m *Metrics) lost(kind string)              { m.lostMsgs.WithLabelValues(kind).Inc() }
func (m *Metrics) alert(result string)           { m.alerts.WithLabelValues(result).Inc() }

func (m *Metrics) outbox(s *store.Store, ctx context.Context) {
	if u, err := s.Usage(ctx); err == nil {
		m.outboxLen.Set(float64(u.Outbox))
	}
}
