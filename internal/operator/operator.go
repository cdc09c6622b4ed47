// Package operator is lumen-operator's logic: the cluster-wide jobs no
// single agent should do. It allocates a pod CIDR to every CiliumNode from
// the cluster pools, batches CiliumEndpoints into CiliumEndpointSlices (so
// agents watch a few slices instead of every endpoint) and deletes
// CiliumIdentities no endpoint has used for a while. Every controller
// rebuilds its state from the API server when it starts, so the operator can
// be restarted at any time.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/lumen-net/lumen/internal/k8s"
)

// Config is the operator's configuration (lumen-operator's flags).
type Config struct {
	// IPv4Pools and IPv6Pools are the cluster pools pod CIDRs come from
	// (validated with ParsePools); a family without pools is not allocated.
	IPv4Pools    []netip.Prefix
	IPv4MaskSize int
	IPv6Pools    []netip.Prefix
	IPv6MaskSize int

	// EnableCES turns on CiliumEndpointSlice batching.
	EnableCES bool
	// CESMaxPerSlice is the most endpoints one slice holds.
	CESMaxPerSlice int
	// CESSliceMode is SliceModeIdentity or SliceModeFCFS (Cilium's
	// cesSliceModeIdentity and cesSliceModeFCFS are accepted too).
	CESSliceMode string
	// CESSyncInterval is how long changes are batched before the changed
	// slices are written: a slice is written at most once per interval.
	CESSyncInterval time.Duration
	// CESWriteQPS and CESWriteBurst limit slice writes (Cilium 1.11's
	// --ces-write-qps-limit and --ces-write-qps-burst); when the limit
	// holds writes back, more changes gather in each write.
	CESWriteQPS   float64
	CESWriteBurst int

	// IdentityGCInterval is how often unused identities are looked for
	// (0 disables identity garbage collection).
	IdentityGCInterval time.Duration
	// IdentityHeartbeatTimeout is how long an identity must have gone
	// unreferenced (and exist) before it is deleted.
	IdentityHeartbeatTimeout time.Duration
}

// DefaultConfig is lumen-operator's defaults: pools matching the lab's
// address plan (10.200.<n>.0/24, fd00:10:200:<n>::/64), Cilium 1.11's CES
// settings (identity slicing, 100 per slice, 500 ms, 10 writes/s burst 20)
// and identity GC settings.
func DefaultConfig() Config {
	return Config{
		IPv4Pools: []netip.Prefix{netip.MustParsePrefix(DefaultIPv4Pool)}, IPv4MaskSize: 24,
		IPv6Pools: []netip.Prefix{netip.MustParsePrefix(DefaultIPv6Pool)}, IPv6MaskSize: 64,
		CESMaxPerSlice:           100,
		CESSliceMode:             SliceModeIdentity,
		CESSyncInterval:          500 * time.Millisecond,
		CESWriteQPS:              10,
		CESWriteBurst:            20,
		IdentityGCInterval:       15 * time.Minute,
		IdentityHeartbeatTimeout: 30 * time.Minute,
	}
}

// Default pools (the lab's pod CIDRs are /24s and /64s of these).
const (
	DefaultIPv4Pool = "10.200.0.0/16"
	DefaultIPv6Pool = "fd00:10:200::/48"
)

// Validate checks what the flags' parsers cannot; errors name the flag.
func (c Config) Validate() error {
	switch {
	case c.CESMaxPerSlice < 1 || c.CESMaxPerSlice > 10000:
		return fmt.Errorf("ces-max-ciliumendpoints-per-ces: invalid value %d: want 1..10000", c.CESMaxPerSlice)
	case normalizeSliceMode(c.CESSliceMode) == "":
		return fmt.Errorf("ces-slice-mode: invalid value %q: want %s or %s", c.CESSliceMode, SliceModeIdentity, SliceModeFCFS)
	case c.CESSyncInterval <= 0:
		return fmt.Errorf("ces-sync-interval: invalid value %s: want a positive duration", c.CESSyncInterval)
	case c.CESWriteQPS <= 0:
		return fmt.Errorf("ces-write-qps-limit: invalid value %g: want > 0", c.CESWriteQPS)
	case c.CESWriteBurst < 1:
		return fmt.Errorf("ces-write-qps-burst: invalid value %d: want >= 1", c.CESWriteBurst)
	case c.IdentityGCInterval < 0:
		return fmt.Errorf("identity-gc-interval: invalid value %s: want >= 0 (0 disables)", c.IdentityGCInterval)
	case c.IdentityGCInterval > 0 && c.IdentityHeartbeatTimeout <= 0:
		return fmt.Errorf("identity-heartbeat-timeout: invalid value %s: want a positive duration", c.IdentityHeartbeatTimeout)
	}
	return nil
}

