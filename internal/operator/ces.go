package operator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lumen-net/lumen/internal/k8s"
)

// cesController keeps CiliumEndpointSlices equal to the CiliumEndpoints:
// endpoint events change the batcher's desired slices at once; every sync
// interval the slices that changed are written, each once, within the
// write rate limit.
type cesController struct {
	op       *Operator
	log      *slog.Logger
	interval time.Duration
	limiter  *rate.Limiter

	mu sync.Mutex
	b  *cesBatcher
}

// cesWriters is how many slice writes run at once (the rate limiter still
// bounds their rate).
const cesWriters = 4

func newCESController(op *Operator, cfg Config) *cesController {
	return &cesController{
		op: op, log: op.log.With("controller", "ciliumendpointslice"),
		interval: cfg.CESSyncInterval,
		limiter:  rate.NewLimiter(rate.Limit(cfg.CESWriteQPS), cfg.CESWriteBurst),
		b:        newCESBatcher(cfg.CESSliceMode, cfg.CESMaxPerSlice),
	}
}

// restore loads the stored slices (before any endpoint event).
func (c *cesController) restore(objs []any) error {
	stored := make([]k8s.CiliumEndpointSlice, 0, len(objs))
	for _, obj := range objs {
		s, err := fromUnstructured[k8s.CiliumEndpointSlice](obj)
		if err != nil {
			// Written again from the endpoints under a new name; the
			// undecodable one is left for a person to look at.
			c.log.Warn("skipping undecodable CiliumEndpointSlice", "err", err)
			continue
		}
		stored = append(stored, *s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.restore(stored)
	n, eps := c.b.stats()
	c.log.Info("CiliumEndpointSlices restored", "slices", n, "endpoints", eps)
	return nil
}

// prune drops endpoints found in stored slices whose CiliumEndpoint no
// longer exists (deleted while the operator was away).
func (c *cesController) prune(ceps cache.Store) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pruned := 0
	for _, key := range c.b.endpoints() {
		if _, exists, _ := ceps.GetByKey(key.String()); !exists {
			c.b.remove(key)
			pruned++
		}
	}
	if pruned > 0 {
		c.log.Info("removing endpoints that no longer exist from their slices", "endpoints", pruned)
	}
	c.gauges()
}

func (c *cesController) endpointHandler() cache.ResourceEventHandler {
	upsert := func(obj any) {
		cep, err := fromUnstructured[k8s.CiliumEndpoint](obj)
		if err != nil {
			c.log.Warn("skipping undecodable CiliumEndpoint", "err", err)
			return
		}
		c.mu.Lock()
		if cep.Status.Identity == nil || cep.Status.Networking == nil {
			// Not usable by other nodes yet (as Cilium: no identity or
			// addresses, no slice entry).
			c.b.remove(cepKey{cep.Namespace, cep.Name})
		} else {
			c.b.upsert(cep.Namespace, coreEndpoint(cep))
		}
		c.gauges()
		c.mu.Unlock()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			ns, name, err := cache.SplitMetaNamespaceKey(key)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.b.remove(cepKey{ns, name})
			c.gauges()
			c.mu.Unlock()
		},
	}
}

// sliceHandler notices slices deleted by someone else.
func (c *cesController) sliceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.b.storedGone(key)
		c.mu.Unlock()
	}}
}

func (c *cesController) gauges() {
	n, eps := c.b.stats()
	c.op.metrics.cesSlices.Set(float64(n))
	c.op.metrics.cesEndpoints.Set(float64(eps))
	c.op.metrics.cesPending.Set(float64(c.b.pending()))
}

// run writes the changed slices every interval until ctx is done.
func (c *cesController) run(ctx context.Context) {
	t := time.NewTimer(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.flush(ctx)
		t.Reset(c.interval)
	}
}

// flush writes every slice that changed. Changes arriving meanwhile wait
// for the next flush, which is how churn gets coalesced.
func (c *cesController) flush(ctx context.Context) {
	c.mu.Lock()
	writes := c.b.takeWrites()
	c.op.metrics.cesInFlight.Set(float64(len(writes))) // before pending drops
	c.gauges()
	c.mu.Unlock()
	if len(writes) == 0 {
		return
	}
	work := make(chan sliceWrite)
	var wg sync.WaitGroup
	for range min(cesWriters, len(writes)) {
		wg.Go(func() {
			for w := range work {
				c.write(ctx, w)
				c.op.metrics.cesInFlight.Dec()
			}
		})
	}
	for _, w := range writes {
		work <- w
	}
	close(work)
	wg.Wait()
	c.mu.Lock()
	c.gauges()
	c.mu.Unlock()
}

func (c *cesController) write(ctx context.Context, w sliceWrite) {
	if err := c.limiter.Wait(ctx); err != nil {
		c.mu.Lock()
		c.b.failed(w, failRetry, "")
		c.mu.Unlock()
		return
	}
	client := c.op.dyn.Resource(k8s.CiliumEndpointSlices)
	var rv string
	var err error
	switch w.Op {
	case opDelete:
		opts := metav1.DeleteOptions{}
		if w.ResourceVersion != "" {
			opts.Preconditions = &metav1.Preconditions{ResourceVersion: &w.ResourceVersion}
		}
		err = client.Delete(ctx, w.Slice.Name, opts)
	default:
		obj := w.Slice
		obj.ResourceVersion = w.ResourceVersion
		u, cerr := toUnstructured(&obj)
		if cerr != nil {
			err = cerr
			break
		}
		if w.Op == opCreate {
			u, err = client.Create(ctx, u, metav1.CreateOptions{FieldManager: "lumen-operator"})
		} else {
			u, err = client.Update(ctx, u, metav1.UpdateOptions{FieldManager: "lumen-operator"})
		}
		if err == nil {
			rv = u.GetResourceVersion()
		}
	}
	if err == nil {
		c.op.metrics.cesWrites.WithLabelValues(w.Op).Inc()
		c.op.metrics.cesSyncLatency.Observe(time.Since(w.Since).Seconds())
		c.mu.Lock()
		c.b.written(w, rv)
		c.mu.Unlock()
		return
	}
	c.op.metrics.cesWriteErrors.WithLabelValues(w.Op).Inc()
	kind, current := failRetry, ""
	switch {
	case apierrors.IsNotFound(err):
		kind = failNotFound
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		// Another version is stored (written by someone else, or by
		// us in a write whose answer was lost): take it as the base
		// and write ours over it. Slices belong to the operator.
		if cur, gerr := client.Get(ctx, w.Slice.Name, metav1.GetOptions{}); gerr == nil {
			kind, current = failConflict, cur.GetResourceVersion()
		} else if apierrors.IsNotFound(gerr) {
			kind = failNotFound
		}
	}
	if ctx.Err() == nil {
		c.log.Warn("CiliumEndpointSlice write failed, retrying", "write", w.String(), "err", err)
	}
	c.mu.Lock()
	c.b.failed(w, kind, current)
	c.mu.Unlock()
}
