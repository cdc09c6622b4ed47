package k8sscale

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/operator"
)

func resourcePath(gvr schema.GroupVersionResource) string {
	return "/apis/" + gvr.Group + "/" + gvr.Version + "/" + gvr.Resource
}

// measure runs the agents of one mode through one churn period.
func measure(ctx context.Context, cp *controlplane.ControlPlane, cl *cluster, mode string, op *operator.Operator, log *slog.Logger) (*ModeResult, error) {
	o := cl.o
	gvr := k8s.CiliumEndpoints
	if mode == ModeCES {
		gvr = k8s.CiliumEndpointSlices
	}
	// Agents start watching from a current resourceVersion: their
	// initial lists are not part of the measurement.
	list, err := cl.c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", gvr.Resource, err)
	}
	log.Info("starting agents", "mode", mode, "agents", o.Agents)
	t0 := time.Now()
	f, err := startFleet(ctx, cp.RESTConfig(), resourcePath(gvr), list.GetResourceVersion(), o.Agents)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	log.Info("agents watching", "mode", mode, "took", time.Since(t0).Round(time.Millisecond))
	settle(ctx, f, time.Second)
	log.Info("agents settled", "mode", mode, "took", time.Since(t0).Round(time.Millisecond))

	apiserver := cp.PIDs()["kube-apiserver"]
	ev0, by0, rl0, rs0 := f.totals()
	cpu0 := cpuTime(apiserver)
	cepWrites0 := cl.writes.Load()
	var slice0 float64
	var lat0n uint64
	var lat0s float64
	if op != nil {
		slice0 = counter(op, "lumen_operator_ces_writes_total")
		lat0n, lat0s = histogram(op, "lumen_operator_ces_sync_latency_seconds")
	}

	log.Info("churning", "mode", mode, "rate", o.ChurnRate, "model", o.Churn, "duration", o.Duration)
	churnStart := time.Now()
	replacements := cl.churn(ctx, o.Duration)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &ModeResult{Mode: mode, Duration: o.Duration, Replacements: replacements, CEPWrites: cl.writes.Load() - cepWrites0}
	res.ObjectWrites = res.CEPWrites
	if op != nil {
		// The slices still batching are part of this churn.
		waitOperatorIdle(ctx, op, o.SyncInterval)
		res.SliceWrites = int64(counter(op, "lumen_operator_ces_writes_total") - slice0)
		res.ObjectWrites = res.SliceWrites
		n, s := histogram(op, "lumen_operator_ces_sync_latency_seconds")
		if n > lat0n {
			res.SliceLatency = time.Duration((s - lat0s) / float64(n-lat0n) * float64(time.Second))
		}
	}
	// Delivery: until every agent saw every write, or nothing arrives for
	// a while (then Delivered says how much was lost).
	want := ev0 + res.ObjectWrites*int64(o.Agents)
	deadline := time.Now().Add(15 * time.Minute) // 5,000 agents in CEP mode need ~5 minutes here
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ev, _, _, _ := f.totals()
		if ev != last {
			last, lastChange = ev, time.Now()
		}
		if ev >= want || time.Since(lastChange) > 5*time.Second {
			break
		}
		sleep(ctx, 50*time.Millisecond)
	}
	res.DeliveryTime = lastChange.Sub(churnStart)
	ev1, by1, rl1, rs1 := f.totals()
	res.APIServerCPU = cpuTime(apiserver) - cpu0
	res.Events, res.Bytes, res.Relists, res.Restarts = ev1-ev0, by1-by0, rl1-rl0, rs1-rs0
	secs := o.Duration.Seconds()
	res.ChurnRate = float64(res.Replacements) / secs
	res.EventsPerSec = float64(res.Events) / secs
	res.EventsPerSecPerAgent = res.EventsPerSec / float64(o.Agents)
	res.Mbps = float64(res.Bytes) * 8 / secs / 1e6
	if res.Events > 0 {
		res.BytesPerEvent = float64(res.Bytes) / float64(res.Events)
	}
	if res.ObjectWrites > 0 {
		res.Delivered = float64(res.Events) / float64(res.ObjectWrites*int64(o.Agents))
	}
	log.Info("measured", "mode", mode, "events/s", res.EventsPerSec, "Mbps", res.Mbps, "delivered", res.Delivered)
	return res, nil
}

// settle waits until no agent has received anything for quiet.
func settle(ctx context.Context, f *fleet, quiet time.Duration) {
	deadline := time.Now().Add(time.Minute)
	_, last, _, _ := f.totals()
	since := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 100*time.Millisecond)
		_, b, _, _ := f.totals()
		if b != last {
			last, since = b, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
}

// waitOperatorIdle waits until the operator has written every slice change.
func waitOperatorIdle(ctx context.Context, op *operator.Operator, interval time.Duration) {
	deadline := time.Now().Add(5 * time.Minute)
	idle := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if gauge(op, "lumen_operator_ces_slices_pending") == 0 && gauge(op, "lumen_operator_ces_writes_in_flight") == 0 {
			idle++
		} else {
			idle = 0
		}
		// Twice idle, an interval apart: no flush was in flight.
		if idle >= 2 {
			return
		}
		sleep(ctx, interval+50*time.Millisecond)
	}
}
