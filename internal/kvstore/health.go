package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Monitor tells whether the store answers: it pings it periodically, so
// that an agent reports a store that went away (dead, paused, partitioned)
// even when nothing else asks it anything.
type Monitor struct {
	c        *Client
	interval time.Duration
	timeout  time.Duration

	mu      sync.Mutex
	checked bool
	err     error
	since   time.Time // of the current state
	changed chan struct{}
}

// Monitor defaults: a ping every 2 s, unanswered after 3 s.
const (
	monitorInterval = 2 * time.Second
	monitorTimeout  = 3 * time.Second
)

// NewMonitor returns a monitor of c; Run starts it.
func NewMonitor(c *Client) *Monitor {
	return &Monitor{c: c, interval: monitorInterval, timeout: monitorTimeout, changed: make(chan struct{}, 1)}
}

// Run pings the store until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Monitor) check(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, m.timeout)
	err := m.c.Ping(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		err = &UnreachableError{Endpoint: m.c.Endpoint(), Err: fmt.Errorf("no answer within %s", m.timeout)}
	}
	m.mu.Lock()
	flipped := !m.checked || (err == nil) != (m.err == nil)
	if flipped {
		m.since = time.Now()
	}
	m.checked, m.err = true, err
	m.mu.Unlock()
	if flipped {
		select {
		case m.changed <- struct{}{}:
		default:
		}
	}
}

// State returns whether the store answered the last ping (checked is false
// before the first one ended), the error if not, and since when.
func (m *Monitor) State() (checked bool, err error, since time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checked, m.err, m.since
}

// Changed is signalled (coalesced) when the store becomes reachable or
// unreachable.
func (m *Monitor) Changed() <-chan struct{} { return m.changed }
