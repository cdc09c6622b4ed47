package observer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/hubble/fieldmask"
	"github.com/lumen-net/lumen/internal/hubble/filters"
	"github.com/lumen-net/lumen/internal/hubble/metrics"
)

// Query is a validated GetFlowsRequest.
type Query struct {
	Filters       *filters.Filters
	Mask          *fieldmask.Mask
	Number        uint64
	First, Follow bool
	Since, Until  int64 // unix ns; 0: unbounded
}

// NewQuery validates a request. Errors are gRPC InvalidArgument statuses
// whose message starts with the offending field.
func NewQuery(req *observerpb.GetFlowsRequest) (*Query, error) {
	q := &Query{Number: req.GetNumber(), First: req.GetFirst(), Follow: req.GetFollow()}
	var err error
	if q.Filters, err = filters.New(req.GetWhitelist(), req.GetBlacklist()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if q.Mask, err = fieldmask.New(req.GetFieldMask()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "field_mask: %v", err)
	}
	if q.First && q.Follow {
		return nil, status.Error(codes.InvalidArgument, "first: cannot be combined with follow")
	}
	if q.Since, err = nanos("since", req.GetSince()); err != nil {
		return nil, err
	}
	if q.Until, err = nanos("until", req.GetUntil()); err != nil {
		return nil, err
	}
	if q.Since != 0 && q.Until != 0 && q.Since > q.Until {
		return nil, status.Errorf(codes.InvalidArgument, "since: %s is after until %s",
			req.GetSince().AsTime().Format("2006-01-02T15:04:05.999999999Z07:00"), req.GetUntil().AsTime().Format("2006-01-02T15:04:05.999999999Z07:00"))
	}
	return q, nil
}

func nanos(field string, ts *timestamppb.Timestamp) (int64, error) {
	if ts == nil {
		return 0, nil
	}
	if err := ts.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	return ts.GetSeconds()*1e9 + int64(ts.GetNanos()), nil
}

func flowNanos(f *flowpb.Flow) int64 {
	t := f.GetTime()
	return t.GetSeconds()*1e9 + int64(t.GetNanos())
}

// inWindow reports where a flow's time lies: -1 before since, 1 after
// until, 0 inside.
func (q *Query) inWindow(t int64) int {
	switch {
	case q.Since != 0 && t < q.Since:
		return -1
	case q.Until != 0 && t > q.Until:
		return 1
	}
	return 0
}

// GetFlows implements observer.Observer.
func (o *Observer) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	q, err := NewQuery(req)
	if err != nil {
		return err
	}
	err = o.Query(stream.Context(), q, stream.Send)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return err
}

// Query streams the entries a query selects to send, which may block: only
// this query waits for it.
func (o *Observer) Query(ctx context.Context, q *Query, send func(*observerpb.GetFlowsResponse) error) error {
	out := func(e Entry) error {
		resp := &observerpb.GetFlowsResponse{NodeName: o.opts.NodeName}
		if e.Lost != nil {
			resp.ResponseTypes = &observerpb.GetFlowsResponse_LostEvents{LostEvents: e.Lost}
			resp.Time = e.Lost.GetLast()
		} else {
			resp.ResponseTypes = &observerpb.GetFlowsResponse_Flow{Flow: q.Mask.Apply(e.Flow)}
			resp.Time = e.Flow.GetTime()
		}
		return send(resp)
	}
	lapped := func(from, to uint64) error {
		n := to - from
		o.lapped.Add(n)
		o.opts.Metrics.OnLost(metrics.LostHubbleRing, n)
		now := timestamppb.Now()
		return out(Entry{Lost: &flowpb.LostEvent{Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: n, First: now, Last: now}})
	}

	oldest, next := o.ring.Bounds()
	history := !q.Follow || q.Number > 0 || q.Since != 0
	switch {
	case !history:
	case q.Number > 0 && !q.First:
		// The last Number matching flows: walk back, then send in order.
		var picked []Entry
		for seq := next; seq > oldest && uint64(len(picked)) < q.Number; {
			seq--
			e, ok, _ := o.ring.Read(seq)
			if !ok {
				break // overwritten while we walked: older ones are gone too
			}
			if e.Flow == nil {
				continue
			}
			w := q.inWindow(flowNanos(e.Flow))
			if w < 0 {
				break
			}
			if w == 0 && q.Filters.Match(e.Flow) {
				picked = append(picked, e)
			}
		}
		slices.Reverse(picked)
		for _, e := range picked {
			if err := out(e); err != nil {
				return err
			}
		}
	default:
		// Everything (or the first Number) from the oldest entry on.
		var sent uint64
		for seq := oldest; seq < next; seq++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e, ok, lap := o.ring.Read(seq)
			if !ok {
				if lap == 0 {
					break
				}
				if err := lapped(seq, lap); err != nil {
					return err
				}
				seq = lap - 1
				continue
			}
			if e.Lost != nil {
				if err := out(e); err != nil {
					return err
				}
				continue
			}
			w := q.inWindow(flowNanos(e.Flow))
			if w > 0 && !q.Follow {
				return nil
			}
			if w != 0 || !q.Filters.Match(e.Flow) {
				continue
			}
			if err := out(e); err != nil {
				return err
			}
			if sent++; q.First && q.Number > 0 && sent >= q.Number {
				return nil
			}
		}
	}
	if !q.Follow {
		return nil
	}
	for seq := next; ; {
		e, ok, lap := o.ring.Read(seq)
		if !ok {
			if lap > 0 {
				if err := lapped(seq, lap); err != nil {
					return err
				}
				seq = lap
				continue
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-o.ring.Wait(seq):
			}
			continue
		}
		seq++
		if e.Lost == nil {
			w := q.inWindow(flowNanos(e.Flow))
			if w > 0 {
				return nil
			}
			if w < 0 || !q.Filters.Match(e.Flow) {
				continue
			}
		}
		if err := out(e); err != nil {
			return err
		}
	}
}

// String describes a query for logs.
func (q *Query) String() string {
	return fmt.Sprintf("number=%d first=%v follow=%v since=%d until=%d filtered=%v", q.Number, q.First, q.Follow, q.Since, q.Until, !q.Filters.Empty())
}
