// Package k8sscale is the CiliumEndpointSlice scale experiment (`lumen
// bench k8s-scale`): against a real API server it runs N simulated agents
// that watch every CiliumEndpoint (CEP mode) or every CiliumEndpointSlice
// (CES mode, with lumen-operator batching in-process) while pods churn, and
// measures the watch events and bytes the agents receive in each mode, from
// one run, with the same churn.
package k8sscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/operator"
)

// Churn models.
const (
	// ChurnRollout replaces the pods of one deployment after another, as
	// rolling updates do: changes arrive grouped by namespace and identity.
	ChurnRollout = "rollout"
	// ChurnRandom replaces pods picked at random across the cluster: every
	// change lands somewhere else (the hardest case for batching).
	ChurnRandom = "random"
)

// Modes the agents run in.
const (
	ModeCEP = "cep" // agents watch CiliumEndpoints
	ModeCES = "ces" // agents watch CiliumEndpointSlices
)

// Options size the experiment.
type Options struct {
	Agents           int           // simulated agents (nodes), each with its own connection
	Namespaces       int           // namespaces the pods live in
	DeploymentsPerNS int           // deployments (one identity each) per namespace
	Replicas         int           // pods per deployment
	ChurnRate        float64       // pods replaced per second (a replacement: create the new CEP, delete the old)
	Churn            string        // ChurnRollout or ChurnRandom
	StatusUpdates    int           // status-only updates of each new CEP (state changes, as Cilium's agent makes)
	Duration         time.Duration // churn time per mode
	Modes            []string      // ModeCEP and/or ModeCES, measured in this order

	// The operator's CiliumEndpointSlice settings (Cilium 1.11's defaults).
	SliceMode    string
	MaxPerSlice  int
	SyncInterval time.Duration
	WriteQPS     float64
	WriteBurst   int

	Dir string       // control plane state ("" = a temporary directory, removed after)
	Log *slog.Logger // progress (nil: discarded)
}

// DefaultOptions: 100 agents, 1,000 pods (20 namespaces x 5 deployments x
// 10 replicas), 10 pod replacements per second by rolling update (20 CEP
// writes/s, about Cilium's 1,000-node figure of 18 CEP events/s per agent),
// 30 s per mode, and the operator's defaults.
func DefaultOptions() Options {
	d := operator.DefaultConfig()
	return Options{
		Agents: 100, Namespaces: 20, DeploymentsPerNS: 5, Replicas: 10,
		ChurnRate: 10, Churn: ChurnRollout, Duration: 30 * time.Second,
		Modes:     []string{ModeCEP, ModeCES},
		SliceMode: d.CESSliceMode, MaxPerSlice: d.CESMaxPerSlice, SyncInterval: d.CESSyncInterval,
		WriteQPS: d.CESWriteQPS, WriteBurst: d.CESWriteBurst,
	}
}

// Validate checks the options; errors name the flag and the value.
func (o Options) Validate() error {
	switch {
	case o.Agents < 1 || o.Agents > 100000:
		return fmt.Errorf("agents: invalid value %d: want 1..100000", o.Agents)
	case o.Namespaces < 1:
		return fmt.Errorf("namespaces: invalid value %d: want >= 1", o.Namespaces)
	case o.DeploymentsPerNS < 1:
		return fmt.Errorf("deployments-per-namespace: invalid value %d: want >= 1", o.DeploymentsPerNS)
	case o.Replicas < 1:
		return fmt.Errorf("replicas: invalid value %d: want >= 1", o.Replicas)
	case o.Namespaces*o.DeploymentsPerNS*o.Replicas > 200000:
		return fmt.Errorf("namespaces x deployments-per-namespace x replicas: %d pods is too many (at most 200000)", o.Namespaces*o.DeploymentsPerNS*o.Replicas)
	case !(o.ChurnRate > 0) || o.ChurnRate > 10000:
		return fmt.Errorf("churn-rate: invalid value %g: want a rate in (0, 10000] pods/s", o.ChurnRate)
	case o.Churn != ChurnRollout && o.Churn != ChurnRandom:
		return fmt.Errorf("churn: invalid value %q: want %s or %s", o.Churn, ChurnRollout, ChurnRandom)
	case o.StatusUpdates < 0 || o.StatusUpdates > 10:
		return fmt.Errorf("status-updates: invalid value %d: want 0..10", o.StatusUpdates)
	case o.Duration < time.Second:
		return fmt.Errorf("duration: invalid value %s: want at least 1s", o.Duration)
	case len(o.Modes) == 0:
		return errors.New("modes: give cep, ces or both")
	}
	for _, m := range o.Modes {
		if m != ModeCEP && m != ModeCES {
			return fmt.Errorf("modes: invalid value %q: want %s or %s", m, ModeCEP, ModeCES)
		}
	}
	return o.operatorConfig().Validate()
}

