package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/lumen-net/lumen/internal/k8s"
)

// nodeIPAM gives every CiliumNode one pod CIDR per configured family
// (Cilium's cluster-pool IPAM). A node keeps its CIDRs for its lifetime:
// they are released only when the CiliumNode is deleted, so a stale view
// of a node can never hand its CIDR to another.
type nodeIPAM struct {
	op    *Operator
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[string]

	mu    sync.Mutex
	pools []*Pool                   // one per configured family
	held  map[string][]netip.Prefix // node -> CIDRs it holds in the pools
	// waiting holds nodes a pool could not serve; they are retried when a
	// CIDR is released. warned avoids repeating the event.
	waiting map[string]bool
	warned  map[string]bool
}

func newNodeIPAM(op *Operator, cfg Config) *nodeIPAM {
	n := &nodeIPAM{
		op: op, log: op.log.With("controller", "pod-cidr"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pod-cidr"}),
		held:    map[string][]netip.Prefix{},
		waiting: map[string]bool{},
		warned:  map[string]bool{},
	}
	if len(cfg.IPv4Pools) > 0 {
		n.pools = append(n.pools, NewPool(IPv4, cfg.IPv4Pools, cfg.IPv4MaskSize))
	}
	if len(cfg.IPv6Pools) > 0 {
		n.pools = append(n.pools, NewPool(IPv6, cfg.IPv6Pools, cfg.IPv6MaskSize))
	}
	return n
}

func (n *nodeIPAM) handler() cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			n.queue.Add(key)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue}
}

// restore records the CIDRs the existing nodes hold, before anything is
// allocated. A CIDR two nodes claim stays with the first (by name); the
// other is reported and left alone (changing a running node's pod CIDR
// would cut its pods off).
func (n *nodeIPAM) restore(objs []any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nodes := make([]*k8s.CiliumNode, 0, len(objs))
	for _, obj := range objs {
		node, err := fromUnstructured[k8s.CiliumNode](obj)
		if err != nil {
			n.log.Warn("skipping undecodable CiliumNode", "err", err)
			continue
		}
		nodes = append(nodes, node)
	}
	slices.SortFunc(nodes, func(a, b *k8s.CiliumNode) int { return strings.Compare(a.Name, b.Name) })
	for _, node := range nodes {
		n.adopt(node)
	}
	n.updateGauges()
	n.log.Info("pod CIDR allocations restored", "nodes", len(nodes), "held", len(n.held))
}

// adopt records the in-pool CIDRs node carries. Caller holds mu.
func (n *nodeIPAM) adopt(node *k8s.CiliumNode) {
	for _, s := range node.Spec.IPAM.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			n.log.Warn("CiliumNode has an invalid pod CIDR", "node", node.Name, "podCIDR", s)
			continue
		}
		pool := n.poolFor(p)
		if pool == nil {
			continue // a static CIDR outside the pools is the node's business
		}
		if slices.Contains(n.held[node.Name], p) {
			continue
		}
		// A CIDR not recorded yet (at start, or edited by hand: then the
		// node holds both until it goes away).
		inPool, err := pool.Occupy(p)
		if !inPool {
			continue
		}
		if err != nil {
			n.op.metrics.podCIDRConflicts.Inc()
			n.log.Error("pod CIDR conflict: leaving the node as it is", "node", node.Name, "podCIDR", p, "err", err)
			continue
		}
		n.held[node.Name] = append(n.held[node.Name], p)
	}
}

