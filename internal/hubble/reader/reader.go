// Package reader drains the datapath's events ring buffer: it decodes each
// record and hands it to the parser's queue. The agent and `lumen bench
// flows` run this same loop.
package reader

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/lumen-net/lumen/internal/datapath"
)

// Options configure Run.
type Options struct {
	// Sink receives every decoded event; the event is reused after Sink
	// returns. Sink may wait for room (the observer's EnqueueWait): events
	// then wait in the ring buffer, the largest buffer there is, and the
	// datapath counts those the ring cannot take. Nil: events are only
	// counted.
	Sink func(*datapath.Event)
	// Count is called with each event's type (metrics); optional.
	Count func(typ uint8)
	Log   *slog.Logger
}

// Run reads until rd is closed (it then returns nil) or fails.
func Run(ctx context.Context, rd *ringbuf.Reader, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var rec ringbuf.Record
	var ev datapath.Event
	var bad uint64
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return err
		}
		if err := datapath.ParseEvent(rec.RawSample, &ev); err != nil {
			if bad++; bad <= 10 {
				o.Log.Debug("undecodable event", "err", err)
			}
			continue
		}
		if o.Count != nil {
			o.Count(ev.Type)
		}
		if o.Sink != nil {
			o.Sink(&ev)
		}
	}
}
