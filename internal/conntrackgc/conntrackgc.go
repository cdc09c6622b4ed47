// Package conntrackgc expires idle connection tracking entries of the
// datapath.
package conntrackgc

import (
	"context"
	"log/slog"
	"time"

	"github.com/lumen-net/lumen/internal/datapath"
)

// interval is how often the table is swept.
const interval = 30 * time.Second

// Collector sweeps the conntrack table on a ticker.
type Collector struct {
	dp  *datapath.Datapath
	log *slog.Logger
}

// New returns a collector of dp's conntrack table.
func New(dp *datapath.Datapath, log *slog.Logger) *Collector {
	return &Collector{dp: dp, log: log}
}

// Run sweeps every interval until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := c.dp.GCConntrack(datapath.DefaultCTLifetimes); err != nil {
			c.log.Warn("conntrack GC", "err", err)
		} else if n > 0 {
			c.log.Debug("conntrack GC", "expired", n)
		}
	}
}
