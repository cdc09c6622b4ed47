package state

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// Tables is the set of tables of one agent. Register every table, then Run
// once: each table's prefix is watched exactly once, however many readers
// it has.
type Tables struct {
	store kvstore.Store // nil: no store, every table is synced and empty
	log   *slog.Logger

	mu      sync.Mutex
	feeds   []feed
	started bool
}

// feed is what Run needs of a table, whatever its row type.
type feed interface {
	Name() string
	Prefix() string
	IsSynced() bool
	Synced() <-chan struct{}
	DecodeErrors() uint64
	Len() int
	Apply(kvstore.Update)
	markSynced()
}

// New returns an empty set of tables fed from store (nil: none).
func New(store kvstore.Store, log *slog.Logger) *Tables {
	if log == nil {
		log = slog.Default()
	}
	return &Tables{store: store, log: log.With("subsys", "state")}
}

// Register adds a table to ts. It panics when the spec is incomplete, when
// its prefix overlaps a registered table's (each store entry feeds one
// table, so each prefix is watched once) or after Run: all are
// programming errors.
func Register[T any](ts *Tables, spec Spec[T]) *Table[T] {
	if spec.Name == "" || spec.Prefix == "" || spec.Decode == nil {
		panic(fmt.Sprintf("state: table spec needs Name, Prefix and Decode: %+v", spec))
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.started {
		panic("state: Register of " + spec.Name + " after Run")
	}
	for _, f := range ts.feeds {
		if strings.HasPrefix(f.Prefix(), spec.Prefix) || strings.HasPrefix(spec.Prefix, f.Prefix()) {
			panic(fmt.Sprintf("state: table %s (%s) overlaps table %s (%s)", spec.Name, spec.Prefix, f.Name(), f.Prefix()))
		}
	}
	t := newTable(spec, ts.log)
	ts.feeds = append(ts.feeds, t)
	return t
}

// Run feeds every registered table from the store until ctx ends: one
// ListAndWatch per table. Without a store every table is synced at once.
func (ts *Tables) Run(ctx context.Context) {
	ts.mu.Lock()
	if ts.started {
		ts.mu.Unlock()
		panic("state: Tables.Run called twice")
	}
	ts.started = true
	feeds := slices.Clone(ts.feeds)
	ts.mu.Unlock()
	if ts.store == nil {
		for _, f := range feeds {
			f.Apply(kvstore.Update{Resync: true})
		}
		<-ctx.Done()
		return
	}
	var wg sync.WaitGroup
	for _, f := range feeds {
		wg.Go(func() {
			for u := range ts.store.ListAndWatch(ctx, f.Prefix()) {
				f.Apply(u)
			}
		})
	}
	wg.Wait()
}

// WaitSynced blocks until every registered table has synced or ctx ends.
func (ts *Tables) WaitSynced(ctx context.Context) error {
	ts.mu.Lock()
	feeds := slices.Clone(ts.feeds)
	ts.mu.Unlock()
	for _, f := range feeds {
		select {
		case <-f.Synced():
		case <-ctx.Done():
			return fmt.Errorf("waiting for table %s to sync: %w", f.Name(), ctx.Err())
		}
	}
	return nil
}

// Pending names the tables that have not synced yet.
func (ts *Tables) Pending() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []string
	for _, f := range ts.feeds {
		if !f.IsSynced() {
			out = append(out, f.Name())
		}
	}
	return out
}

// Collector exposes lumen_state_rows and lumen_state_decode_errors_total
// per table.
func (ts *Tables) Collector() prometheus.Collector { return (*collector)(ts) }

var (
	rowsDesc   = prometheus.NewDesc("lumen_state_rows", "Rows of each state table.", []string{"table"}, nil)
	decodeDesc = prometheus.NewDesc("lumen_state_decode_errors_total", "Store entries a state table could not decode (the previous row stayed).", []string{"table"}, nil)
)

type collector Tables

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- rowsDesc; ch <- decodeDesc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ts := (*Tables)(c)
	ts.mu.Lock()
	feeds := slices.Clone(ts.feeds)
	ts.mu.Unlock()
	for _, f := range feeds {
		ch <- prometheus.MustNewConstMetric(rowsDesc, prometheus.GaugeValue, float64(f.Len()), f.Name())
		ch <- prometheus.MustNewConstMetric(decodeDesc, prometheus.CounterValue, float64(f.DecodeErrors()), f.Name())
	}
}
