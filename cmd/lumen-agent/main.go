// Command lumen-agent runs on every node: it loads Lumen's eBPF datapath,
// keeps its maps, routes and neighbours equal to the desired state, and
// serves the node's API. run builds the agent (agent.go, subsystems.go)
// and runs every subsystem in one errgroup.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/apiserver"
)

const version = "0.1.0-dev"

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lumen-agent:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.level}))
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

// run builds the agent, then runs its subsystems and the API until ctx
// ends or one of them fails; it returns once every one has returned.
func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	started := time.Now().UTC()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	// Everything built below stops with ctx: the errgroup's, cancelled on
	// the first failure, and on return when building failed.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	a := &agent{cfg: cfg, log: log}
	defer a.close() // after g.Wait: the subsystems use what it closes
	if err := a.loadDatapath(ctx); err != nil {
		return err
	}
	if err := a.connectStore(ctx); err != nil {
		return err
	}
	if err := a.buildCluster(); err != nil {
		return err
	}
	policies := a.newPolicy()
	if err := a.restoreEndpoints(ctx, policies); err != nil {
		return err
	}
	a.run(a.ids)
	a.startEndpoints()
	services, bgpCP, err := a.startServices()
	if err != nil {
		return err
	}
	devs, sockLB, err := a.attachPrograms()
	if err != nil {
		return err
	}
	st, err := a.observe(started, policies, services, bgpCP, devs, sockLB)
	if err != nil {
		return err
	}
	h := apiserver.Handler(&apiserver.Backend{Status: st.Status, Endpoints: a.eps, IPAM: a.pods, MTU: a.mtu, Metrics: st.MetricsHandler(),
		Log: log, Datapath: a.dp, Policy: a.policyMap, Services: services.Services, BGPPeers: bgpCP.Peers, BGPRoutes: bgpCP.Routes,
		Explain: func(ctx context.Context, req *api.ExplainRequest) (*api.Explanation, error) {
			return policies.Explain(ctx, cfg.NodeName, req, a.dp.IdentityOf)
		},
	})
	for _, r := range a.runs {
		g.Go(func() error { return r.Run(ctx) })
	}
	sock := filepath.Join(cfg.StateDir, "agent.sock")
	log.Info("agent ready", "node", cfg.NodeName, "socket", sock, "routing", cfg.Routing, "devices", devs.Names(), "endpoints", len(a.eps.List()))
	g.Go(func() error { return apiserver.Serve(ctx, sock, h) })
	return g.Wait()
}
