package kvstore

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// EventType says what happened to a key.
type EventType int

const (
	// EventPut is a create or an update; the event's KV holds the new value.
	EventPut EventType = iota
	// EventDelete is a deletion; the event's KV holds only the key.
	EventDelete
)

func (t EventType) String() string {
	if t == EventDelete {
		return "delete"
	}
	return "put"
}

// Event is one change of one key.
type Event struct {
	Type EventType
	KV   KV
}

// WatchResponse is a batch of events up to Revision. A response with Err set
// is the last one on its channel (e.g. the start revision was compacted).
type WatchResponse struct {
	Events   []Event
	Revision int64
	Err      error
}

// Watch streams changes under prefix from fromRevision on (0: from now).
// The channel closes when ctx ends or after a response carrying Err.
func (c *Client) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse {
	out := make(chan WatchResponse)
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if fromRevision > 0 {
		opts = append(opts, clientv3.WithRev(fromRevision))
	}
	// RequireLeader cancels the watch when the member loses its leader
	// instead of leaving it silently stalled.
	wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...)
	go func() {
		defer close(out)
		for resp := range wch {
			r := WatchResponse{Revision: resp.Header.Revision}
			if err := resp.Err(); err != nil {
				r.Err = fmt.Errorf("watching %s on %s: %w", prefix, c.endpoint, err)
			}
			for _, ev := range resp.Events {
				e := Event{Type: EventPut, KV: toKV(ev.Kv.Key, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.ModRevision)}
				if ev.Type == clientv3.EventTypeDelete {
					e.Type = EventDelete
					e.KV.Value = nil
				}
				r.Events = append(r.Events, e)
			}
			if len(r.Events) == 0 && r.Err == nil {
				continue // progress notification
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
			if r.Err != nil {
				return
			}
		}
	}()
	return out
}

// Update is what ListAndWatch delivers: either a full listing (Resync) or a
// batch of events.
type Update struct {
	// Resync marks a full listing: KVs is everything under the prefix and
	// the consumer replaces its state with it.
	Resync bool
	KVs    []KV
	// Events follow the latest listing, in order.
	Events   []Event
	Revision int64
}

// resyncDelay spaces out listings after an interruption.
const resyncDelay = 500 * time.Millisecond

// ListAndWatch delivers a listing of prefix, then its changes. Whenever the
// watch cannot continue exactly (the connection dropped, history was
// compacted, the member lost its leader) it lists again and delivers a new
// Resync update, so a consumer that applies updates in order always converges
// to the store's content. The channel closes when ctx ends or the client is
// closed.
func (c *Client) ListAndWatch(ctx context.Context, prefix string) <-chan Update {
	out := make(chan Update)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.cli.Ctx(), cancel)
	go func() {
		defer close(out)
		defer stop()
		defer cancel()
		for ctx.Err() == nil {
			if err := c.listAndWatchOnce(ctx, prefix, out); err != nil && ctx.Err() == nil {
				slog.Warn("kvstore watch interrupted, resyncing", "prefix", prefix, "err", err)
				sleep(ctx, resyncDelay)
			}
		}
	}()
	return out
}

// listAndWatchOnce lists prefix and forwards its changes until the watch
// fails or the client's connection leaves the ready state. clientv3 would
// resume the watch by itself after a reconnect, but a restarted store may
// have lost or rewritten its history, so a reconnect means a new listing.
func (c *Client) listAndWatchOnce(ctx context.Context, prefix string, out chan<- Update) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Read the state before listing so a drop right after it is not missed.
	conn := c.cli.ActiveConnection()
	st := conn.GetState()
	go func() {
		for {
			was := st
			if !conn.WaitForStateChange(ctx, was) {
				return
			}
			st = conn.GetState()
			if was == connectivity.Ready {
				cancel(fmt.Errorf("connection to %s lost", c.endpoint))
				return
			}
		}
	}()

	kvs, rev, err := c.List(ctx, prefix)
	if err != nil {
		return err
	}
	select {
	case out <- Update{Resync: true, KVs: kvs, Revision: rev}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	wch := c.Watch(ctx, prefix, rev+1)
	for {
		select {
		case r, ok := <-wch:
			if !ok {
				return context.Cause(ctx)
			}
			if r.Err != nil {
				return r.Err
			}
			select {
			case out <- Update{Events: r.Events, Revision: r.Revision}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
