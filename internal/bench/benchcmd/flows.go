package benchcmd

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/bench"
	"github.com/lumen-net/lumen/internal/cli"
)

func newBenchFlowsCmd() *cobra.Command {
	o := bench.DefaultFlowsOptions
	c := &cobra.Command{
		Use:   "flows",
		Short: "Lossless datapath event rate at the default ring size, flow ring memory, GetFlows latency",
		Long: `flows measures flow observability in one run:

  - the highest datapath event rate the agent's ring-buffer reader and
    parser sustain with 0 lost events at the default ring size: to_container
    runs by BPF_PROG_TEST_RUN at trace level all in a throwaway network
    namespace, at rates doubling from --start-rate for --step each, while the
    agent's reader and observer consume in this process; lost events are the
    datapath's counter (metrics index 255) plus the observer's queue
    overflows. A bare reader that only decodes records is the baseline;
  - the heap a flow ring of --flows realistic flows keeps alive, against the
    flows' protobuf size;
  - GetFlows latency over the gRPC server on a unix socket for the last
    --last flows of a full ring with a namespace + verdict filter (as
    hubble observe --namespace team-3 --verdict DROPPED --last 1000), against
    the same request without a filter.

The rate part needs root (--no-rate leaves it out).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			rep, err := bench.FlowsBench(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return cli.PrintJSON(os.Stdout, rep)
			}
			printFlowsReport(rep)
			return nil
		},
	}
	c.Flags().DurationVar(&o.StepDuration, "step", o.StepDuration, "how long each event rate is sustained")
	c.Flags().Float64Var(&o.StartRate, "start-rate", o.StartRate, "first event rate (events/s); each step doubles it")
	c.Flags().Float64Var(&o.MaxRate, "max-rate", o.MaxRate, "highest event rate tried")
	c.Flags().IntVar(&o.RingFlows, "flows", o.RingFlows, "flows in the ring for the memory and GetFlows measurements")
	c.Flags().IntVar(&o.Requests, "requests", o.Requests, "GetFlows requests per query")
	c.Flags().IntVar(&o.Last, "last", o.Last, "flows each GetFlows request asks for")
	c.Flags().IntVar(&o.Refine, "refine", o.Refine, "bisection steps between the last lossless and the first lossy rate")
	c.Flags().BoolVar(&o.SkipRate, "no-rate", o.SkipRate, "leave out the datapath event rate (needs root)")
	return c
}

func printFlowsReport(rep *bench.FlowsReport) {
	k := func(v float64) string {
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2fM", v/1e6)
		case v >= 1e3:
			return fmt.Sprintf("%.0fk", v/1e3)
		}
		return fmt.Sprintf("%.0f", v)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
	if len(rep.Rates) > 0 {
		fmt.Printf("Datapath events -> flows, default ring of %d bytes (%d records of %d bytes), %s per rate\n",
			rep.RingBytes, rep.RingBytes/rep.RecordSize, rep.RecordSize, rep.Options.StepDuration)
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CONSUMER\tTARGET/S\tGENERATED/S\tEVENTS\tDELIVERED\tRING LOST\tQUEUE LOST\tUNACCOUNTED")
		for _, r := range rep.Rates {
			for _, s := range r.Steps {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", r.Consumer, k(s.Target), k(s.Achieved), s.Generated, s.Delivered, s.RingLost, s.QueueLost, s.Unsettled)
			}
		}
		w.Flush()
		var pipe, bare bench.RateResult
		for _, r := range rep.Rates {
			switch r.Consumer {
			case bench.ConsumerPipeline:
				pipe = r
			case bench.ConsumerBare:
				bare = r
			}
		}
		bound := func(r bench.RateResult) string {
			if r.GeneratorBound {
				return " (at least: the generator ran out of CPU)"
			}
			return ""
		}
		fmt.Printf("highest rate with 0 lost: agent pipeline %s events/s%s, %.1fx the %s/s goal; bare reader %s events/s%s",
			k(pipe.MaxLossless), bound(pipe), pipe.MaxLossless/bench.FlowsGoal, k(bench.FlowsGoal), k(bare.MaxLossless), bound(bare))
		if !pipe.GeneratorBound && !bare.GeneratorBound {
			fmt.Printf("; pipeline/bare %.2f", pipe.MaxLossless/max(bare.MaxLossless, 1))
		}
		fmt.Println()
		fmt.Printf("method: %s\n", rep.Method)
		fmt.Printf("machine: %d CPUs, load average %s before the run (the rates need CPU time for the generator, reader and parser)\n\n", rep.CPUs, rep.LoadAverage)
	}
	fmt.Printf("Parser and observer alone (parse, metrics, ring), %d synthetic events: %s events per CPU-second (goal 1M), %s/s by the wall clock\n\n",
		rep.Parse.Events, k(rep.Parse.PerCPUSecond), k(rep.Parse.PerSecond))
	m := rep.Memory
	fmt.Printf("Flow ring of %d flows: %.1f MiB heap, %.0f bytes/flow; protobuf wire size %.0f bytes/flow; heap/wire %.2fx\n\n",
		m.Flows, float64(m.HeapBytes)/(1<<20), m.BytesPerFlow, m.WireBytesPerFlow, m.Ratio)
	fmt.Printf("GetFlows over gRPC (unix socket), ring of %d flows, %d requests per query\n", m.Flows, rep.Options.Requests)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "QUERY\tFLOWS\tRING ENTRIES SCANNED\tP50 MS\tP90 MS\tMAX MS\tMEAN MS")
	var filtered, plain time.Duration
	for _, q := range rep.Queries {
		fmt.Fprintf(w, "last %d, %s\t%d\t%d\t%s\t%s\t%s\t%s\n", rep.Options.Last, q.Name, q.Flows, q.Scanned, ms(q.P50), ms(q.P90), ms(q.Max), ms(q.Mean))
		switch q.Name {
		case bench.QueryFiltered:
			filtered = q.P50
		case bench.QueryUnfiltered:
			plain = q.P50
		}
	}
	w.Flush()
	if plain > 0 {
		fmt.Printf("filtered/unfiltered (p50): %.2fx\n", float64(filtered)/float64(plain))
	}
}
