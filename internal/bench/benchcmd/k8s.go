package benchcmd

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/bench/k8sscale"
	"github.com/lumen-net/lumen/internal/cli"
)

func newBenchK8sScaleCmd() *cobra.Command {
	o := k8sscale.DefaultOptions()
	var verbose bool
	c := &cobra.Command{
		Use:   "k8s-scale",
		Short: "Watch events and bytes agents receive under pod churn: CiliumEndpoint vs CiliumEndpointSlice mode",
		Long: `k8s-scale starts a real control plane (hack/build-k8s.sh builds it), applies
the CRDs and creates the CiliumEndpoints of NAMESPACES x DEPLOYMENTS x REPLICAS
pods spread over AGENTS nodes. Then, for each mode in turn:

  - cep: AGENTS simulated agents each watch every CiliumEndpoint;
  - ces: lumen-operator (in-process) batches the endpoints into
    CiliumEndpointSlices and the agents each watch every slice;

while pods are replaced at CHURN-RATE per second for DURATION (a
replacement creates the new pod's CiliumEndpoint, updates its status
STATUS-UPDATES times, and deletes the old one). Churn "rollout" replaces the
pods of one deployment after another, as rolling updates do; "random"
replaces pods anywhere (the hardest case for batching).

Each agent has its own connection; its bytes are counted on the wire (TLS
included). Reported per mode: watch events per second (all agents), Mbps,
bytes per event, the share of writes every agent received, kube-apiserver
CPU, and in CES mode the mean time from an endpoint change to its slice
write. The ratios compare the two modes of this one run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			rep, err := k8sscale.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return cli.PrintJSON(os.Stdout, rep)
			}
			printK8sScale(rep)
			return nil
		},
	}
	f := c.Flags()
	f.IntVar(&o.Agents, "agents", o.Agents, "simulated agents (nodes), each watching with its own connection")
	f.IntVar(&o.Namespaces, "namespaces", o.Namespaces, "namespaces")
	f.IntVar(&o.DeploymentsPerNS, "deployments-per-namespace", o.DeploymentsPerNS, "deployments (one identity each) per namespace")
	f.IntVar(&o.Replicas, "replicas", o.Replicas, "pods per deployment")
	f.Float64Var(&o.ChurnRate, "churn-rate", o.ChurnRate, "pods replaced per second")
	f.StringVar(&o.Churn, "churn", o.Churn, "churn model: rollout or random")
	f.IntVar(&o.StatusUpdates, "status-updates", o.StatusUpdates, "status-only updates of each new CiliumEndpoint (Cilium's agent publishes its state changes)")
	f.DurationVar(&o.Duration, "duration", o.Duration, "churn time per mode")
	f.StringSliceVar(&o.Modes, "modes", o.Modes, "modes to measure, in order: cep, ces")
	f.StringVar(&o.SliceMode, "ces-slice-mode", o.SliceMode, "operator: identity or fcfs")
	f.IntVar(&o.MaxPerSlice, "ces-max-ciliumendpoints-per-ces", o.MaxPerSlice, "operator: most endpoints per slice")
	f.DurationVar(&o.SyncInterval, "ces-sync-interval", o.SyncInterval, "operator: batching interval")
	f.Float64Var(&o.WriteQPS, "ces-write-qps-limit", o.WriteQPS, "operator: slice writes per second")
	f.IntVar(&o.WriteBurst, "ces-write-qps-burst", o.WriteBurst, "operator: slice write burst")
	f.StringVar(&o.Dir, "dir", "", "control plane state directory (default: a temporary one, removed after)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log progress")
	return c
}

func printK8sScale(rep *k8sscale.Report) {
	o := rep.Options
	fmt.Printf("%d agents, %d pods (%d namespaces x %d deployments x %d replicas), churn %g pods/s (%s, %d status updates each), %s per mode\n",
		o.Agents, o.Pods(), o.Namespaces, o.DeploymentsPerNS, o.Replicas, o.ChurnRate, o.Churn, o.StatusUpdates, o.Duration)
	fmt.Printf("operator: %s slicing, %d per slice, %s batching, %g writes/s (burst %d)\n\n", o.SliceMode, o.MaxPerSlice, o.SyncInterval, o.WriteQPS, o.WriteBurst)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MODE\tPODS/S\tWATCHED WRITES\tEVENTS/S\tPER AGENT\tMBPS\tBYTES/EVENT\tDELIVERED\tIN\tRELISTS\tAPISERVER CPU\tSLICE LATENCY")
	for _, r := range rep.Results {
		lat := "-"
		if r.Mode == k8sscale.ModeCES {
			lat = r.SliceLatency.Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%.1f\t%d\t%.0f\t%.1f\t%.2f\t%.0f\t%.1f%%\t%.1fs\t%d\t%.1fs\t%s\n", strings.ToUpper(r.Mode), r.ChurnRate, r.ObjectWrites, r.EventsPerSec, r.EventsPerSecPerAgent,
			r.Mbps, r.BytesPerEvent, 100*r.Delivered, r.DeliveryTime.Seconds(), r.Relists, r.APIServerCPU.Seconds(), lat)
	}
	w.Flush()
	fmt.Printf("(events/s and Mbps per second of churn; DELIVERED: share of writes every agent received, IN: churn start to last event)\n")
	for _, r := range rep.Results {
		if r.DeliveryTime > r.Duration+5*time.Second {
			why := "the API server fell behind"
			if r.Mode == k8sscale.ModeCES {
				why = "the operator's write limit or the API server held it back"
			}
			fmt.Printf("%s mode: delivery took %.0fs for %s of churn: %s (%.0f events/s delivered)\n",
				strings.ToUpper(r.Mode), r.DeliveryTime.Seconds(), r.Duration, why, float64(r.Events)/r.DeliveryTime.Seconds())
		}
		if r.Mode == k8sscale.ModeCES {
			fmt.Printf("\nCES mode: %d CiliumEndpoint writes (%d replacements) became %d slice writes (%d slices at the end)\n", r.CEPWrites, r.Replacements, r.SliceWrites, rep.Slices)
		}
	}
	if rep.EventRatio > 0 {
		fmt.Printf("CES vs CEP: %.2fx fewer watch events, %.2fx fewer bytes (goal >= 2x; Cilium 1.11 at 1000 nodes: %.2fx events %d -> %d/s, %.2fx bytes %.1f -> %.1f Mbps)\n",
			rep.EventRatio, rep.ByteRatio,
			float64(k8sscale.AnchorCEPEventsPerSec)/k8sscale.AnchorCESEventsPerSec, k8sscale.AnchorCEPEventsPerSec, k8sscale.AnchorCESEventsPerSec,
			k8sscale.AnchorCEPMbps/k8sscale.AnchorCESMbps, k8sscale.AnchorCEPMbps, k8sscale.AnchorCESMbps)
	}
}
