package policysync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/api"
)

// publishWarnings hands each policy's warnings on this node to
// Options.PolicyStatus when they changed since the last reconcile.
func (s *Syncer) publishWarnings(ctx context.Context, byEndpoint map[string][]string) error {
	if s.opts.PolicyStatus == nil {
		return nil
	}
	s.mu.Lock()
	names := map[string]string{} // "CiliumNetworkPolicy ns/name" -> store key
	live := map[string]bool{}
	for key, p := range s.policies {
		names[p.String()] = key
		live[key] = true
	}
	prev := s.published
	s.mu.Unlock()
	next := policyWarnings(names, byEndpoint)
	var errs []error
	done := map[string][]string{}
	for _, key := range slices.Sorted(maps.Keys(next)) {
		if slices.Equal(prev[key], next[key]) {
			done[key] = next[key]
			continue
		}
		if err := s.opts.PolicyStatus(ctx, key, next[key]); err != nil {
			errs = append(errs, fmt.Errorf("policy status of %s: %w", key, err))
			continue // retried on the next reconcile
		}
		done[key] = next[key]
	}
	for key := range prev {
		if _, ok := next[key]; ok {
			continue
		}
		if !live[key] {
			continue // the policy is gone: no status to clear
		}
		if err := s.opts.PolicyStatus(ctx, key, nil); err != nil {
			errs = append(errs, fmt.Errorf("policy status of %s: %w", key, err))
			done[key] = prev[key]
		}
	}
	s.mu.Lock()
	s.published = done
	s.mu.Unlock()
	return errors.Join(errs...)
}

// policyWarnings groups endpoint warnings by policy (store key): each
// warning without the policy's name, with the endpoints it concerns.
func policyWarnings(names map[string]string, byEndpoint map[string][]string) map[string][]string {
	type item struct{ key, text string }
	eps := map[item][]string{}
	for ep, ws := range byEndpoint {
		for _, w := range ws {
			for name, key := range names {
				if rest, ok := strings.CutPrefix(w, name+" "); ok {
					it := item{key, rest}
					eps[it] = append(eps[it], ep)
				}
			}
		}
	}
	out := map[string][]string{}
	for it, list := range eps {
		slices.Sort(list)
		out[it.key] = append(out[it.key], fmt.Sprintf("%s (endpoints %s)", it.text, strings.Join(list, ", ")))
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

// logWarnings logs an endpoint's policy warnings when they change (every
// reconcile recomputes them; the log says it once).
func (s *Syncer) logWarnings(ep api.Endpoint, warnings []string) {
	s.mu.Lock()
	prev, seen := s.warned[ep.ContainerID]
	s.warned[ep.ContainerID] = warnings
	s.mu.Unlock()
	if seen && slices.Equal(prev, warnings) {
		return
	}
	for _, w := range warnings {
		s.log.Warn("policy warning", "endpoint", ep.ID, "pod", ep.Namespace+"/"+ep.PodName, "warning", w)
	}
}
