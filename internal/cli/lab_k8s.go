package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/lab"
)

func newLabKubectlCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl [KUBECTL ARGS...]",
		Short:              "Run kubectl against a Kubernetes lab (lab up --k8s)",
		PreRunE:            labNeedsRoot,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lab.Kubectl(g.lab, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
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
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return lab.RunAPIProxy(ctx, netns, listen, target, slog.Default())
		},
	}
	c.Flags().StringVar(&netns, "netns", "", "network namespace to listen in")
	c.Flags().StringVar(&listen, "listen", "", "address to listen on, in --netns")
	c.Flags().StringVar(&target, "target", "", "address to forward to, in this namespace")
	return c
}
