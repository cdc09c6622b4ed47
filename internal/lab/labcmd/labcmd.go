// Package labcmd is `lumen lab`: the commands that build, inspect and tear
// down the local lab. cmd/lumen adds them to the user commands of cli.
package labcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/cli"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// New is `lumen lab`.
func New() *cobra.Command {
	c := &cobra.Command{
		Use:   "lab",
		Short: "Run a local multi-node lab in network namespaces",
		Long: `The lab builds nodes and pods out of network namespaces on this machine:
one lumen-agent per node, an embedded store, pods plugged in through lumen-cni,
and an echo server in every pod. It never touches the host's network namespace.
The lab is chosen with --lab or LUMEN_LAB (default "lumen").`,
	}
	c.AddCommand(
		newLabUpCmd(),
		newLabDownCmd(),
		newLabKubectlCmd(),
		newLabAPIProxyCmd(),
		newLabStatusCmd(),
		newLabProbeCmd(),
		newLabExecCmd(),
		newLabRestartAgentCmd(),
		newLabKVStoreCmd(),
		newLabServeCmd(),
	)
	return c
}

// labNeedsRoot is the persistent pre-run of the lab commands that create or
// enter namespaces.
func labNeedsRoot(cmd *cobra.Command, _ []string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lumen %s needs root: the lab creates and enters network namespaces", cmd.CommandPath()[len("lumen "):])
	}
	return nil
}

func labLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func newLabUpCmd() *cobra.Command {
	var file, routing, binDir string
	var keep, k8s, ces, k8sKVStore, kubelet bool
	var agentTimeout, readyTimeout time.Duration
	c := &cobra.Command{
		Use:     "up -f TOPOLOGY",
		PreRunE: labNeedsRoot,
		Short:   "Build the lab described by a topology file (replacing a lab of the same name)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kubelet {
				return runRealNode(cmd, "up")
			}
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			if file == "" {
				return fmt.Errorf("missing -f TOPOLOGY (see examples/lab/topology.yaml)")
			}
			if err := labpath.ValidateName(cli.LabName()); err != nil {
				return err
			}
			topo, err := lab.LoadTopology(file)
			if err != nil {
				return err
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			var kube *lab.K8sOptions
			if k8s || ces || k8sKVStore {
				kube = &lab.K8sOptions{EndpointSlices: ces, KVStoreIdentities: k8sKVStore}
			}
			_, err = lab.Up(ctx, lab.UpOptions{
				Lab: cli.LabName(), Topology: topo, Routing: routing, BinDir: binDir,
				Keep: keep, Log: labLogger(), AgentTimeout: agentTimeout, ReadyTimeout: readyTimeout,
				K8s: kube,
			})
			if err != nil {
				return fmt.Errorf("lab %s: %w", cli.LabName(), err)
			}
			return printLabStatus(ctx, asJSON)
		},
	}
	f := c.Flags()
	f.StringVarP(&file, "file", "f", "", "topology file (YAML)")
	f.StringVar(&routing, "routing", "", "routing mode: native or vxlan (default: the topology's, else native)")
	f.StringVar(&binDir, "bin-dir", "", "directory holding lumen-agent and lumen-cni (default: next to lumen)")
	f.BoolVar(&keep, "keep", false, "keep a half-built lab when up fails, for debugging")
	f.BoolVar(&k8s, "k8s", false, "run a real Kubernetes control plane (hack/build-k8s.sh) and the agents in Kubernetes mode; use `lumen lab kubectl`")
	f.BoolVar(&kubelet, "kubelet", false, "real nodes instead of a topology: kubelet + containerd per node namespace, Lumen installed by its Helm chart (hack/realnode.sh); kubectl with `hack/realnode.sh kubectl`")
	f.BoolVar(&ces, "ces", false, "with --k8s: CiliumEndpointSlice mode (lumen-operator batches endpoints)")
	f.BoolVar(&k8sKVStore, "k8s-kvstore", false, "with --k8s: identities, endpoints and nodes in the lab's etcd (identity-allocation-mode=kvstore)")
	f.DurationVar(&agentTimeout, "agent-timeout", 90*time.Second, "how long to wait for each agent to become healthy")
	f.DurationVar(&readyTimeout, "ready-timeout", 90*time.Second, "how long to wait for pods to reach each other (negative: do not wait)")
	return c
}

func newLabDownCmd() *cobra.Command {
	var kubelet bool
	c := &cobra.Command{
		Use:     "down",
		PreRunE: labNeedsRoot,
		Short:   "Stop the lab's processes and delete its namespaces and state (idempotent)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kubelet {
				return runRealNode(cmd, "down")
			}
			if err := lab.Down(cli.LabName(), labLogger()); err != nil {
				return fmt.Errorf("lab %s: %w", cli.LabName(), err)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&kubelet, "kubelet", false, "the real-node lab (lab up --kubelet)")
	return c
}

func newLabStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the lab's nodes, agents and pods",
		PreRunE: labNeedsRoot,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			return printLabStatus(cmd.Context(), asJSON)
		},
	}
}

