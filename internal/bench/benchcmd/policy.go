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

func newBenchPolicyCmd() *cobra.Command {
	o := bench.DefaultPolicyOptions
	c := &cobra.Command{
		Use:   "policy",
		Short: "Policy to BPF map time, per-packet enforcement cost against an empty program, and engine memory",
		Long: `policy generates RULES policy rules (CiliumNetworkPolicy and NetworkPolicy, a
mix of L3 and L4 peers, port ranges, entities, CIDR sets and denies) that all
select one endpoint, over IDENTITIES identities, and measures in one run:

  - the time from the decoded policies to the endpoint's entries in the BPF
    policy map of a real datapath (loaded on a private bpffs in a throwaway
    network namespace): engine preparation, Compute and PolicyMap.Sync, the
    median of ITERATIONS builds; and the same for an update of one rule;
  - the per-packet cost of the pod programs with and without enforcement,
    for new and established connections, against an empty program (the
    method is printed with the figures; a new connection costs mostly its
    conntrack entry, so a denied one, which gets none, can cost less than
    an allowed one without policy);
  - the heap the policy engine keeps alive.

Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			rep, err := bench.PolicyBench(o)
			if err != nil {
				return err
			}
			if asJSON {
				return cli.PrintJSON(os.Stdout, rep)
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
			fmt.Printf("Endpoint selected by %d rules, %d identities: %d policy entries, %d map entries (agent capacity %d per endpoint)\n\n",
				rep.Rules, rep.Identities, rep.Entries, rep.MapEntries, rep.MaxPerEntry)
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "POLICY TO MAP (median of %d)\tMS\tMIN MS\n", rep.Iterations)
			for _, p := range rep.Build {
				fmt.Fprintf(w, "%s\t%s\t%s\n", p.Name, ms(p.Median), ms(p.Min))
			}
			w.Flush()
			for _, p := range rep.Build {
				switch p.Name {
				case bench.PolicySetToMap:
					fmt.Printf("policy set -> map: %s ms (goal < 50 ms; Cilium reports < 600 ms for this size)\n", ms(p.Median))
				case bench.PolicyMapWrite:
					fmt.Printf("map write: %.2f us per entry (one syscall each)\n", float64(p.Median.Nanoseconds())/1000/float64(max(rep.MapEntries, 1)))
				}
			}

			fmt.Println()
			w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PACKET PATH\tNS/PACKET (MEDIAN)\tEMPTY PROGRAM\tRATIO\tABOVE EMPTY\tMEAN\tEMPTY MEAN")
			for _, p := range rep.Packets {
				fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2fx\t%.0f\t%.0f\t%.0f\n", p.Name, p.Median, p.EmptyMedian, p.Ratio, p.Median-p.EmptyMedian, p.Mean, p.EmptyMean)
			}
			w.Flush()
			fmt.Println()
			w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "WHAT POLICY ADDS (vs the same path without policy)\tNS (MEDIAN)\tNS (MEAN)")
			for _, o := range rep.Overheads {
				fmt.Fprintf(w, "%s\t%.0f\t%.1f\n", o.Name, o.Median, o.Mean)
			}
			w.Flush()
			fmt.Printf("\nmethod: %s\n", rep.PacketNote)

			fmt.Printf("\nPolicy engine memory (decoded policies + engine + endpoint policy, kept alive): %.1f MiB retained, %.1f MiB allocated while building\n",
				float64(rep.Memory.RetainedBytes)/(1<<20), float64(rep.Memory.AllocatedBytes)/(1<<20))
			return nil
		},
	}
	f := c.Flags()
	f.IntVar(&o.Identities, "identities", o.Identities, "pod identities (reserved and CIDR identities come on top)")
	f.IntVar(&o.Rules, "rules", o.Rules, "policy rules selecting the endpoint")
	f.IntVar(&o.Iterations, "iterations", o.Iterations, "policy builds timed (the median is reported)")
	f.IntVar(&o.Packets, "packets", o.Packets, "program runs per packet path (at most 64000)")
	return c
}