func (o Options) operatorConfig() operator.Config {
	c := operator.DefaultConfig()
	c.IPv4Pools, c.IPv6Pools, c.IdentityGCInterval = nil, nil, 0
	c.EnableCES, c.CESSliceMode, c.CESMaxPerSlice = true, o.SliceMode, o.MaxPerSlice
	c.CESSyncInterval, c.CESWriteQPS, c.CESWriteBurst = o.SyncInterval, o.WriteQPS, o.WriteBurst
	return c
}

// Pods is the number of pods alive at any time.
func (o Options) Pods() int { return o.Namespaces * o.DeploymentsPerNS * o.Replicas }

// ModeResult is what the agents received in one mode.
type ModeResult struct {
	Mode     string        `json:"mode"`
	Duration time.Duration `json:"durationNs"` // churn time (events/s and Mbps are per second of churn)
	// Replacements done and the writes they made.
	Replacements int64 `json:"replacements"`
	CEPWrites    int64 `json:"cepWrites"`
	// SliceWrites are the operator's CiliumEndpointSlice writes (CES mode).
	SliceWrites int64 `json:"sliceWrites,omitempty"`
	// ObjectWrites are the writes of the kind the agents watch.
	ObjectWrites int64 `json:"objectWrites"`
	// Events and Bytes: watch events (added, modified, deleted) and bytes
	// (TLS included) all agents received for the churn, until delivery
	// settled after it.
	Events int64 `json:"events"`
	Bytes  int64 `json:"bytes"`
	// Relists counts watches that had to list again (410 Gone); Restarts
	// watches that ended and resumed.
	Relists  int64 `json:"relists"`
	Restarts int64 `json:"restarts"`
	// Delivered is Events / (ObjectWrites x agents): 1 when every agent
	// saw every write (below 1: the API server or the agents fell behind).
	Delivered float64 `json:"delivered"`

	// DeliveryTime runs from the start of the churn until the agents got
	// their last event: longer than Duration when the API server (or the
	// operator's write limit) falls behind.
	DeliveryTime time.Duration `json:"deliveryTimeNs"`
	// ChurnRate is the replacements per second actually made.
	ChurnRate            float64 `json:"churnRate"`
	EventsPerSec         float64 `json:"eventsPerSec"`
	EventsPerSecPerAgent float64 `json:"eventsPerSecPerAgent"`
	Mbps                 float64 `json:"mbps"`
	BytesPerEvent        float64 `json:"bytesPerEvent"`
	// APIServerCPU is the CPU time kube-apiserver used during the churn
	// and delivery.
	APIServerCPU time.Duration `json:"apiServerCpuNs"`
	// SliceLatency is the mean time from an endpoint change to the slice
	// write carrying it (CES mode): what batching costs in propagation.
	SliceLatency time.Duration `json:"sliceLatencyNs,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Options Options      `json:"options"`
	Results []ModeResult `json:"results"`
	// EventRatio and ByteRatio are CEP mode over CES mode (how many times
	// fewer in CES mode), when both modes ran.
	EventRatio float64 `json:"eventRatio,omitempty"`
	ByteRatio  float64 `json:"byteRatio,omitempty"`
	// Slices and endpoints at the end of the CES run.
	Slices int `json:"slices,omitempty"`
}

// Cilium 1.11's published figures at 1,000 nodes, the experiment's anchor.
const (
	AnchorCEPEventsPerSec = 18000
	AnchorCESEventsPerSec = 8000
	AnchorCEPMbps         = 36.6
	AnchorCESMbps         = 18.1
)

// Run starts a control plane, applies the CRDs, creates the pods' CEPs and
// measures each mode in turn.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, err := controlplane.BinDir()
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "lumen-k8s-scale-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	log.Info("starting the control plane", "dir", dir)
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, BinDir: bin, NoControllers: true, Log: log})
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	defer cp.Stop()
	if err := controlplane.ApplyCRDs(ctx, cp.RESTConfig(), log); err != nil {
		return nil, err
	}
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = 5000, 10000
	admin, err := k8s.NewClientsFor(cfg)
	if err != nil {
		return nil, err
	}
	cl := newCluster(o, admin, log)
	log.Info("creating pods' CiliumEndpoints", "pods", o.Pods(), "namespaces", o.Namespaces)
	if err := cl.populate(ctx); err != nil {
		return nil, err
	}

	rep := &Report{Options: o}
	rep.Options.Log = nil
	var stopOperator func()
	defer func() {
		if stopOperator != nil {
			stopOperator()
		}
	}()
	for _, mode := range o.Modes {
		var op *operator.Operator
		if mode == ModeCES {
			if op, stopOperator, err = startOperator(ctx, admin, o, log); err != nil {
				return nil, err
			}
			if err := waitSlicesConverged(ctx, op, o.Pods()); err != nil {
				return nil, err
			}
		}
		res, err := measure(ctx, cp, cl, mode, op, log)
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", mode, err)
		}
		if op != nil {
			rep.Slices = int(gauge(op, "lumen_operator_ces_slices"))
		}
		rep.Results = append(rep.Results, *res)
	}
	var cep, ces *ModeResult
	for i := range rep.Results {
		switch rep.Results[i].Mode {
		case ModeCEP:
			cep = &rep.Results[i]
		case ModeCES:
			ces = &rep.Results[i]
		}
	}
	if cep != nil && ces != nil && ces.Events > 0 && ces.Bytes > 0 {
		rep.EventRatio = cep.EventsPerSec / ces.EventsPerSec
		rep.ByteRatio = cep.Mbps / ces.Mbps
	}
	return rep, nil
}

// startOperator runs lumen-operator's CES controller in-process.
func startOperator(ctx context.Context, c *k8s.Clients, o Options, log *slog.Logger) (*operator.Operator, func(), error) {
	op, err := operator.New(c, o.operatorConfig(), log.With("component", "operator"))
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- op.Run(ctx) }()
	stop := func() {
		cancel()
		<-done
	}
	select {
	case <-op.Ready():
		return op, stop, nil
	case err := <-done:
		cancel()
		return nil, nil, fmt.Errorf("operator: %w", err)
	case <-ctx.Done():
		stop()
		return nil, nil, ctx.Err()
	}
}

// waitSlicesConverged waits until the operator has written slices for
// every pod.
func waitSlicesConverged(ctx context.Context, op *operator.Operator, pods int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		eps, pending := gauge(op, "lumen_operator_ces_endpoints"), gauge(op, "lumen_operator_ces_slices_pending")
		pending += gauge(op, "lumen_operator_ces_writes_in_flight")
		if int(eps) == pods && pending == 0 && counter(op, "lumen_operator_ces_writes_total") > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("operator did not batch the %d endpoints in 5 minutes (%v batched, %v slices pending)", pods, eps, pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// gauge and counter read the operator's metrics (summed over labels).
func gauge(op *operator.Operator, name string) float64 { return metricSum(op, name) }

func counter(op *operator.Operator, name string) float64 { return metricSum(op, name) }

func metricSum(op *operator.Operator, name string) float64 {
	mfs, err := op.Registry().Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// histogram returns the sample count and sum of a histogram.
func histogram(op *operator.Operator, name string) (uint64, float64) {
	mfs, err := op.Registry().Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

// cpuTime is the CPU time (user + system) process pid has used.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
