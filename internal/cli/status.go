package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
)

func newStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's health, subsystem by subsystem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			st, err := client().Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, st)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Node:\t%s\n", st.Node)
			fmt.Fprintf(w, "Routing:\t%s\n", st.Routing)
			fmt.Fprintf(w, "Node IPs:\t%s\n", strings.Join(st.NodeIPs, ", "))
			fmt.Fprintf(w, "Pod CIDRs:\t%s\n", strings.Join(st.PodCIDRs, ", "))
			fmt.Fprintf(w, "Devices:\t%s\n", strings.Join(st.Devices, ", "))
			fmt.Fprintf(w, "Endpoints:\t%d\n", st.Endpoints)
			fmt.Fprintf(w, "Policies not enforced:\t%d\n", len(st.PoliciesNotEnforced))
			for _, p := range st.PoliciesNotEnforced {
				fmt.Fprintf(w, "\t  %s\n", strings.ReplaceAll(p, "\n", "\n\t  "))
			}
			for _, s := range st.Subsystems {
				msg := s.State
				if s.Message != "" {
					msg += "  " + s.Message
				}
				fmt.Fprintf(w, "%s:\t%s\n", s.Name, msg)
			}
			w.Flush()
			if !st.Healthy() {
				return ExitError{Code: 1}
			}
			return nil
		},
	}
}

func newEndpointCmd() *cobra.Command {
	ep := &cobra.Command{Use: "endpoint", Aliases: []string{"endpoints", "ep"}, Short: "Inspect the node's endpoints"}
	ep.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List endpoints: id, pod, namespace, IPs, identity, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			eps, err := client().Endpoints(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return PrintJSON(os.Stdout, eps)
			}
			return printEndpoints(os.Stdout, eps)
		},
	})
	return ep
}

// printEndpoints writes the endpoint table, then every endpoint's policy
// warnings and errors (they name what a policy could not resolve).
func printEndpoints(out io.Writer, eps []api.Endpoint) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPOD\tNAMESPACE\tIPV4\tIPV6\tIDENTITY\tSTATE\tPOLICY")
	var notes []string
	for _, e := range eps {
		pol := "-"
		switch {
		case e.Policy.Error != "":
			pol = "error"
		case len(e.Policy.Warnings) > 0:
			pol = fmt.Sprintf("%d warning(s)", len(e.Policy.Warnings))
		case e.Policy.IngressEnforced || e.Policy.EgressEnforced:
			pol = "ok"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, Dash(e.PodName), Dash(e.Namespace), Dash(e.IPv4), Dash(e.IPv6), e.Identity, e.State, pol)
		if e.Policy.Error != "" {
			notes = append(notes, fmt.Sprintf("endpoint %d: policy error: %s", e.ID, e.Policy.Error))
		}
		for _, x := range e.Policy.Warnings {
			notes = append(notes, fmt.Sprintf("endpoint %d: policy warning: %s", e.ID, x))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(out)
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(out, n); err != nil {
			return err
		}
	}
	return nil
}

func newMetricsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "metrics",
		Short: "Print the agent's Prometheus metrics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := client().Raw(context.Background(), "/metrics")
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(b)
			return err
		},
	}
}

// Dash shows an empty value as "-" in tables.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
