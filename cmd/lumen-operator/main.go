// Command lumen-operator runs the cluster-wide jobs of Lumen in Kubernetes
// mode (one per cluster): pod CIDR allocation to CiliumNodes from the
// cluster pools, CiliumEndpointSlice batching, and garbage collection of
// unused CiliumIdentities. See internal/operator.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/operator"
)

type flags struct {
	kubeconfig              string
	v4CIDRs, v6CIDRs        []string
	v4Mask, v6Mask          int
	promAddr                string
	logLevel                string
	enableCES               bool
	cesMax                  int
	cesMode                 string
	cesInterval             time.Duration
	cesQPS                  float64
	cesBurst                int
	gcInterval, gcHeartbeat time.Duration
	leader                  leaderFlags
	configDir               string
}

func newCommand() *cobra.Command {
	d := operator.DefaultConfig()
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "lumen-operator",
		Short: "Cluster-wide jobs of Lumen: pod CIDRs for nodes, CiliumEndpointSlices, identity garbage collection",
		Long: `lumen-operator runs once per cluster, next to the API server:

  - gives every CiliumNode without spec.ipam.podCIDRs one CIDR per family
    from the cluster pools (--cluster-pool-*), and takes it back when the
    CiliumNode is deleted. Defaults match the lab's address plan:
    10.200.0.0/16 in /24s and fd00:10:200::/48 in /64s. An empty
    --cluster-pool-ipv6-cidr (or ipv4) turns that family off;
  - with --enable-cilium-endpoint-slice, batches the CiliumEndpoints of each
    namespace into CiliumEndpointSlices, which agents then watch instead of
    every CiliumEndpoint;
  - deletes CiliumIdentities no CiliumEndpoint has used for
    --identity-heartbeat-timeout.

Every job rebuilds its state from the API server at start: restarting the
operator allocates nothing twice and duplicates no endpoint.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigDir(cmd.Flags(), f.configDir); err != nil {
				return err
			}
			cfg, level, err := f.config()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(log)
			return run(cmd.Context(), f, cfg, log)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: the in-cluster service account)")
	fs.StringSliceVar(&f.v4CIDRs, "cluster-pool-ipv4-cidr", []string{operator.DefaultIPv4Pool}, "IPv4 pools node pod CIDRs come from, comma-separated (empty: no IPv4 allocation)")
	fs.IntVar(&f.v4Mask, "cluster-pool-ipv4-mask-size", d.IPv4MaskSize, "prefix length of each node's IPv4 pod CIDR")
	fs.StringSliceVar(&f.v6CIDRs, "cluster-pool-ipv6-cidr", []string{operator.DefaultIPv6Pool}, "IPv6 pools node pod CIDRs come from, comma-separated (empty: no IPv6 allocation)")
	fs.IntVar(&f.v6Mask, "cluster-pool-ipv6-mask-size", d.IPv6MaskSize, "prefix length of each node's IPv6 pod CIDR")
	fs.BoolVar(&f.enableCES, "enable-cilium-endpoint-slice", false, "batch CiliumEndpoints into CiliumEndpointSlices")
	fs.IntVar(&f.cesMax, "ces-max-ciliumendpoints-per-ces", d.CESMaxPerSlice, "most CiliumEndpoints in one CiliumEndpointSlice")
	fs.StringVar(&f.cesMode, "ces-slice-mode", d.CESSliceMode, "how endpoints are grouped: identity (endpoints of one identity together, Cilium 1.11's default) or fcfs (any slice of the namespace with room)")
	fs.DurationVar(&f.cesInterval, "ces-sync-interval", d.CESSyncInterval, "how long endpoint changes are batched before the changed slices are written (each at most once per interval)")
	fs.Float64Var(&f.cesQPS, "ces-write-qps-limit", d.CESWriteQPS, "most CiliumEndpointSlice writes per second")
	fs.IntVar(&f.cesBurst, "ces-write-qps-burst", d.CESWriteBurst, "burst of CiliumEndpointSlice writes above the limit")
	fs.DurationVar(&f.gcInterval, "identity-gc-interval", d.IdentityGCInterval, "how often unused CiliumIdentities are looked for (0 disables)")
	fs.DurationVar(&f.gcHeartbeat, "identity-heartbeat-timeout", d.IdentityHeartbeatTimeout, "how long an identity must be unused (and exist) before it is deleted")
	fs.StringVar(&f.promAddr, "prometheus-serve-addr", "", "address serving /metrics (lumen_operator_*) and /healthz, e.g. :9963 (empty: none)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.configDir, "config-dir", "", "directory with one file per key (the mounted lumen-config ConfigMap, as Cilium's); flags win")
	f.leader.flags(fs)
	return cmd
}

// config turns the flags into the operator's configuration; errors name
// the flag and the value.
func (f *flags) config() (operator.Config, slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return operator.Config{}, level, fmt.Errorf("log-level: invalid value %q: want debug, info, warn or error", f.logLevel)
	}
	cfg := operator.DefaultConfig()
	var err error
	if cfg.IPv4Pools, err = operator.ParsePools(operator.IPv4, "cluster-pool-ipv4-cidr", f.v4CIDRs, "cluster-pool-ipv4-mask-size", f.v4Mask); err != nil {
		return cfg, level, err
	}
	if cfg.IPv6Pools, err = operator.ParsePools(operator.IPv6, "cluster-pool-ipv6-cidr", f.v6CIDRs, "cluster-pool-ipv6-mask-size", f.v6Mask); err != nil {
		return cfg, level, err
	}
	cfg.IPv4MaskSize, cfg.IPv6MaskSize = f.v4Mask, f.v6Mask
	cfg.EnableCES, cfg.CESMaxPerSlice, cfg.CESSliceMode = f.enableCES, f.cesMax, f.cesMode
	cfg.CESSyncInterval, cfg.CESWriteQPS, cfg.CESWriteBurst = f.cesInterval, f.cesQPS, f.cesBurst
	cfg.IdentityGCInterval, cfg.IdentityHeartbeatTimeout = f.gcInterval, f.gcHeartbeat
	if err := f.leader.validate(); err != nil {
		return cfg, level, err
	}
	if f.promAddr != "" {
		if _, _, err := net.SplitHostPort(f.promAddr); err != nil {
			return cfg, level, fmt.Errorf("prometheus-serve-addr: invalid value %q: want host:port or :port", f.promAddr)
		}
	}
	return cfg, level, cfg.Validate()
}

func run(ctx context.Context, f *flags, cfg operator.Config, log *slog.Logger) error {
	clients, err := k8s.NewClients(f.kubeconfig)
	if err != nil {
		return err
	}
	op, err := operator.New(clients, cfg, log)
	if err != nil {
		return err
	}
	if f.promAddr != "" {
		ln, err := net.Listen("tcp", f.promAddr)
		if err != nil {
			return fmt.Errorf("prometheus-serve-addr %q: %w", f.promAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", op.MetricsHandler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			select {
			case <-op.Ready():
				fmt.Fprintln(w, "ok")
			default:
				if f.leader.enabled && !f.leader.leading.Load() {
					fmt.Fprintln(w, "ok: standby (another replica leads)")
					return
				}
				http.Error(w, "starting", http.StatusServiceUnavailable)
			}
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server failed", "err", err)
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	return f.leader.whileLeader(ctx, clients, log, op.Run)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lumen-operator:", err)
		os.Exit(2)
	}
}
