package bench

// Flow observability benchmarks (`lumen bench flows`):
//
//   - the sustained datapath event rate the agent's reader and parser keep
//     up with at the default ring size without losing an event, against a
//     bare reader that only decodes records;
//   - the heap of a flow ring of 65535 realistic flows, against their
//     protobuf wire size;
//   - GetFlows latency for the last 1000 flows matching a namespace and a
//     verdict over the real gRPC server on a unix socket, against the same
//     request without a filter.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/datapath"
)

// FlowsOptions configure FlowsBench.
type FlowsOptions struct {
	// StepDuration is how long each rate is sustained.
	StepDuration time.Duration `json:"stepDuration"`
	// StartRate is the first rate tried (events/s); each step doubles it
	// up to MaxRate, until a step loses events (and once more).
	StartRate float64 `json:"startRate"`
	MaxRate   float64 `json:"maxRate"`
	// RingFlows is the flow ring's capacity for the memory and GetFlows
	// measurements.
	RingFlows int `json:"ringFlows"`
	// Requests is the number of GetFlows requests per query.
	Requests int `json:"requests"`
	// Last is the number of flows each GetFlows request asks for.
	Last int `json:"last"`
	// Refine is the number of bisection steps between the last lossless
	// rate and the first lossy one.
	Refine int `json:"refine"`
	// SkipRate leaves out the datapath part (which needs root).
	SkipRate bool `json:"skipRate"`
}

// Validate names the first invalid option by its `lumen bench flows` flag.
func (o FlowsOptions) Validate() error {
	switch {
	case o.StepDuration <= 0:
		return fmt.Errorf("step: invalid value %s: want a positive duration", o.StepDuration)
	case o.StartRate <= 0:
		return fmt.Errorf("start-rate: invalid value %g: want a positive rate", o.StartRate)
	case o.MaxRate < o.StartRate:
		return fmt.Errorf("max-rate: invalid value %g: want at least start-rate (%g)", o.MaxRate, o.StartRate)
	case o.RingFlows < o.Last:
		return fmt.Errorf("flows: invalid value %d: want at least last (%d)", o.RingFlows, o.Last)
	case o.Requests < 1:
		return fmt.Errorf("requests: invalid value %d: want at least 1", o.Requests)
	case o.Last < 1:
		return fmt.Errorf("last: invalid value %d: want at least 1", o.Last)
	case o.Refine < 0:
		return fmt.Errorf("refine: invalid value %d: want 0 or more", o.Refine)
	}
	return nil
}

// DefaultFlowsOptions are the `lumen bench flows` defaults.
var DefaultFlowsOptions = FlowsOptions{
	StepDuration: 2 * time.Second, StartRate: 25_000, MaxRate: 3_200_000,
	RingFlows: 65535, Requests: 50, Last: 1000, Refine: 3,
}

// FlowsGoal is the goal for the sustained lossless event rate.
const FlowsGoal = 100_000

// RateStep is one sustained rate.
type RateStep struct {
	Target    float64 `json:"targetPerSecond"`
	Generated uint64  `json:"generated"`
	// Achieved is Generated over the step's duration: below Target when
	// the generator itself ran out of CPU.
	Achieved  float64 `json:"generatedPerSecond"`
	Delivered uint64  `json:"delivered"`   // flows (pipeline) or records (bare reader)
	RingLost  uint64  `json:"ringLost"`    // the datapath's lost-events counter (metrics index 255)
	QueueLost uint64  `json:"queueLost"`   // the observer's queue overflowed
	Unsettled uint64  `json:"unaccounted"` // neither delivered nor counted lost when the wait ended
}

// Lost is every event of the step that did not become a flow.
func (s RateStep) Lost() uint64 { return s.RingLost + s.QueueLost + s.Unsettled }

// RateResult is the rate search for one consumer of the ring.
type RateResult struct {
	Consumer string     `json:"consumer"`
	Steps    []RateStep `json:"steps"`
	// MaxLossless is the highest generated rate of a step without any loss.
	MaxLossless float64 `json:"maxLosslessPerSecond"`
	// GeneratorBound: the search ended because the generator could not
	// reach its target (no CPU left on the machine): MaxLossless is a lower
	// bound.
	GeneratorBound bool `json:"generatorBound"`
}

// MemoryResult is the flow ring's memory.
type MemoryResult struct {
	Flows        int     `json:"flows"`
	HeapBytes    uint64  `json:"heapBytes"`
	BytesPerFlow float64 `json:"bytesPerFlow"`
	// WireBytesPerFlow is the mean protobuf size of the same flows.
	WireBytesPerFlow float64 `json:"wireBytesPerFlow"`
	Ratio            float64 `json:"heapToWireRatio"`
}

// QueryResult is the latency of one GetFlows query.
type QueryResult struct {
	Name     string        `json:"name"`
	Flows    int           `json:"flowsPerResponse"`
	Scanned  int           `json:"flowsScanned"` // ring entries the server walks through
	Requests int           `json:"requests"`
	P50      time.Duration `json:"p50"`
	P90      time.Duration `json:"p90"`
	Max      time.Duration `json:"max"`
	Mean     time.Duration `json:"mean"`
}

// FlowsReport is the outcome of FlowsBench.
type FlowsReport struct {
	Options    FlowsOptions  `json:"options"`
	RingBytes  int           `json:"ringBytes"`
	RecordSize int           `json:"recordBytes"`
	Rates      []RateResult  `json:"rates,omitempty"`
	Parse      ParseResult   `json:"parse"`
	Memory     MemoryResult  `json:"memory"`
	Queries    []QueryResult `json:"getFlows"`
	Method     string        `json:"method"`
	// CPUs and LoadAverage (1 minute, before the run) tell how busy the
	// machine was: the rates depend on it.
	CPUs        int    `json:"cpus"`
	LoadAverage string `json:"loadAverage"`
}

// Consumers of the ring in the rate search.
const (
	ConsumerPipeline = "agent pipeline (reader, parser, metrics, flow ring)"
	ConsumerBare     = "bare reader (decode only)"
)

// Query names.
const (
	QueryFiltered   = "namespace + verdict filter"
	QueryUnfiltered = "no filter"
)

// FlowsBench runs the flow benchmarks.
func FlowsBench(ctx context.Context, o FlowsOptions) (*FlowsReport, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rep := &FlowsReport{Options: o, RecordSize: 8 + datapath.EventSize,
		Method: "events: to_container run by BPF_PROG_TEST_RUN (repeat) at trace level all, paced in batches of about 1 ms, " +
			"while the agent's reader (internal/hubble/reader) and observer consume them in the same process; a step counts as lossless when " +
			"the datapath's lost counter, the observer's queue and the delivered count all agree on zero loss"}
	rep.CPUs = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			rep.LoadAverage = f[0]
		}
	}
	if !o.SkipRate {
		rates, ringBytes, err := RingRates(ctx, o)
		if err != nil {
			return nil, err
		}
		rep.Rates, rep.RingBytes = rates, ringBytes
	}
	rep.Parse = ParseRate(1_000_000)
	obs, mem := FillRing(o.RingFlows)
	rep.Memory = mem
	qs, err := MeasureGetFlows(ctx, obs, o.Last, o.Requests)
	if err != nil {
		return nil, err
	}
	rep.Queries = qs
	return rep, nil
}