// Operator runs the controllers.
type Operator struct {
	cfg     Config
	log     *slog.Logger
	dyn     dynamic.Interface
	core    kubernetes.Interface
	metrics *metrics
	ready   chan struct{}

	ipam *nodeIPAM
	ces  *cesController
	gc   *identityGC
}

// New prepares an operator; Run starts it.
func New(clients *k8s.Clients, cfg Config, log *slog.Logger) (*Operator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	o := &Operator{cfg: cfg, log: log, dyn: clients.Dynamic, core: clients.Core, metrics: newMetrics(), ready: make(chan struct{})}
	if len(cfg.IPv4Pools) > 0 || len(cfg.IPv6Pools) > 0 {
		o.ipam = newNodeIPAM(o, cfg)
	}
	if cfg.EnableCES {
		o.ces = newCESController(o, cfg)
	}
	if cfg.IdentityGCInterval > 0 {
		o.gc = newIdentityGC(o, cfg.IdentityGCInterval, cfg.IdentityHeartbeatTimeout)
	}
	return o, nil
}

// Ready is closed once every controller has rebuilt its state from the API
// server and started working.
func (o *Operator) Ready() <-chan struct{} { return o.ready }

// Registry holds the operator's metrics (lumen_operator_*).
func (o *Operator) Registry() *prometheus.Registry { return o.metrics.reg }

// MetricsHandler serves the metrics in the Prometheus text format.
func (o *Operator) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(o.metrics.reg, promhttp.HandlerOpts{})
}

// Run starts the controllers and blocks until ctx is done.
func (o *Operator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory := dynamicinformer.NewDynamicSharedInformerFactory(o.dyn, 0)
	defer factory.Shutdown()
	// Slices first: the batcher must know the stored slices before it
	// sees any endpoint, or it would place endpoints twice.
	var cesInf cache.SharedIndexInformer
	if o.ces != nil {
		cesInf = o.informer(factory, k8s.CiliumEndpointSlices)
		factory.Start(ctx.Done())
		if err := o.waitSynced(ctx, "CiliumEndpointSlices", cesInf.HasSynced); err != nil {
			return err
		}
		if err := o.ces.restore(cesInf.GetStore().List()); err != nil {
			return err
		}
	}

	var syncs []cache.InformerSynced
	var cepInf, nodeInf, idInf cache.SharedIndexInformer
	if o.ces != nil || o.gc != nil {
		cepInf = o.informer(factory, k8s.CiliumEndpoints)
		syncs = append(syncs, cepInf.HasSynced)
	}
	if o.ces != nil {
		reg, err := cepInf.AddEventHandler(o.ces.endpointHandler())
		if err != nil {
			return fmt.Errorf("watching CiliumEndpoints: %w", err)
		}
		syncs = append(syncs, reg.HasSynced)
		if _, err := cesInf.AddEventHandler(o.ces.sliceHandler()); err != nil {
			return fmt.Errorf("watching CiliumEndpointSlices: %w", err)
		}
	}
	if o.ipam != nil {
		nodeInf = o.informer(factory, k8s.CiliumNodes)
		reg, err := nodeInf.AddEventHandler(o.ipam.handler())
		if err != nil {
			return fmt.Errorf("watching CiliumNodes: %w", err)
		}
		syncs = append(syncs, nodeInf.HasSynced, reg.HasSynced)
	}
	if o.gc != nil {
		idInf = o.informer(factory, k8s.CiliumIdentities)
		syncs = append(syncs, idInf.HasSynced)
	}
	factory.Start(ctx.Done())
	if err := o.waitSynced(ctx, "CiliumNodes, CiliumEndpoints, CiliumIdentities", syncs...); err != nil {
		return err
	}

	var wg sync.WaitGroup
	if o.ipam != nil {
		o.ipam.restore(nodeInf.GetStore().List())
		wg.Go(func() { o.ipam.run(ctx, nodeInf.GetStore()) })
	}
	if o.ces != nil {
		o.ces.prune(cepInf.GetStore())
		wg.Go(func() { o.ces.run(ctx) })
	}
	if o.gc != nil {
		wg.Go(func() { o.gc.run(ctx, cepInf.GetStore(), idInf.GetStore()) })
	}
	o.log.Info("operator running", "podCIDRs", o.ipam != nil, "endpointSlices", o.ces != nil, "identityGC", o.gc != nil)
	close(o.ready)
	<-ctx.Done()
	wg.Wait()
	return nil
}

// informer returns the shared informer of gvr; cached objects keep no
// managed fields (the operator never reads them).
func (o *Operator) informer(f dynamicinformer.DynamicSharedInformerFactory, gvr schema.GroupVersionResource) cache.SharedIndexInformer {
	inf := f.ForResource(gvr).Informer()
	_ = inf.SetTransform(func(obj any) (any, error) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			u.SetManagedFields(nil)
		}
		return obj, nil
	})
	return inf
}

