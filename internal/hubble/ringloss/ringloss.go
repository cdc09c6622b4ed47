// Package ringloss turns the datapath's count of events it could not put
// in the ring buffer into lost-event reports.
package ringloss

import (
	"context"
	"log/slog"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
)

// Counter reads the datapath's lost-events counter.
type Counter interface{ EventsLost() (uint64, error) }

// Watcher polls the counter every second.
type Watcher struct {
	dp  Counter
	obs *observer.Observer
	hm  *hubblemetrics.Metrics
	log *slog.Logger
}

// New returns a watcher reporting to obs and hm.
func New(dp Counter, obs *observer.Observer, hm *hubblemetrics.Metrics, log *slog.Logger) *Watcher {
	return &Watcher{dp: dp, obs: obs, hm: hm, log: log}
}

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	var last uint64
	first := true
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := w.dp.EventsLost()
		if err != nil {
			w.log.Debug("reading datapath counters", "err", err)
			continue
		}
		// The counter survives agent restarts: report only what is new.
		if !first && n > last {
			w.obs.RecordLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, n-last)
			w.hm.OnLost(hubblemetrics.LostRingBuffer, n-last)
		}
		last, first = n, false
	}
}
