package policysync

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/lumen-net/lumen/internal/api"
)

// DefaultRealizeTimeout bounds how long Realize's wait lasts.
const DefaultRealizeTimeout = 30 * time.Second

// request asks the loop to realize an endpoint's policy or forget it.
type request struct {
	ep     api.Endpoint // forget: ContainerID only
	forget bool
	done   chan result // buffered; answered once when served
}

type result struct {
	pol api.EndpointPolicy
	err error
}

// record is an endpoint as last realized: the one the endpoint manager
// asked for, and its enforcement state. Written by the loop only.
type record struct {
	ep  api.Endpoint
	pol api.EndpointPolicy
}

// Realize queues the writing of ep's policy for ep.Identity (see
// endpoint.Policy). Requests are served in order once policies and
// identities are synced. wait returns the endpoint's enforcement state once
// its entries are written, or an error when the request was not served
// within ctx and Options.RealizeTimeout; then it never will be.
func (s *Syncer) Realize(ep api.Endpoint) (wait func(context.Context) (api.EndpointPolicy, error)) {
	req := s.enqueue(&request{ep: ep, done: make(chan result, 1)})
	return func(ctx context.Context) (api.EndpointPolicy, error) {
		t := time.NewTimer(s.opts.RealizeTimeout)
		defer t.Stop()
		var why error
		select {
		case r := <-req.done:
			return r.pol, r.err
		case <-ctx.Done():
			why = ctx.Err()
		case <-t.C:
			why = fmt.Errorf("not done within %s", s.opts.RealizeTimeout)
			if !s.isSynced() {
				why = fmt.Errorf("policies and identities not synchronised with the store within %s: try again", s.opts.RealizeTimeout)
			}
		}
		if s.abandon(req) {
			return api.EndpointPolicy{}, fmt.Errorf("policy of endpoint %d not realized: %w", ep.ID, why)
		}
		r := <-req.done // being served: the loop answers it
		return r.pol, r.err
	}
}

// Forget queues the removal of containerID's policy map entries.
func (s *Syncer) Forget(containerID string) {
	s.enqueue(&request{ep: api.Endpoint{ContainerID: containerID}, forget: true, done: make(chan result, 1)})
}

// Realized returns containerID's enforcement state as last written and the
// identity it is for.
func (s *Syncer) Realized(containerID string) (api.EndpointPolicy, uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[containerID]
	if !ok {
		return api.EndpointPolicy{}, 0, false
	}
	return r.pol, r.ep.Identity, true
}

// Changed signals that a Realized result may have changed.
func (s *Syncer) Changed() <-chan struct{} { return s.changed }

// Endpoints returns the endpoints whose policy is realized, sorted by ID.
func (s *Syncer) Endpoints() []api.Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.Endpoint, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r.ep)
	}
	slices.SortFunc(out, func(a, b api.Endpoint) int { return int(a.ID) - int(b.ID) })
	return out
}

func (s *Syncer) enqueue(req *request) *request {
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	select {
	case s.requests <- struct{}{}:
	default:
	}
	return req
}

// abandon takes req off the queue; false when the loop took it already.
func (s *Syncer) abandon(req *request) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	i := slices.Index(s.queue, req)
	if i < 0 {
		return false
	}
	s.queue = slices.Delete(s.queue, i, i+1)
	return true
}

// next takes the oldest request off the queue, nil if none.
func (s *Syncer) next() *request {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	req := s.queue[0]
	s.queue = s.queue[1:]
	return req
}

// serve answers the queued requests in order. Called by the loop only.
func (s *Syncer) serve(ctx context.Context) {
	for req := s.next(); req != nil; req = s.next() {
		if req.forget {
			req.done <- result{err: s.forget(req.ep.ContainerID)}
			continue
		}
		pol, err := s.realize(ctx, req.ep)
		req.done <- result{pol, err}
	}
}

// realize writes one endpoint's policy for its identity and records it.
func (s *Syncer) realize(ctx context.Context, ep api.Endpoint) (api.EndpointPolicy, error) {
	s.mu.Lock()
	eng := s.engine
	_, known := s.idents[ep.Identity]
	s.mu.Unlock()
	if eng == nil || !known {
		var err error
		if eng, err = s.rebuild(ctx); err != nil {
			return api.EndpointPolicy{}, err
		}
	}
	ports := s.namedPorts()
	pol := s.enforce(eng, ep, ports.own(ep.Namespace, ep.PodName), ports.peers)
	s.mu.Lock()
	for cid, r := range s.records {
		// The manager gave the number to ep: whoever had it is gone.
		if r.ep.ID == ep.ID && cid != ep.ContainerID {
			delete(s.records, cid)
		}
	}
	s.records[ep.ContainerID] = &record{ep: ep, pol: pol}
	s.mu.Unlock()
	s.signal()
	return pol, nil
}

// forget drops an endpoint's record and policy map entries.
func (s *Syncer) forget(containerID string) error {
	s.mu.Lock()
	r, ok := s.records[containerID]
	delete(s.records, containerID)
	delete(s.warned, containerID)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return s.pm.Delete(r.ep.ID)
}

// setPolicy records a recomputed enforcement state; false if the endpoint
// was forgotten meanwhile or nothing changed.
func (s *Syncer) setPolicy(ep api.Endpoint, pol api.EndpointPolicy) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[ep.ContainerID]
	if !ok || r.ep.ID != ep.ID || r.ep.Identity != ep.Identity || reflect.DeepEqual(r.pol, pol) {
		return false
	}
	r.pol = pol
	return true
}

func (s *Syncer) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// failQueued answers every queued request with err (the loop ends).
func (s *Syncer) failQueued(err error) {
	for req := s.next(); req != nil; req = s.next() {
		req.done <- result{err: err}
	}
}

var errStopped = errors.New("policy syncer stopped")