// waitSynced waits for the informers, logging while the API server (or a
// CRD) is missing.
func (o *Operator) waitSynced(ctx context.Context, what string, synced ...cache.InformerSynced) error {
	done := make(chan bool, 1)
	go func() { done <- cache.WaitForCacheSync(ctx.Done(), synced...) }()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case ok := <-done:
			if !ok {
				return fmt.Errorf("listing %s: %w", what, errors.Join(ctx.Err(), errors.New("stopped before the caches synced")))
			}
			return nil
		case <-t.C:
			o.log.Warn("still waiting to list; are the API server reachable and the CRDs (deploy/crds) installed?", "resources", what)
		}
	}
}

// fromUnstructured converts an informer object (possibly a tombstone) to T.
func fromUnstructured[T any](obj any) (*T, error) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var t T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &t); err != nil {
		return nil, fmt.Errorf("decoding %s %q: %w", u.GetKind(), u.GetName(), err)
	}
	return &t, nil
}

// toUnstructured converts a typed object for the dynamic client.
func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// metrics are the operator's Prometheus metrics.
type metrics struct {
	reg *prometheus.Registry

	podCIDRsAllocated *prometheus.GaugeVec
	podCIDRsFree      *prometheus.GaugeVec
	podCIDRExhausted  *prometheus.CounterVec
	podCIDRConflicts  prometheus.Counter
	nodesPending      prometheus.Gauge
	podCIDRWrites     *prometheus.CounterVec

	cesSlices      prometheus.Gauge
	cesEndpoints   prometheus.Gauge
	cesPending     prometheus.Gauge
	cesInFlight    prometheus.Gauge
	cesWrites      *prometheus.CounterVec
	cesWriteErrors *prometheus.CounterVec
	cesSyncLatency prometheus.Histogram

	identityGCRuns    prometheus.Counter
	identitiesDeleted prometheus.Counter
	identities        *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		podCIDRsAllocated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lumen_operator_pod_cidrs_allocated", Help: "Pod CIDRs allocated to nodes from the cluster pools, by family.",
		}, []string{"family"}),
		podCIDRsFree: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lumen_operator_pod_cidrs_available", Help: "Pod CIDRs still free in the cluster pools, by family.",
		}, []string{"family"}),
		podCIDRExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_operator_pod_cidr_pool_exhausted_total", Help: "Allocations that found the pool of a family exhausted.",
		}, []string{"family"}),
		podCIDRConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lumen_operator_pod_cidr_conflicts_total", Help: "Pod CIDRs found on a node that another node already holds or that do not fit the pool.",
		}),
		nodesPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lumen_operator_nodes_waiting_for_pod_cidr", Help: "CiliumNodes still missing a pod CIDR.",
		}),
		podCIDRWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_operator_pod_cidr_writes_total", Help: "CiliumNode updates that set pod CIDRs, by outcome.",
		}, []string{"outcome"}),
		cesSlices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lumen_operator_ces_slices", Help: "CiliumEndpointSlices the operator maintains.",
		}),
		cesEndpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lumen_operator_ces_endpoints", Help: "CiliumEndpoints batched into slices.",
		}),
		cesPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lumen_operator_ces_slices_pending", Help: "Slices with changes not yet written.",
		}),
		cesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lumen_operator_ces_writes_in_flight", Help: "Slice writes taken for the current flush and not finished yet.",
		}),
		cesWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_operator_ces_writes_total", Help: "CiliumEndpointSlice writes, by operation (create, update, delete).",
		}, []string{"op"}),
		cesWriteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lumen_operator_ces_write_errors_total", Help: "Failed CiliumEndpointSlice writes (retried), by operation.",
		}, []string{"op"}),
		cesSyncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lumen_operator_ces_sync_latency_seconds",
			Help:    "Time from a slice's first unwritten endpoint change to the write that carries it.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30},
		}),
		identityGCRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lumen_operator_identity_gc_runs_total", Help: "Identity garbage collection passes.",
		}),
		identitiesDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lumen_operator_identities_deleted_total", Help: "CiliumIdentities deleted because no endpoint used them.",
		}),
		identities: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lumen_operator_identities", Help: "CiliumIdentities at the last garbage collection pass, by state (used, unused).",
		}, []string{"state"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.podCIDRsAllocated, m.podCIDRsFree, m.podCIDRExhausted, m.podCIDRConflicts, m.nodesPending, m.podCIDRWrites,
		m.cesSlices, m.cesEndpoints, m.cesPending, m.cesInFlight, m.cesWrites, m.cesWriteErrors, m.cesSyncLatency,
		m.identityGCRuns, m.identitiesDeleted, m.identities,
	)
	return m
}
