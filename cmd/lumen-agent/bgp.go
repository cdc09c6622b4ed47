package main

// BGP: the embedded speaker announcing this node's pod CIDRs and the
// addresses of selected LoadBalancer services to the data centre's
// routers (internal/bgp).

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/lbsync"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// bgpConfig holds the agent's BGP settings (flags and YAML keys): Cilium
// 1.11's ConfigMap form with its announce flags, or Cilium's BGP control
// plane following CiliumBGPPeeringPolicy.
type bgpConfig struct {
	BGPConfigPath         string `json:"bgp-config-path"`
	BGPAnnouncePodCIDR    bool   `json:"bgp-announce-pod-cidr"`
	BGPAnnounceLBIP       bool   `json:"bgp-announce-lb-ip"`
	EnableBGPControlPlane bool   `json:"enable-bgp-control-plane"`
}

func (b *bgpConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&b.BGPConfigPath, "bgp-config-path", b.BGPConfigPath, "Cilium 1.11 BGP ConfigMap (peers, address-pools) to peer with; re-read when it changes")
	fs.BoolVar(&b.BGPAnnouncePodCIDR, "bgp-announce-pod-cidr", b.BGPAnnouncePodCIDR, "with --bgp-config-path: announce this node's pod CIDRs")
	fs.BoolVar(&b.BGPAnnounceLBIP, "bgp-announce-lb-ip", b.BGPAnnounceLBIP, "with --bgp-config-path: announce LoadBalancer addresses in the bgp address pools")
	fs.BoolVar(&b.EnableBGPControlPlane, "enable-bgp-control-plane", b.EnableBGPControlPlane, "peer as the CiliumBGPPeeringPolicy selecting this node says (from the kvstore)")
}

func (b *bgpConfig) validate(kvstoreSet bool) error {
	if b.BGPConfigPath != "" && b.EnableBGPControlPlane {
		return errors.New("bgp-config-path, enable-bgp-control-plane: choose one (the ConfigMap form or CiliumBGPPeeringPolicy)")
	}
	if b.EnableBGPControlPlane && !kvstoreSet {
		return errors.New("enable-bgp-control-plane: CiliumBGPPeeringPolicy objects live in the kvstore: set --kvstore")
	}
	if b.BGPConfigPath == "" {
		if b.BGPAnnouncePodCIDR || b.BGPAnnounceLBIP {
			return errors.New("bgp-announce-pod-cidr, bgp-announce-lb-ip: need --bgp-config-path")
		}
		return nil
	}
	if _, err := bgp.LoadConfigMap(b.BGPConfigPath); err != nil {
		return fmt.Errorf("bgp-config-path: %w", err)
	}
	return nil
}

// newBGP builds the BGP control plane the flags ask for (off when none
// does), announcing from services and reading the tables.
func newBGP(cfg *config, tables *clusterstate.Tables, services *lbsync.Syncer, nodeIPv4, nodeIPv6 netip.Addr, log *slog.Logger) (*bgp.Subsystem, error) {
	opts := bgp.Options{
		ConfigFile:   cfg.BGPConfigPath,
		Announce:     bgp.AnnounceOptions{PodCIDR: cfg.BGPAnnouncePodCIDR, LBIP: cfg.BGPAnnounceLBIP},
		ControlPlane: cfg.EnableBGPControlPlane,
	}
	// GoBGP's own log only at warning level, unless the agent debugs.
	level := &slog.LevelVar{}
	level.Set(slog.LevelWarn)
	if cfg.level <= slog.LevelDebug {
		level.Set(slog.LevelInfo)
	}
	var policies *state.Table[*resource.Object]
	if opts.ControlPlane {
		policies = tables.Kind(bgp.PolicyKind)
	}
	s, err := bgp.NewSubsystem(opts, bgp.Sources{
		NodeLabels: hostLabels(cfg),
		NodeIPs:    func() (netip.Addr, netip.Addr) { return nodeIPv4, nodeIPv6 },
		PodCIDRs:   validPrefixes(cfg.v4, cfg.v6),
		Frontends:  services.Services,
		// Until lbsync has read the store, its frontends are incomplete.
		Ready:    func() bool { return !strings.HasPrefix(services.Health().Message, "waiting") },
		Services: tables.Kind("Service"),
		Policies: policies,
	}, log.With("subsys", "bgp"), level)
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	return s, nil
}
