package operator

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/lumen-net/lumen/internal/k8s"
)

// identityGC deletes CiliumIdentities no CiliumEndpoint has referenced for
// the heartbeat timeout. An identity must also be at least that old, so an
// identity an agent just allocated survives until its endpoint is
// published. The operator's own observation starts the clock: after a
// restart every unused identity gets the full timeout again.
type identityGC struct {
	op                *Operator
	log               *slog.Logger
	interval, timeout time.Duration
	now               func() time.Time
	unusedSince       map[string]time.Time // identity name -> first pass that found it unused
}

func newIdentityGC(op *Operator, interval, timeout time.Duration) *identityGC {
	return &identityGC{
		op: op, log: op.log.With("controller", "identity-gc"),
		interval: interval, timeout: timeout, now: time.Now,
		unusedSince: map[string]time.Time{},
	}
}

func (g *identityGC) run(ctx context.Context, ceps, identities cache.Store) {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		g.pass(ctx, ceps, identities)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gcCandidate is an identity as the collector sees it.
type gcCandidate struct {
	name            string
	uid             types.UID
	resourceVersion string
	created         time.Time
}

// pass deletes what is due and returns how many were deleted.
func (g *identityGC) pass(ctx context.Context, ceps, identities cache.Store) int {
	used := map[string]bool{}
	for _, obj := range ceps.List() {
		cep, err := fromUnstructured[k8s.CiliumEndpoint](obj)
		if err != nil || cep.Status.Identity == nil {
			continue
		}
		used[strconv.FormatInt(cep.Status.Identity.ID, 10)] = true
	}
	var all []gcCandidate
	for _, obj := range identities.List() {
		id, err := fromUnstructured[k8s.CiliumIdentity](obj)
		if err != nil {
			continue
		}
		all = append(all, gcCandidate{id.Name, id.UID, id.ResourceVersion, id.CreationTimestamp.Time})
	}
	due := g.due(all, used)
	g.op.metrics.identityGCRuns.Inc()
	g.op.metrics.identities.WithLabelValues("used").Set(float64(len(all) - len(g.unusedSince)))
	g.op.metrics.identities.WithLabelValues("unused").Set(float64(len(g.unusedSince)))
	deleted := 0
	for _, c := range due {
		// The preconditions make sure the identity deleted is the one
		// judged unused, not one recreated under the same id.
		err := g.op.dyn.Resource(k8s.CiliumIdentities).Delete(ctx, c.name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &c.uid, ResourceVersion: &c.resourceVersion},
		})
		switch {
		case err == nil:
			deleted++
			delete(g.unusedSince, c.name)
			g.op.metrics.identitiesDeleted.Inc()
			g.log.Info("deleted unused identity", "identity", c.name)
		case apierrors.IsNotFound(err):
			delete(g.unusedSince, c.name)
		case apierrors.IsConflict(err):
			delete(g.unusedSince, c.name) // changed: judge it again from scratch
		default:
			if ctx.Err() == nil {
				g.log.Warn("deleting unused identity failed, retrying next pass", "identity", c.name, "err", err)
			}
		}
	}
	return deleted
}

// due updates the unused bookkeeping and returns the identities to delete.
func (g *identityGC) due(all []gcCandidate, used map[string]bool) []gcCandidate {
	now := g.now()
	present := make(map[string]bool, len(all))
	var due []gcCandidate
	for _, c := range all {
		present[c.name] = true
		if used[c.name] {
			delete(g.unusedSince, c.name)
			continue
		}
		since, ok := g.unusedSince[c.name]
		if !ok {
			g.unusedSince[c.name] = now
			since = now
		}
		if now.Sub(since) >= g.timeout && now.Sub(c.created) >= g.timeout {
			due = append(due, c)
		}
	}
	for name := range g.unusedSince {
		if !present[name] {
			delete(g.unusedSince, name)
		}
	}
	return due
}
