package benchcmd

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/bench"
	"github.com/lumen-net/lumen/internal/cli"
	"github.com/lumen-net/lumen/internal/lab"
)

func newBenchLBCmd() *cobra.Command {
	o := bench.DefaultLBOptions
	var sizes, maglevSizes string
	c := &cobra.Command{
		Use:   "lb",
		Short: "Service load balancing against kube-proxy's iptables rules: connection rate and latency at 1 to 10k services, time to add a service, Maglev builds, per-packet DNAT cost, map memory",
		Long: `lb measures in one run and prints the figures with their ratios:

  - connection rate and latency (sequential TCP connect + 32-byte echo +
    close) to a ClusterIP with --sizes services in the store, through
    Lumen (socket load balancing from a pod and from the node, per-packet
    DNAT from a pod) and through the same services as kube-proxy's iptables
    DNAT rules (KUBE-SERVICES / KUBE-SVC-* / KUBE-SEP-*, statistic random),
    installed with iptables-restore inside the lab node's own network
    namespace for cluster IPs Lumen does not hold;
  - the time to add one service when the largest number exists: lumen apply
    until the frontend is in the agent's BPF map, against iptables-restore of
    the ruleset (kube-proxy's full and minimized partial syncs);
  - Maglev table build time for --maglev-backends backends;
  - the per-packet cost of from_container's DNAT (new and established
    connections) against an empty program, BPF_PROG_TEST_RUN;
  - the kernel memory of the load-balancing maps at --mem-backends backends.

It builds a one-node lab of its own (named lbbench<pid>) and removes it.
Needs root and iptables (iptables-legacy-restore, or --iptables nft).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			if o.Sizes, err = parseInts[int]("sizes", sizes); err != nil {
				return err
			}
			if o.MaglevSizes, err = parseInts[uint64]("maglev-sizes", maglevSizes); err != nil {
				return err
			}
			if o.Bins, err = binDir(); err != nil {
				return err
			}
			if !asJSON {
				o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			rep, err := bench.LBBench(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return cli.PrintJSON(os.Stdout, rep)
			}
			printLBReport(rep, o)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&sizes, "sizes", "1,1000,10000", "numbers of services at which connections are measured")
	f.IntVar(&o.Conns, "conns", o.Conns, "connections per measurement")
	f.IntVar(&o.Backends, "backends", o.Backends, "backend pods behind every service")
	f.IntVar(&o.Parallel, "parallel", o.Parallel, "connections at a time in the parallel connect-only measurement")
	f.IntVar(&o.ParallelConns, "parallel-conns", o.ParallelConns, "connections per parallel measurement")
	f.StringVar(&o.IPTables, "iptables", o.IPTables, "iptables-restore flavour for the kube-proxy rules: legacy or nft")
	f.IntVar(&o.AddRepeats, "add-repeats", o.AddRepeats, "times adding one service with lumen apply is timed (median)")
	f.IntVar(&o.StoreRepeats, "store-repeats", o.StoreRepeats, "times adding one service by a store write is timed (median)")
	f.IntVar(&o.MaglevBackends, "maglev-backends", o.MaglevBackends, "backends of the Maglev tables timed")
	f.StringVar(&maglevSizes, "maglev-sizes", "16381,131071", "Maglev table sizes timed (primes)")
	f.IntVar(&o.PacketServices, "packet-services", o.PacketServices, "service frontends in the maps for the per-packet cost")
	f.IntVar(&o.PacketRuns, "packet-runs", o.PacketRuns, "program runs per packet path")
	f.IntVar(&o.MemBackends, "mem-backends", o.MemBackends, "backends (and service slots) for the map memory figure")
	f.IntVar(&o.MemPerService, "mem-per-service", o.MemPerService, "backends per service for the map memory figure")
	f.BoolVar(&o.NoLab, "no-lab", false, "skip the lab: no connection figures, no time to add a service")
	c.AddCommand(newBenchLBClientCmd())
	return c
}

// parseInts parses "1,1000,10000", naming the flag on error.
func parseInts[T int | uint64](flag, s string) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 63)
		if err != nil {
			return nil, fmt.Errorf("--%s: invalid value %q: want comma-separated numbers", flag, s)
		}
		out = append(out, T(n))
	}
	return out, nil
}

func newBenchLBClientCmd() *cobra.Command {
	var target, cgroup string
	var conns, warm, parallel int
	var connectOnly bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:    "client --target ADDR:PORT",
		Short:  "Open connections one after the other and print rate and latency as JSON (run by lumen bench lb)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" {
				return fmt.Errorf("--target is required")
			}
			if cgroup != "" {
				if err := lab.JoinCgroup(cgroup); err != nil {
					return err
				}
			}
			return cli.PrintJSON(os.Stdout, bench.RunLBClient(bench.LBClientOptions{
				Target: target, Conns: conns, Warm: warm, Parallel: parallel, ConnectOnly: connectOnly, Timeout: timeout,
			}))
		},
	}
	c.Flags().StringVar(&target, "target", "", "address:port to connect to")
	c.Flags().StringVar(&cgroup, "cgroup", "", "cgroup v2 directory to join first (a lab node's, for its socket load balancing)")
	c.Flags().IntVar(&conns, "conns", 3000, "connections measured")
	c.Flags().IntVar(&warm, "warm", 200, "connections before measuring")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "time allowed to each connection")
	c.Flags().IntVar(&parallel, "parallel", 1, "connections at a time")
	c.Flags().BoolVar(&connectOnly, "connect-only", false, "connect and close (reset) only, no payload")
	return c
}

func printLBReport(rep *bench.LBReport, o bench.LBOptions) {
	us := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1000) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Nanoseconds())/1e6) }
	ms3 := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d.Nanoseconds())/1e6) }
	if len(rep.Connections) > 0 {
		first, last := rep.Connections[0], rep.Connections[len(rep.Connections)-1]
		fmt.Printf("CONNECTIONS to a ClusterIP (%d sequential connect+echo per client, %d backends)\n", o.Conns, o.Backends)
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "SERVICES\tLUMEN CLIENT\tCONN/S\tP50 US\tP90 US\tP99 US\tCONNECT P50 US\tVS %d SERVICE(S)\n", first.Services)
		for _, row := range rep.Connections {
			for _, c := range []struct {
				name      string
				s, first_ bench.ConnStats
			}{
				{"pod (socket LB)", row.LumenPod, first.LumenPod},
				{"pod (per-packet DNAT)", row.LumenPodPerPacket, first.LumenPodPerPacket},
				{"node (socket LB)", row.LumenNode, first.LumenNode},
			} {
				fmt.Fprintf(w, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%.2fx\n", row.Services, c.name, c.s.PerSec, us(c.s.P50), us(c.s.P90), us(c.s.P99), us(c.s.ConnectP50), c.s.PerSec/c.first_.PerSec)
			}
		}
		w.Flush()
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "SERVICES\tCLIENT (same rounds)\tCONN/S\tP50 US\tP90 US\tP99 US\tCONNECT P50 US\tLUMEN VS THIS (RATE)\t(CONNECT P50)")
		for _, row := range rep.Connections {
			l := row.LumenPodBeside
			for _, c := range []struct {
				name string
				s    bench.ConnStats
			}{
				{"kube-proxy iptables, node, middle service", row.IPTablesNode},
				{"kube-proxy iptables, node, last service", row.IPTablesNodeLast},
				{"Lumen, pod (socket LB)", l},
			} {
				fmt.Fprintf(w, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%.2fx\t%.2fx\n", row.Services, c.name, c.s.PerSec, us(c.s.P50), us(c.s.P90), us(c.s.P99), us(c.s.ConnectP50),
					l.PerSec/c.s.PerSec, float64(c.s.ConnectP50)/float64(l.ConnectP50))
			}
		}
		w.Flush()
		fmt.Printf("from %d to %d services: Lumen pod keeps %.2fx of its rate (goal: flat), iptables %.2fx (middle service), %.2fx (last)\n",
			first.Services, last.Services, last.LumenPod.PerSec/first.LumenPod.PerSec,
			last.IPTablesNode.PerSec/first.IPTablesNode.PerSec, last.IPTablesNodeLast.PerSec/first.IPTablesNodeLast.PerSec)
		fmt.Printf("at %d services Lumen's connection rate is %.2fx iptables' to the middle service, %.2fx to the last (goal >= 2x); its connect p50 %.2fx and %.2fx faster; rules through %s\n\n",
			last.Services, last.Ratio, last.RatioLast,
			float64(last.IPTablesNode.ConnectP50)/float64(last.LumenPodBeside.ConnectP50), float64(last.IPTablesNodeLast.ConnectP50)/float64(last.LumenPodBeside.ConnectP50), rep.IPTables)

		fmt.Printf("PARALLEL CONNECT-ONLY RATE (%d connections, %d at a time, connect + reset, no payload)\n", o.ParallelConns, o.Parallel)
		w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "SERVICES\tCLIENT\tCONN/S\tCONNECT P50 US\tCONNECT P99 US\tCLIENT CPU US/CONN\tLUMEN VS THIS (RATE)\t(CPU)\tVS %d SERVICE(S) (RATE)\n", first.Services)
		cpu := func(c bench.ConnStats) string { return fmt.Sprintf("%.1f", float64(c.CPUPerConn().Nanoseconds())/1000) }
		for _, row := range rep.Connections {
			fmt.Fprintf(w, "%d\tLumen, pod (socket LB), alone\t%.0f\t%s\t%s\t%s\t\t\t%.2fx\n", row.Services, row.LumenPodParallel.PerSec,
				us(row.LumenPodParallel.ConnectP50), us(row.LumenPodParallel.ConnectP99), cpu(row.LumenPodParallel), row.LumenPodParallel.PerSec/first.LumenPodParallel.PerSec)
			l := row.LumenPodParallelBeside
			for _, c := range []struct {
				name      string
				s, first_ bench.ConnStats
			}{
				{"kube-proxy iptables, node, middle service", row.IPTablesNodeParallel, first.IPTablesNodeParallel},
				{"kube-proxy iptables, node, last service", row.IPTablesNodeLastParallel, first.IPTablesNodeLastParallel},
				{"Lumen, pod (socket LB), same rounds", l, first.LumenPodParallelBeside},
			} {
				fmt.Fprintf(w, "%d\t%s\t%.0f\t%s\t%s\t%s\t%.2fx\t%.2fx\t%.2fx\n", row.Services, c.name, c.s.PerSec, us(c.s.ConnectP50), us(c.s.ConnectP99), cpu(c.s),
					l.PerSec/c.s.PerSec, float64(c.s.CPUPerConn())/float64(max(l.CPUPerConn(), 1)), c.s.PerSec/c.first_.PerSec)
			}
		}
		w.Flush()
		fmt.Printf("parallel, from %d to %d services: Lumen pod keeps %.2fx of its rate, iptables %.2fx (middle), %.2fx (last); at %d Lumen is %.2fx iptables' rate to the middle service, %.2fx to the last (goal >= 2x)\n",
			first.Services, last.Services, last.LumenPodParallel.PerSec/first.LumenPodParallel.PerSec,
			last.IPTablesNodeParallel.PerSec/first.IPTablesNodeParallel.PerSec, last.IPTablesNodeLastParallel.PerSec/first.IPTablesNodeLastParallel.PerSec,
			last.Services, last.RatioParallel, last.RatioParallelLast)
		fmt.Printf("client CPU per connection at %d services: iptables costs %.2fx Lumen's to the middle service, %.2fx to the last; Lumen from %d to %d services: %.2fx\n\n",
			last.Services, last.CPURatio, last.CPURatioLast, first.Services, last.Services,
			float64(last.LumenPodParallel.CPUPerConn())/float64(max(first.LumenPodParallel.CPUPerConn(), 1)))
	}
	if a := rep.AddService; a != nil {
		fmt.Printf("ADD ONE SERVICE when %d exist (median of %d)\n", a.Existing, o.AddRepeats)
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "WHAT\tMS\tVS LUMEN")
		fmt.Fprintf(w, "Lumen: lumen apply -> frontend in the BPF map\t%s\t1.00x\n", ms(a.LumenVisible))
		fmt.Fprintf(w, "  of which lumen apply (validate, allocate, store)\t%s\t\n", ms(a.LumenApply))
		fmt.Fprintf(w, "Lumen: store write -> frontend in the BPF map (median of %d)\t%s\t\n", len(a.StoreSamples), ms3(a.StoreToMap))
		fmt.Fprintf(w, "  of which the agent: watch event -> map writes done (its status, median of %d; %d map writes)\t%s\t\n", len(a.AgentSamples), a.AgentWrites, ms3(a.AgentSync))
		fmt.Fprintf(w, "kube-proxy: iptables-restore, full sync (%d lines)\t%s\t%.2fx\n", a.IPTablesRules, ms(a.IPTablesFull), float64(a.IPTablesFull)/float64(a.LumenVisible))
		fmt.Fprintf(w, "kube-proxy: iptables-restore, partial sync\t%s\t%.2fx\n", ms(a.IPTablesPartial), float64(a.IPTablesPartial)/float64(a.LumenVisible))
		w.Flush()
		fmt.Println()
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MAGLEV TABLE BUILD\tTABLE SIZE\tMS (MEDIAN)")
	for _, m := range rep.Maglev {
		fmt.Fprintf(w, "%d backends\t%d\t%s\n", m.Backends, m.TableSize, ms(m.Median))
	}
	w.Flush()
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "PACKET PATH (%d frontends in the maps)\tNS/PACKET (MEDIAN)\tEMPTY PROGRAM\tRATIO\tABOVE EMPTY\tMEAN\n", o.PacketServices+1)
	for _, p := range rep.Packets {
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2fx\t%.0f\t%.0f\n", p.Name, p.Median, p.EmptyMedian, p.Ratio, p.Median-p.EmptyMedian, p.Mean)
	}
	w.Flush()
	if len(rep.Packets) == 3 {
		fmt.Printf("DNAT adds %.0f ns to an established packet, %.0f ns to a new connection's first (vs pod to pod)\n",
			rep.Packets[2].Median-rep.Packets[0].Median, rep.Packets[1].Median-rep.Packets[0].Median)
	}
	fmt.Println()
	m := rep.Memory
	mib := func(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	fmt.Printf("MAP MEMORY (memlock) at %d backends in %d services (%d slots)\n", m.Backends, m.Services, m.Slots)
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MAP\tMIB")
	fmt.Fprintf(w, "lumen_lb_backends\t%s\n", mib(m.BackendMapBytes))
	fmt.Fprintf(w, "lumen_lb_services\t%s\n", mib(m.ServiceMapBytes))
	fmt.Fprintf(w, "lumen_lb_revnat\t%s\n", mib(m.RevNatMapBytes))
	fmt.Fprintf(w, "total (empty: %s)\t%s\n", mib(m.EmptyBytes), mib(m.TotalBytes))
	w.Flush()
	fmt.Printf("%.0f bytes per backend (backend entry + service slot)\n\n", m.BytesPerBackend)
	fmt.Printf("elapsed %s\n\nmethod (connections): %s\nmethod (packets): %s\n", rep.Elapsed.Round(time.Second), rep.ConnMethod, rep.PacketNote)
}
