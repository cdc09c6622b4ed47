// Package benchcmd is `lumen bench`: the commands that run the benchmark
// suite of package bench. cmd/lumen adds them to the user commands of cli.
package benchcmd

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/bench"
	"github.com/lumen-net/lumen/internal/cli"
)

// New is `lumen bench`.
func New() *cobra.Command {
	b := &cobra.Command{Use: "bench", Short: "Measure Lumen against baselines in one run (prints ratios)"}
	var repeats uint32
	var endpoints int
	var seconds int
	var skipThroughput bool
	dp := &cobra.Command{
		Use:   "datapath",
		Short: "Per-packet cost of the pod programs against an empty program, and pod-to-pod TCP throughput against a bare veth pair",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			costs, err := bench.DatapathCost(repeats, endpoints)
			if err != nil {
				return err
			}
			report := struct {
				Programs   []bench.ProgramCost `json:"programs"`
				Throughput *bench.Throughput   `json:"throughput,omitempty"`
			}{Programs: costs}
			if !skipThroughput {
				bins, err := binDir()
				if err != nil {
					return err
				}
				tp, err := bench.MeasureThroughput(cmd.Context(), bins, seconds)
				if err != nil {
					return err
				}
				report.Throughput = tp
			}
			if asJSON {
				return cli.PrintJSON(os.Stdout, report)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "PROGRAM PATH (%d endpoints, %d runs)\tNS/PACKET\tEMPTY PROGRAM\tRATIO\n", endpoints+2, repeats)
			for _, c := range costs {
				fmt.Fprintf(w, "%s\t%.1f\t%.1f\t%.2fx\n", c.Name, c.NsPerPkt, c.Baseline, c.Ratio)
			}
			w.Flush()
			if tp := report.Throughput; tp != nil {
				fmt.Printf("\nTCP throughput (iperf3, %ds each)\n", seconds)
				w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "PATH\tGBIT/S\tVS BARE VETH")
				fmt.Fprintf(w, "bare veth pair\t%.2f\t1.00\n", tp.BareGbps)
				for _, r := range tp.Runs {
					fmt.Fprintf(w, "%s\t%.2f\t%.2f\n", r.Name, r.Gbps, r.Gbps/tp.BareGbps)
				}
				w.Flush()
			}
			return nil
		},
	}
	dp.Flags().Uint32Var(&repeats, "repeats", 1_000_000, "program runs per path")
	dp.Flags().IntVar(&endpoints, "endpoints", 10_000, "extra endpoints and ipcache entries in the maps")
	dp.Flags().IntVar(&seconds, "seconds", 5, "iperf3 duration per path")
	dp.Flags().BoolVar(&skipThroughput, "no-throughput", false, "only measure per-packet program cost")
	b.AddCommand(dp)
	b.AddCommand(newBenchPolicyCmd())
	b.AddCommand(newBenchLBCmd())
	b.AddCommand(newBenchFlowsCmd())
	b.AddCommand(newBenchK8sScaleCmd())
	return b
}

// binDir is where the lumen binaries live: next to this executable.
func binDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}
