package reconcile

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lumen-net/lumen/internal/api"
)

// input is a fake table: synced when told, one change channel.
type input struct {
	synced  chan struct{}
	changed chan struct{}
}

func newInput() *input {
	return &input{synced: make(chan struct{}), changed: make(chan struct{}, 1)}
}
func (i *input) Synced() <-chan struct{}  { return i.synced }
func (i *input) Changed() <-chan struct{} { return i.changed }
func (i *input) change() {
	select {
	case i.changed <- struct{}{}:
	default:
	}
}

// fake records calls; each Reconcile takes its result from results (nil
// when empty) and reports the call on calls.
type fake struct {
	mu      sync.Mutex
	log     []string
	results []error
	prune   []error
	calls   chan string
}

func newFake() *fake { return &fake{calls: make(chan string, 100)} }

func (f *fake) next(name string, rs *[]error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, name)
	var err error
	if len(*rs) > 0 {
		err, *rs = (*rs)[0], (*rs)[1:]
	}
	f.calls <- name
	return err
}

func (f *fake) reconcile(context.Context) error { return f.next("reconcile", &f.results) }
func (f *fake) pruneFn(context.Context) error   { return f.next("prune", &f.prune) }

func (f *fake) history() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// start runs a loop with a recorded back-off: every delay goes to delays
// and the retry fires when the test releases it.
func start(t *testing.T, cfg Config) (l *Loop, delays chan time.Duration, release chan time.Time) {
	t.Helper()
	l = New(cfg)
	delays, release = make(chan time.Duration, 100), make(chan time.Time)
	l.after = func(d time.Duration) <-chan time.Time {
		delays <- d
		return release
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, delays, release
}

func TestWaitsForInputsThenReconcilesAndPrunesOnce(t *testing.T) {
	a, b := newInput(), newInput()
	f := newFake()
	f.prune = []error{errors.New("routes busy")}
	l, delays, release := start(t, Config{Name: "fake", Inputs: []Input{a, b}, Reconcile: f.reconcile, Prune: f.pruneFn, MinBackoff: time.Second})
	if st := l.Status(); st.State != api.StateDegraded || !strings.Contains(st.Message, "waiting") {
		t.Fatalf("status before sync = %+v", st)
	}
	close(a.synced)
	l.Kick()
	close(b.synced)
	<-f.calls
	<-f.calls // prune, which fails
	if d := <-delays; d != time.Second {
		t.Fatalf("first retry after %v, want 1s", d)
	}
	if st := l.Status(); st.State != api.StateDegraded || !strings.Contains(st.Message, "routes busy") {
		t.Fatalf("status after a failed prune = %+v", st)
	}
	release <- time.Time{}
	<-f.calls
	<-f.calls
	<-l.Done()
	a.change()
	<-f.calls
	want := []string{"reconcile", "prune", "reconcile", "prune", "reconcile"}
	if got := f.history(); !slices.Equal(got, want) {
		t.Fatalf("calls = %v, want %v (nothing before both inputs synced, prune after a reconcile and until it succeeds, then never)", got, want)
	}
	if st := l.Status(); st.State != api.StateOK {
		t.Fatalf("status = %+v, want ok", st)
	}
}

func TestBackoffDoublesUpToMaxAndResetsOnSuccess(t *testing.T) {
	f := newFake()
	boom := errors.New("boom")
	f.results = []error{boom, boom, boom, boom, nil, boom}
	m := NewMetrics()
	in := newInput()
	close(in.synced)
	_, delays, release := start(t, Config{Name: "fake", Inputs: []Input{in}, Reconcile: f.reconcile,
		MinBackoff: time.Second, MaxBackoff: 5 * time.Second, Metrics: m})
	var got []time.Duration
	for range 4 {
		<-f.calls
		got = append(got, <-delays)
		release <- time.Time{}
	}
	<-f.calls // success
	in.change()
	<-f.calls // fails again: back to the minimum
	got = append(got, <-delays)
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, time.Second}; !slices.Equal(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
	if n := value(m.errors.WithLabelValues("fake")); n != 5 {
		t.Fatalf("lumen_reconcile_errors_total = %v, want 5", n)
	}
	if n := value(m.pending.WithLabelValues("fake")); n != 1 {
		t.Fatalf("lumen_reconcile_pending = %v while a retry waits, want 1", n)
	}
	var h dto.Metric
	if err := m.duration.WithLabelValues("fake").(prometheus.Histogram).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 6 {
		t.Fatalf("lumen_reconcile_duration_seconds samples = %d (%v), want 6", h.GetHistogram().GetSampleCount(), err)
	}
}

func TestChangesDuringAPassCoalesce(t *testing.T) {
	in := newInput()
	close(in.synced)
	block := make(chan struct{})
	var mu sync.Mutex
	passes := 0
	calls := make(chan int, 10)
	rec := func(context.Context) error {
		mu.Lock()
		passes++
		n := passes
		mu.Unlock()
		calls <- n
		if n == 1 {
			<-block
		}
		return nil
	}
	m := NewMetrics()
	l, _, _ := start(t, Config{Name: "fake", Inputs: []Input{in}, Reconcile: rec, Metrics: m})
	<-calls
	// Many changes and kicks while the first pass runs: one more pass.
	for range 5 {
		in.change()
		l.Kick()
	}
	close(block)
	if n := <-calls; n != 2 {
		t.Fatalf("pass %d after the first", n)
	}
	<-l.Done()
	// A marker kick: had the changes queued more than one pass, the
	// marker's pass would not be the third.
	l.Kick()
	if n := <-calls; n != 3 {
		t.Fatalf("the marker's pass is pass %d, want 3: changes during a pass did not coalesce", n)
	}
	if n := value(m.errors.WithLabelValues("fake")); n != 0 {
		t.Fatalf("errors = %v", n)
	}
}

func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
