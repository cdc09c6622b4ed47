package reconcile

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the lumen_reconcile_* metrics, labelled by reconciler; one
// set serves every loop of an agent.
type Metrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	pending  *prometheus.GaugeVec
}

// DefaultMetrics serve loops configured without Metrics: the agent's.
var DefaultMetrics = NewMetrics()

// NewMetrics returns unregistered metrics; register Collectors().
func NewMetrics() *Metrics {
	return &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lumen_reconcile_duration_seconds", Help: "Time of one reconcile pass, by reconciler.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"reconciler"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_reconcile_errors_total", Help: "Failed reconcile passes (each retried with back-off), by reconciler.",
		}, []string{"reconciler"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lumen_reconcile_pending", Help: "1 while a reconciler has changes it has not applied yet.",
		}, []string{"reconciler"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.errors, m.pending}
}
