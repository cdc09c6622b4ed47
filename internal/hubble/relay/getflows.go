package relay

import (
	"container/heap"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxPending bounds the responses held for sorting; beyond it the oldest
// is sent even if a node has not caught up.
const maxPending = 100_000

// item is one response from one agent, or the end of its stream.
type item struct {
	src     int
	resp    *observerpb.GetFlowsResponse
	end     bool
	err     error // the stream failed (end is set too)
	arrived time.Time
}

func respNanos(r *observerpb.GetFlowsResponse) int64 {
	t := r.GetTime()
	return t.GetSeconds()*1e9 + int64(t.GetNanos())
}

// GetFlows fans the request out to every agent and merges the streams.
func (r *Relay) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	if err := validate(req); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	agents := r.agents()
	in := make(chan item, 256)
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pump(ctx, i, a, req, in)
		}()
	}
	go func() { wg.Wait(); close(in) }()

	names := make([]string, len(agents))
	for i, a := range agents {
		names[i] = a.displayName()
	}
	m := &merger{
		send: stream.Send, follow: req.GetFollow(), window: r.opts.SortWindow,
		ended: make([]bool, len(agents)), queued: make([]int, len(agents)), names: names,
	}
	// With "last N" and no follow, every agent sends its last N: keep the
	// last N of the merged stream.
	if n := req.GetNumber(); n > 0 && !req.GetFirst() && !req.GetFollow() {
		m.lastN = n
	}
	if n := req.GetNumber(); n > 0 && req.GetFirst() {
		m.firstN = n
	}
	err := m.run(ctx, in)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if stream.Context().Err() != nil {
			return status.FromContextError(stream.Context().Err()).Err()
		}
		return nil // we stopped early (first N)
	}
	return err
}

// pump forwards one agent's stream into in.
func pump(ctx context.Context, src int, a *agent, req *observerpb.GetFlowsRequest, in chan<- item) {
	put := func(it item) bool {
		it.src, it.arrived = src, time.Now()
		select {
		case in <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	st, err := a.client.GetFlows(ctx, req)
	if err != nil {
		put(item{end: true, err: err})
		return
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			put(item{end: true})
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				put(item{end: true, err: err})
			}
			return
		}
		if resp.NodeName == "" {
			resp.NodeName = a.displayName()
		}
		if !put(item{resp: resp}) {
			return
		}
	}
}

// merger sends responses in time order. Each agent's stream is in time
// order, so a response can go once every live stream has something queued
// (nothing older can come). When following, a quiet node must not hold the
// others back: a response waits at most window.
type merger struct {
	send          func(*observerpb.GetFlowsResponse) error
	follow        bool
	window        time.Duration
	lastN, firstN uint64
	names         []string

	pending pq
	queued  []int  // queued responses per source
	ended   []bool // sources whose stream ended
	sent    uint64
	tail    []*observerpb.GetFlowsResponse // last N, when lastN > 0
}

func (m *merger) run(ctx context.Context, in <-chan item) error {
	var timer *time.Timer
	var timerC <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Send what is safe to send.
		for m.pending.Len() > 0 && (m.allHeard() || m.pending.Len() > maxPending) {
			if err := m.emit(); err != nil {
				return err
			}
		}
		if in == nil && m.pending.Len() == 0 {
			return m.flushTail()
		}
		if m.follow && m.pending.Len() > 0 {
			wait := time.Until(m.pending[0].arrived.Add(m.window))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		} else {
			timerC = nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case it, ok := <-in:
			if !ok {
				in = nil
				for i := range m.ended {
					m.ended[i] = true
				}
				continue
			}
			if err := m.accept(it); err != nil {
				return err
			}
		case <-timerC:
			if m.pending.Len() > 0 && time.Since(m.pending[0].arrived) >= m.window {
				if err := m.emit(); err != nil {
					return err
				}
			}
		}
	}
}

func (m *merger) accept(it item) error {
	if it.end {
		m.ended[it.src] = true
		if it.err == nil {
			return nil
		}
		if c := status.Code(it.err); c == codes.InvalidArgument || c == codes.FailedPrecondition {
			return it.err
		}
		// The node is unreachable: tell the client, go on with the others.
		return m.send(&observerpb.GetFlowsResponse{
			Time: timestamppb.Now(),
			ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{
				StateChange: relaypb.NodeState_NODE_UNAVAILABLE, NodeNames: []string{m.names[it.src]}, Message: status.Convert(it.err).Message(),
			}},
		})
	}
	if it.resp.GetNodeStatus() != nil {
		return m.send(it.resp)
	}
	heap.Push(&m.pending, it)
	m.queued[it.src]++
	return nil
}

// allHeard reports whether every live source has a queued response.
func (m *merger) allHeard() bool {
	for i, q := range m.queued {
		if q == 0 && !m.ended[i] {
			return false
		}
	}
	return true
}

func (m *merger) emit() error {
	it := heap.Pop(&m.pending).(item)
	m.queued[it.src]--
	if m.lastN > 0 && it.resp.GetFlow() != nil {
		m.tail = append(m.tail, it.resp)
		if uint64(len(m.tail)) > m.lastN {
			m.tail = m.tail[1:]
		}
		return nil
	}
	if err := m.send(it.resp); err != nil {
		return err
	}
	if it.resp.GetFlow() != nil {
		m.sent++
		if m.firstN > 0 && m.sent >= m.firstN {
			return context.Canceled // done: GetFlows ends the stream normally
		}
	}
	return nil
}

func (m *merger) flushTail() error {
	for _, r := range m.tail {
		if err := m.send(r); err != nil {
			return err
		}
	}
	m.tail = nil
	return nil
}

// pq orders items by response time, then arrival.
type pq []item

func (q pq) Len() int { return len(q) }
func (q pq) Less(i, j int) bool {
	ti, tj := respNanos(q[i].resp), respNanos(q[j].resp)
	if ti != tj {
		return ti < tj
	}
	return q[i].arrived.Before(q[j].arrived)
}
func (q pq) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pq) Push(x any)   { *q = append(*q, x.(item)) }
func (q *pq) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
