// Package reconcile runs the agent's reconcilers: each makes kernel objects
// (maps, routes, neighbours, BGP paths) equal to the desired state it reads
// from state tables. A Loop waits until its inputs have synced (so that a
// restarted agent does not flush what it inherited), reconciles on every
// change and kick (coalesced), retries failures with exponential back-off,
// prunes once after a restart, and reports health and metrics.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
)

// Input is something a reconciler reads: a state table qualifies.
type Input interface {
	// Synced is closed once the input holds its first full state.
	Synced() <-chan struct{}
	// Changed returns a new coalescing change signal.
	Changed() <-chan struct{}
}

// Config describes one reconciler.
type Config struct {
	// Name is the reconciler's name in health, logs and metrics.
	Name string
	// Inputs are waited for before the first reconcile; their changes
	// trigger reconciles.
	Inputs []Input
	// Triggers are more change signals (another subsystem's changes).
	Triggers []<-chan struct{}
	// Reconcile makes the kernel objects equal to the desired state. It
	// must be idempotent: after an error it runs again, whole.
	Reconcile func(ctx context.Context) error
	// Prune, optional, removes kernel objects a previous agent left that
	// the desired state lacks. It runs once, after the first successful
	// Reconcile (so nothing desired is ever missing meanwhile), and is
	// retried with back-off until it succeeds.
	Prune func(ctx context.Context) error
	// MinBackoff and MaxBackoff bound the delay between retries
	// (defaults 100ms and 30s); it doubles on each consecutive failure.
	MinBackoff, MaxBackoff time.Duration
	// Metrics records lumen_reconcile_* for this reconciler (default:
	// DefaultMetrics, which the agent registers).
	Metrics *Metrics
	Log     *slog.Logger
}

// Loop runs one reconciler.
type Loop struct {
	cfg     Config
	kick    chan struct{}
	changed []<-chan struct{}
	done    chan struct{} // closed after the first successful reconcile and prune
	// after makes back-off timers; tests replace it to observe delays.
	after func(time.Duration) <-chan time.Time

	mu       sync.Mutex
	waiting  bool // inputs not synced yet
	lastErr  error
	failures int
	pruned   bool
	started  bool
}

// New returns a loop for cfg; Run starts it. It panics without Name or
// Reconcile (a programming error).
func New(cfg Config) *Loop {
	if cfg.Name == "" || cfg.Reconcile == nil {
		panic("reconcile: Config needs Name and Reconcile")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Log = cfg.Log.With("reconciler", cfg.Name)
	if cfg.Metrics == nil {
		cfg.Metrics = DefaultMetrics
	}
	l := &Loop{cfg: cfg, kick: make(chan struct{}, 1), done: make(chan struct{}), after: time.After, waiting: true}
	// Subscribe now, so that no change between New and Run is lost.
	for _, in := range cfg.Inputs {
		l.changed = append(l.changed, in.Changed())
	}
	l.changed = append(l.changed, cfg.Triggers...)
	return l
}

// Kick asks for a reconcile (coalesced with pending ones).
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Done is closed after the first successful reconcile (and prune).
func (l *Loop) Done() <-chan struct{} { return l.done }

// Err is the error of the last pass (nil: it succeeded, or none ran yet).
func (l *Loop) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// Status is the reconciler's health.
func (l *Loop) Status() api.SubsystemStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := api.SubsystemStatus{Name: l.cfg.Name, State: api.StateOK}
	switch {
	case l.lastErr != nil:
		st.State = api.StateDegraded
		st.Message = fmt.Sprintf("%d consecutive failures, retrying: %v", l.failures, l.lastErr)
	case l.waiting:
		st.State = api.StateDegraded
		st.Message = "waiting for its inputs to sync"
	}
	return st
}

// Run reconciles until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		panic("reconcile: Loop.Run of " + l.cfg.Name + " called twice")
	}
	l.started = true
	l.mu.Unlock()
	m := l.cfg.Metrics
	m.pending.WithLabelValues(l.cfg.Name).Set(1)
	for _, in := range l.cfg.Inputs {
		select {
		case <-in.Synced():
		case <-ctx.Done():
			return
		}
	}
	l.mu.Lock()
	l.waiting = false
	l.mu.Unlock()

	// Waiting selects over every change signal; before a pass, every
	// signal already raised is drained, since the pass covers it.
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	for _, ch := range append(l.changed, l.kick) {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	poll := append(slices.Clone(cases), reflect.SelectCase{Dir: reflect.SelectDefault})
	drain := func() {
		for {
			// Stop at nothing raised, ctx's end, or a closed signal
			// (which the wait below reports).
			if i, _, ok := reflect.Select(poll); i == len(poll)-1 || i == 0 || !ok {
				return
			}
		}
	}
	for {
		drain()
		m.pending.WithLabelValues(l.cfg.Name).Set(0)
		if err := l.pass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.pending.WithLabelValues(l.cfg.Name).Set(1)
			select {
			case <-l.after(l.backoff()):
			case <-ctx.Done():
				return
			}
			continue
		}
		if i, _, ok := reflect.Select(cases); i == 0 || !ok {
			// ctx ended, or an input closed its signal: nothing more
			// will come from it, stop rather than spin.
			if i != 0 {
				l.cfg.Log.Error("a change signal closed: reconciler stops")
			}
			return
		}
		m.pending.WithLabelValues(l.cfg.Name).Set(1)
	}
}

// pass runs Reconcile, and Prune once after the first success.
func (l *Loop) pass(ctx context.Context) error {
	m := l.cfg.Metrics
	start := time.Now()
	err := l.cfg.Reconcile(ctx)
	m.duration.WithLabelValues(l.cfg.Name).Observe(time.Since(start).Seconds())
	l.mu.Lock()
	prune := err == nil && !l.pruned && l.cfg.Prune != nil
	l.mu.Unlock()
	if prune {
		if perr := l.cfg.Prune(ctx); perr != nil {
			err = fmt.Errorf("pruning after restart: %w", perr)
		} else {
			l.mu.Lock()
			l.pruned = true
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err
		}
		m.errors.WithLabelValues(l.cfg.Name).Inc()
		l.failures++
		if l.lastErr == nil || l.lastErr.Error() != err.Error() {
			l.cfg.Log.Warn("reconcile failed, retrying", "failures", l.failures, "err", err)
		}
		l.lastErr = err
		return err
	}
	if l.lastErr != nil {
		l.cfg.Log.Info("reconcile succeeded again", "after", l.failures)
	}
	l.lastErr, l.failures = nil, 0
	select {
	case <-l.done:
	default:
		if l.cfg.Prune == nil || l.pruned {
			close(l.done)
		}
	}
	return nil
}

// backoff is the delay before the next retry: MinBackoff doubled per
// consecutive failure, at most MaxBackoff.
func (l *Loop) backoff() time.Duration {
	l.mu.Lock()
	n := l.failures
	l.mu.Unlock()
	d := l.cfg.MinBackoff
	for i := 1; i < n && d < l.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, l.cfg.MaxBackoff)
}