// heldOf returns the CIDR of family f node holds.
func (n *nodeIPAM) heldOf(node string, f Family) (netip.Prefix, bool) {
	for _, p := range n.held[node] {
		if familyOf(p) == f {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (n *nodeIPAM) poolFor(p netip.Prefix) *Pool {
	for _, pool := range n.pools {
		if pool.Contains(p) {
			return pool
		}
	}
	return nil
}

func (n *nodeIPAM) run(ctx context.Context, store cache.Store) {
	go func() {
		<-ctx.Done()
		n.queue.ShutDown()
	}()
	for {
		key, quit := n.queue.Get()
		if quit {
			return
		}
		err := n.sync(ctx, store, key)
		switch {
		case err == nil:
			n.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			n.log.Warn("pod CIDR allocation failed, retrying", "node", key, "err", err)
			n.queue.AddRateLimited(key)
		}
		n.queue.Done(key)
	}
}

// sync gives node key its missing pod CIDRs, or releases them when the
// node is gone.
func (n *nodeIPAM) sync(ctx context.Context, store cache.Store, key string) error {
	obj, exists, err := store.GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		n.release(key)
		return nil
	}
	node, err := fromUnstructured[k8s.CiliumNode](obj)
	if err != nil {
		n.log.Warn("skipping undecodable CiliumNode", "node", key, "err", err)
		return nil
	}
	n.mu.Lock()
	n.adopt(node)
	have := map[Family]bool{}
	for _, s := range node.Spec.IPAM.PodCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil {
			have[familyOf(p)] = true
		}
	}
	cidrs := slices.Clone(node.Spec.IPAM.PodCIDRs)
	var fresh []netip.Prefix
	var exhausted []error
	for _, pool := range n.pools {
		f := pool.Family()
		if have[f] {
			continue
		}
		if p, ok := n.heldOf(node.Name, f); ok {
			// Allocated earlier but not visible here yet (or removed
			// by hand): write the same CIDR again.
			cidrs = append(cidrs, p.String())
			continue
		}
		p, err := pool.Allocate()
		if err != nil {
			n.op.metrics.podCIDRExhausted.WithLabelValues(string(f)).Inc()
			exhausted = append(exhausted, err)
			continue
		}
		fresh = append(fresh, p)
		cidrs = append(cidrs, p.String())
	}
	if len(exhausted) > 0 {
		n.waiting[node.Name] = true
	} else {
		delete(n.waiting, node.Name)
		delete(n.warned, node.Name)
	}
	warn := len(exhausted) > 0 && !n.warned[node.Name]
	if warn {
		n.warned[node.Name] = true
	}
	n.updateGauges()
	n.mu.Unlock()

	if warn {
		err := errors.Join(exhausted...)
		n.log.Error("cannot allocate a pod CIDR: pool exhausted; the node waits until a CIDR is released", "node", node.Name, "err", err)
		n.event(ctx, node, "PodCIDRPoolExhausted", err.Error())
	}
	if len(cidrs) == len(node.Spec.IPAM.PodCIDRs) {
		return nil
	}
	err = n.write(ctx, node, cidrs)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		for _, p := range fresh {
			n.poolFor(p).Release(p)
		}
		n.updateGauges()
		n.op.metrics.podCIDRWrites.WithLabelValues("error").Inc()
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile: its delete event follows
		}
		return fmt.Errorf("writing pod CIDRs %v to CiliumNode %s: %w", cidrs, node.Name, err)
	}
	n.held[node.Name] = append(n.held[node.Name], fresh...)
	n.op.metrics.podCIDRWrites.WithLabelValues("ok").Inc()
	n.log.Info("pod CIDRs allocated", "node", node.Name, "podCIDRs", cidrs)
	return nil
}

// write sets spec.ipam.podCIDRs, only if the node is still the version
// that was read (a conflict is retried from a fresh view).
func (n *nodeIPAM) write(ctx context.Context, node *k8s.CiliumNode, cidrs []string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": node.ResourceVersion},
		"spec":     map[string]any{"ipam": map[string]any{"podCIDRs": cidrs}},
	})
	if err != nil {
		return err
	}
	_, err = n.op.dyn.Resource(k8s.CiliumNodes).Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "lumen-operator"})
	return err
}

// release frees the CIDRs of a deleted node and retries waiting nodes.
func (n *nodeIPAM) release(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.waiting, name)
	delete(n.warned, name)
	held := n.held[name]
	if held == nil {
		return
	}
	delete(n.held, name)
	for _, p := range held {
		if pool := n.poolFor(p); pool != nil {
			pool.Release(p)
		}
	}
	n.updateGauges()
	n.log.Info("pod CIDRs released", "node", name)
	for w := range n.waiting {
		n.queue.Add(w)
	}
}

func (n *nodeIPAM) updateGauges() {
	m := n.op.metrics
	for _, pool := range n.pools {
		m.podCIDRsAllocated.WithLabelValues(string(pool.Family())).Set(float64(pool.Allocated()))
		free := pool.Free()
		v := float64(free)
		if free > 1<<53 {
			v = math.Exp2(53)
		}
		m.podCIDRsFree.WithLabelValues(string(pool.Family())).Set(v)
	}
	m.nodesPending.Set(float64(len(n.waiting)))
}

// event reports a problem with a node as a Kubernetes event, which
// `kubectl describe ciliumnode` and `kubectl get events` show.
func (n *nodeIPAM) event(ctx context.Context, node *k8s.CiliumNode, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: node.Name + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: k8s.CiliumNodes.GroupVersion().String(), Kind: "CiliumNode",
			Name: node.Name, UID: node.UID, ResourceVersion: node.ResourceVersion,
		},
		Reason: reason, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "lumen-operator"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := n.op.core.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		n.log.Warn("cannot record event", "node", node.Name, "reason", reason, "err", err)
	}
}

func familyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}
