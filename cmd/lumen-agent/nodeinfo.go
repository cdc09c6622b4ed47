package main

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/devices"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/policysync"
)

// hostLabels are the labels of the host endpoint, which nodeSelector
// rules of CiliumClusterwideNetworkPolicy match.
func hostLabels(cfg *config) map[string]string {
	out := map[string]string{"kubernetes.io/hostname": cfg.NodeName}
	if cfg.Zone != "" {
		out["topology.kubernetes.io/zone"] = cfg.Zone
	}
	for k, v := range cfg.nodeLabels {
		out[k] = v
	}
	return out
}

func validAddrs(as ...netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

func validPrefixes(ps ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// nodeIPs picks the node's addresses: the first global IPv4 and IPv6 of the
// selected devices.
func nodeIPs(devs []devices.Device) (v4, v6 netip.Addr) {
	for _, d := range devs {
		for _, a := range d.GlobalAddrs() {
			if a.Is4() && !v4.IsValid() {
				v4 = a
			}
			if a.Is6() && !v6.IsValid() {
				v6 = a
			}
		}
	}
	return
}

func deviceMTU(devs []devices.Device) int {
	mtu := 0
	for _, d := range devs {
		if mtu == 0 || (d.MTU > 0 && d.MTU < mtu) {
			mtu = d.MTU
		}
	}
	if mtu == 0 {
		mtu = 1500
	}
	return mtu
}

// pruneEndpointMap removes map entries of endpoints that no longer exist.
func pruneEndpointMap(dp *datapath.Datapath, keep map[netip.Addr]bool) error {
	have, err := dp.ListEndpoints()
	if err != nil {
		return err
	}
	for ip := range have {
		if !keep[ip] {
			if err := dp.DeleteEndpoint(ip); err != nil {
				return err
			}
		}
	}
	return nil
}

// pruneStoreEndpoints deletes this node's endpoints in the store that it no
// longer holds (deleted while no agent ran).
func pruneStoreEndpoints(ctx context.Context, nodes *node.Manager, eps *endpoint.Manager, log *slog.Logger) error {
	keep := map[string]bool{}
	for _, ep := range eps.List() {
		keep[ep.ContainerID] = true
	}
	if err := nodes.PruneEndpoints(ctx, keep); err != nil {
		log.Warn("pruning stale endpoints in the store", "err", err)
	}
	return nil
}

// policyStatus publishes policy warnings in Kubernetes mode (nil otherwise).
func policyStatus(kube *k8s.Store) func(context.Context, string, []string) error {
	if kube == nil {
		return nil
	}
	return kube.SetPolicyStatus
}

// registerPolicyMetrics exports the syncer's counters.
func registerPolicyMetrics(reg *metrics.Registry, policies *policysync.Syncer) error {
	return reg.Register(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lumen_policy_map_overflow_total",
			Help: "Endpoint policy computations that exceeded --policy-map-max-entries (the endpoint then denies all traffic).",
		}, func() float64 { return float64(policies.Overflows.Load()) }),
		// Cilium: policy_import_errors_total; plus the current count.
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lumen_policy_import_errors_total",
			Help: "Policy object versions that could not be enforced as written (unsupported or malformed parts fail closed).",
		}, func() float64 { return float64(policies.ImportErrors.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lumen_policy_not_enforced",
			Help: "Policies in force that Lumen does not enforce as written (their unsupported or malformed parts deny).",
		}, func() float64 { return float64(len(policies.NotEnforced())) }),
	)
}