func printLabStatus(ctx context.Context, asJSON bool) error {
	r, err := lab.Status(ctx, cli.LabName())
	if err != nil {
		return err
	}
	if asJSON {
		return cli.PrintJSON(os.Stdout, r)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	storeState := "not running"
	if r.Store.Running {
		storeState = "running"
	}
	fmt.Fprintf(w, "Lab:\t%s\n", r.Name)
	fmt.Fprintf(w, "Routing:\t%s\n", r.Routing)
	fmt.Fprintf(w, "Store:\t%s (pid %d, %s)\n", r.Store.URL, r.Store.PID, storeState)
	if rr := r.Relay; rr != nil {
		relayState := "not running"
		if rr.Running {
			relayState = "running"
		}
		fmt.Fprintf(w, "Hubble relay:\t%s (pid %d, %s)\n", rr.Socket, rr.PID, relayState)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "NODE\tZONE\tNODE IPS\tPOD CIDRS\tAGENT PID\tHEALTH\tENDPOINTS")
	for _, n := range r.Nodes {
		health := n.Agent.Health
		if n.Agent.Message != "" {
			health += " (" + n.Agent.Message + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%d\n", n.Name, cli.Dash(n.Zone), strings.Join(n.NodeIPs, ","),
			strings.Join(n.PodCIDRs, ","), n.Agent.PID, health, n.Agent.Endpoints)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "POD\tNAMESPACE\tNODE\tIPV4\tIPV6\tPORTS\tLABELS")
	for _, p := range r.Pods {
		ports := make([]string, len(p.Ports))
		for i, pt := range p.Ports {
			ports[i] = pt.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Namespace, p.Node, cli.Dash(p.IPv4), cli.Dash(p.IPv6),
			cli.Dash(strings.Join(ports, ",")), cli.Dash(formatLabels(p.Labels)))
	}
	if len(r.Clients) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "CLIENT\tNETNS\tIPS")
		for _, c := range r.Clients {
			fmt.Fprintf(w, "client/%s\t%s\t%s\n", c.Name, c.NetNS, strings.Join(c.IPs, ","))
		}
	}
	return w.Flush()
}

func formatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func newLabProbeCmd() *cobra.Command {
	var matrix bool
	var family string
	var timeout time.Duration
	var parallel int
	c := &cobra.Command{
		Use:     "probe FROM TO:PORT/PROTO | --matrix",
		PreRunE: labNeedsRoot,
		Short:   "Check connectivity from a pod (exit 0 when connected, 1 when not)",
		Long: `probe connects from inside pod FROM to TO, sends a payload and expects the
pod's echo server to send it back.

FROM is a pod, as NAMESPACE/NAME or a NAME unique in the lab, or an external
client of the topology as client/NAME. TO is a pod, an
IPv4 address or an IPv6 address in brackets: web:80/tcp, 10.200.1.5:80/udp,
[fd00:10:200:1::5]:80/tcp. For a pod, --family picks its IPv4 (4, default) or
IPv6 (6) address, or both (all).

--matrix probes from every pod to every other pod on every port it serves.
SCTP probes on a kernel without SCTP are reported as unsupported.`,
		Example: `  lumen lab probe shop/frontend catalog:80/tcp
  lumen lab probe frontend '[fd00:10:200:2::3]:80/udp'
  lumen lab probe --matrix --family all -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := cli.JSONOutput()
			if err != nil {
				return err
			}
			families, err := lab.ParseFamilies(family)
			if err != nil {
				return err
			}
			if matrix && len(args) != 0 {
				return fmt.Errorf("--matrix takes no arguments")
			}
			if !matrix && len(args) != 2 {
				return fmt.Errorf("want FROM TO:PORT/PROTO, or --matrix")
			}
			st, err := lab.LoadState(cli.LabName())
			if err != nil {
				return err
			}
			var specs []lab.ProbeSpec
			if matrix {
				specs = lab.MatrixSpecs(st, families)
			} else {
				target, err := lab.ParseTarget(args[1])
				if err != nil {
					return err
				}
				if !target.IsPod && cmd.Flags().Changed("family") {
					return fmt.Errorf("--family applies only when TO is a pod")
				}
				if client, ok := lab.ClientRef(st, args[0]); ok {
					// An external client: outside the cluster, no socket LB.
					if specs, err = lab.ClientProbeSpecs(st, client, target, families); err != nil {
						return err
					}
				} else {
					if specs, err = lab.ProbeSpecsFor(st, args[0], target, families); err != nil {
						return err
					}
					// Probe from the source pod's node cgroup: its sockets get that
					// node's socket load balancing, like the pod's own.
					if err := joinPodCgroup(st, args[0]); err != nil {
						return err
					}
				}
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			results := lab.RunProbes(ctx, specs, timeout, parallel)
			ok := true
			for _, r := range results {
				// Unsupported probes fail a single probe, not the matrix.
				if !r.Connected && (!matrix || !r.Unsupported) {
					ok = false
				}
			}
			if asJSON {
				if results == nil {
					results = []lab.ProbeResult{}
				}
				if err := cli.PrintJSON(os.Stdout, results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					fmt.Println(lab.FormatResult(r))
				}
			}
			if !ok {
				return cli.ExitError{Code: 1}
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&matrix, "matrix", false, "probe every pod from every pod on every served port")
	f.StringVar(&family, "family", "4", "address family of pod targets: 4, 6 or all")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "time to wait for each connection and its echo")
	f.IntVar(&parallel, "parallel", 16, "probes to run at the same time")
	return c
}

// joinPodCgroup moves this process into the cgroup of the pod's node.
func joinPodCgroup(st *lab.State, ref string) error {
	pod, err := st.FindPod(ref)
	if err != nil {
		return err
	}
	n, err := st.Node(pod.Node)
	if err != nil || n.Cgroup == "" {
		return nil
	}
	return lab.JoinCgroup(n.Cgroup)
}

func newLabExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "exec POD|node/NODE|client/CLIENT -- CMD [ARGS...]",
		PreRunE: labNeedsRoot,
		Short:   "Run a command in a pod's (or a node's) network namespace",
		Example: `  lumen lab exec shop/frontend -- ip addr
  lumen lab exec frontend -- ping -c1 10.200.2.2
  lumen lab exec node/n2 -- ip route`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("want POD -- CMD [ARGS...]")
			}
			st, err := lab.LoadState(cli.LabName())
			if err != nil {
				return err
			}
			nsName, cgroup := "", ""
			pod, err := st.FindPod(args[0])
			if client, ok := lab.ClientRef(st, args[0]); ok {
				c, _ := st.FindClient(client)
				nsName = c.NetNS
			} else if err == nil {
				nsName = pod.NetNS
				if n, nerr := st.Node(pod.Node); nerr == nil {
					cgroup = n.Cgroup
				}
			} else if name, ok := strings.CutPrefix(args[0], "node/"); ok {
				for _, n := range st.Nodes {
					if n.Name == name {
						nsName, cgroup = n.NetNS, n.Cgroup
					}
				}
				if nsName == "" {
					return fmt.Errorf("no node %q in lab %q", name, cli.LabName())
				}
			} else {
				return err
			}
			if cgroup != "" {
				if err := lab.JoinCgroup(cgroup); err != nil {
					return err
				}
			}
			// Replaces this process: stdio, signals and exit status are the command's.
			err = lab.ExecInNS(nsName, args[1:])
			if errors.Is(err, exec.ErrNotFound) {
				// Like a shell: 127 for a command that does not exist.
				fmt.Fprintln(os.Stderr, "Error:", err)
				return cli.ExitError{Code: 127}
			}
			return err
		},
	}
}

func newLabRestartAgentCmd() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:     "restart-agent NODE",
		PreRunE: labNeedsRoot,
		Short:   "Start a node's agent again the way up did (stopping it first if it runs)",
		Hidden:  true,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			p, err := lab.RestartAgent(ctx, cli.LabName(), args[0], timeout, labLogger())
			if err != nil {
				return err
			}
			fmt.Printf("agent of node %s running, pid %d\n", args[0], p.PID)
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 90*time.Second, "how long to wait for the agent to become healthy")
	return c
}

func newLabKVStoreCmd() *cobra.Command {
	var dataDir, listen string
	c := &cobra.Command{
		Use:    "kvstore --data-dir DIR --listen unix:///PATH",
		Short:  "Run the lab's embedded store (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" || listen == "" {
				return fmt.Errorf("--data-dir and --listen are required")
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			return kvstore.Serve(ctx, kvstore.ServerConfig{
				DataDir:   dataDir,
				ClientURL: listen,
				OnReady:   func() { slog.Info("store ready", "url", listen) },
			})
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", "", "etcd data directory")
	c.Flags().StringVar(&listen, "listen", "", "client URL, e.g. unix:///run/lumen-lab/lumen/etcd.sock")
	return c
}

func newLabServeCmd() *cobra.Command {
	var tcp, udp, sctp string
	c := &cobra.Command{
		Use:    "serve [--tcp PORTS] [--udp PORTS] [--sctp PORTS]",
		Short:  "Run a pod's echo server (started by lab up in the pod's namespace)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg lab.ServeConfig
			var err error
			if cfg.TCP, err = lab.ParsePortList(tcp); err != nil {
				return fmt.Errorf("--tcp: %w", err)
			}
			if cfg.UDP, err = lab.ParsePortList(udp); err != nil {
				return fmt.Errorf("--udp: %w", err)
			}
			if cfg.SCTP, err = lab.ParsePortList(sctp); err != nil {
				return fmt.Errorf("--sctp: %w", err)
			}
			ctx, cancel := cli.SignalContext(cmd.Context())
			defer cancel()
			return lab.Serve(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		},
	}
	c.Flags().StringVar(&tcp, "tcp", "", "TCP ports, e.g. 80,81")
	c.Flags().StringVar(&udp, "udp", "", "UDP ports")
	c.Flags().StringVar(&sctp, "sctp", "", "SCTP ports")
	return c
}
