// Package metrics exposes the agent's Prometheus metrics, all named lumen_*.
// Datapath counters are read from the per-CPU metrics map at scrape time.
package metrics

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lumen-net/lumen/internal/datapath"
)

// Registry holds the agent's metrics.
type Registry struct {
	reg *prometheus.Registry

	// Events counts datapath events read from the ring buffer, by type.
	Events *prometheus.CounterVec
	// Subsystem is 1 for each subsystem that is ok (or disabled), else 0.
	Subsystem *prometheus.GaugeVec
}

// New registers the standard collectors and the datapath counters.
// endpoints reports the number of local endpoints.
func New(counters func() ([]datapath.Counter, error), endpoints func() int) *Registry {
	r := &Registry{
		reg: prometheus.NewRegistry(),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_datapath_events_total", Help: "Datapath events read from the ring buffer, by type.",
		}, []string{"type"}),
		Subsystem: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lumen_subsystem_healthy", Help: "1 when the subsystem is healthy (or disabled), else 0.",
		}, []string{"subsystem"}),
	}
	r.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.Events, r.Subsystem,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lumen_endpoint_count", Help: "Number of endpoints managed by this agent.",
		}, func() float64 { return float64(endpoints()) }),
		&datapathCollector{counters: counters},
	)
	return r
}

// Register adds other subsystems' collectors (hubble flow metrics).
func (r *Registry) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := r.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the metrics in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

var (
	forwardPackets = prometheus.NewDesc("lumen_forward_count_total", "Packets forwarded by the datapath.", []string{"direction"}, nil)
	forwardBytes   = prometheus.NewDesc("lumen_forward_bytes_total", "Bytes forwarded by the datapath.", []string{"direction"}, nil)
	dropPackets    = prometheus.NewDesc("lumen_drop_count_total", "Packets dropped by the datapath.", []string{"reason", "direction"}, nil)
	dropBytes      = prometheus.NewDesc("lumen_drop_bytes_total", "Bytes dropped by the datapath.", []string{"reason", "direction"}, nil)
	eventsLost     = prometheus.NewDesc("lumen_datapath_events_lost_total", "Events the datapath could not put in the ring buffer (full).", nil, nil)
	scrapeErrors   atomic.Uint64
	scrapeErrDesc  = prometheus.NewDesc("lumen_datapath_metrics_read_errors_total", "Failed reads of the datapath metrics map.", nil, nil)
)

type datapathCollector struct {
	counters func() ([]datapath.Counter, error)
}

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- forwardPackets
	ch <- forwardBytes
	ch <- dropPackets
	ch <- dropBytes
	ch <- scrapeErrDesc
	ch <- eventsLost
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	cs, err := c.counters()
	if err != nil {
		scrapeErrors.Add(1)
	}
	for _, k := range cs {
		if k.Reason == datapath.ReasonEventsLost {
			ch <- prometheus.MustNewConstMetric(eventsLost, prometheus.CounterValue, float64(k.Packets))
			continue
		}
		dir := datapath.DirectionName(k.Direction)
		if k.Reason == 0 {
			ch <- prometheus.MustNewConstMetric(forwardPackets, prometheus.CounterValue, float64(k.Packets), dir)
			ch <- prometheus.MustNewConstMetric(forwardBytes, prometheus.CounterValue, float64(k.Bytes), dir)
			continue
		}
		reason := datapath.ReasonName(k.Reason)
		ch <- prometheus.MustNewConstMetric(dropPackets, prometheus.CounterValue, float64(k.Packets), reason, dir)
		ch <- prometheus.MustNewConstMetric(dropBytes, prometheus.CounterValue, float64(k.Bytes), reason, dir)
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.CounterValue, float64(scrapeErrors.Load()))
}
