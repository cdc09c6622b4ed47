// Package cli implements the lumen command line.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// globals are the flags every command shares.
type globals struct {
	socket string
	node   string
	lab    string
	output string
}

var g globals

// NewRoot builds the tree of user commands; openLab (nil: none) lets
// `policy explain` name a lab's pods.
func NewRoot(openLab OpenLab) *cobra.Command {
	root := &cobra.Command{
		Use:           "lumen",
		Short:         "eBPF networking, security and observability for containers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", envOr("LUMEN_SOCKET", api.DefaultSocket), "agent API socket")
	pf.StringVar(&g.node, "node", "", "talk to this lab node's agent (instead of --socket)")
	pf.StringVar(&g.lab, "lab", labpath.Name(), "lab name (env LUMEN_LAB)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")

	// The kinds apply, get and delete know, built once here.
	reg := kinds.Registry()
	root.AddCommand(
		newStatusCmd(),
		newEndpointCmd(),
		newMetricsCmd(),
		newApplyCmd(reg),
		newDeleteCmd(reg),
		newGetCmd(reg),
		newBPFCmd(),
		newObserveCmd(),
		newPolicyCmd(reg, openLab),
		newServiceCmd(),
		newBGPCmd(),
	)
	return root
}

// Options are what cmd/lumen adds to the user commands: the tooling
// commands (the lab's and the benchmarks', which live in their own
// packages) and the lab lookup of `policy explain`.
type Options struct {
	Commands []*cobra.Command
	OpenLab  OpenLab
}

// Execute runs the CLI and exits with its status.
func Execute(o Options) {
	root := NewRoot(o.OpenLab)
	root.AddCommand(o.Commands...)
	if err := root.Execute(); err != nil {
		var ec exitCoder
		if asExit(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// exitCoder lets a command pick its exit status without printing an error
// (lab probe exits 1 for "not connected").
type exitCoder interface{ ExitCode() int }

// ExitError ends the CLI with Code and no message.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }
func (e ExitError) ExitCode() int { return e.Code }

func asExit(err error, ec *exitCoder) bool {
	if e, ok := err.(exitCoder); ok {
		*ec = e
		return true
	}
	return false
}

// client returns an API client for the selected agent.
func client() *api.Client {
	if g.node != "" {
		return api.NewClient(labpath.NodeSocket(g.lab, g.node))
	}
	return api.NewClient(g.socket)
}

// LabName is the --lab flag: the lab whose agents and store the commands
// talk to.
func LabName() string { return g.lab }

// SignalContext ends when the user interrupts the command.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// JSONOutput reports whether -o json was asked for; it rejects unknown formats.
func JSONOutput() (bool, error) {
	switch g.output {
	case "json":
		return true, nil
	case "text", "":
		return false, nil
	}
	return false, fmt.Errorf("invalid --output %q: want text or json", g.output)
}

// PrintJSON writes v indented, for -o json.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
