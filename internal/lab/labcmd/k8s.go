package labcmd

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/cli"
	"github.com/lumen-net/lumen/internal/lab"
)

func newLabKubectlCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl [KUBECTL ARGS...]",
		Short:              "Run kubectl against a Kubernetes lab (lab up --k8s)",
		PreRunE:            labNeedsRoot,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flag parsing is off so kubectl gets its own flags; pick out
			// --lab, which the root command would otherwise have parsed.
			name := cli.LabName()
			var rest []string
			for i := 0; i < len(args); i++ {
				switch a := args[i]; {
				case a == "--lab" && i+1 < len(args):
					name = args[i+1]
					i++
				case strings.HasPrefix(a, "--lab="):
					name = strings.TrimPrefix(a, "--lab=")
				default:
					rest = append(rest, a)
				}
			}
			return lab.Kubectl(name, rest, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

func newLabAPIProxyCmd() *cobra.Command {
	var netns, listen, target string
	c := &cobra.Command{
		Use:    "apiproxy --netns NS --listen ADDR --target ADDR",
		Short:  "Forward the lab's API server address to the control plane (started by lab up --k8s)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if netns == "" || listen == "" || target == "" {
				return fmt.Errorf("--netns, --listen and --target are required")
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			return lab.RunAPIProxy(ctx, netns, listen, target, slog.Default())
		},
	}
	c.Flags().StringVar(&netns, "netns", "", "network namespace to listen in")
	c.Flags().StringVar(&listen, "listen", "", "address to listen on, in --netns")
	c.Flags().StringVar(&target, "target", "", "address to forward to, in this namespace")
	return c
}
