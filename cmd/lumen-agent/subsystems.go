package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/conntrackgc"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/deviceattach"
	hubbleserver "github.com/lumen-net/lumen/internal/hubble/server"
	"github.com/lumen-net/lumen/internal/labelwatch"
	"github.com/lumen-net/lumen/internal/lbsync"
	"github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/policysync"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/status"
)

// newPolicy builds the policy syncer, the only writer of the policy map.
func (a *agent) newPolicy() *policysync.Syncer {
	cfg := a.cfg
	policies := policysync.New(a.tables, a.ids.Allocator(), a.policyMap, a.nodes, policysync.Options{
		MaxEntries:    cfg.PolicyMapMaxEntries,
		Audit:         cfg.PolicyAuditMode,
		KubeAPIServer: cfg.apiServer,
		LocalNodeIPs:  func() []netip.Addr { return validAddrs(a.nodeIPv4, a.nodeIPv6) },
		RemoteNode:    a.nodes.IsRemoteNodeIP,
		HostLabels:    hostLabels(cfg),
		SetHostFlags:  a.dp.SetHostFlags,
		PolicyStatus:  policyStatus(a.kube),
		Metrics:       reconcile.DefaultMetrics,
	}, a.log)
	a.run(runFunc(func(ctx context.Context) error { policies.Run(ctx); return nil }))
	return policies
}

// startEndpoints runs the endpoint manager's policy pulls and the label
// watcher (pod and namespace label changes move endpoints to their new
// identity).
func (a *agent) startEndpoints() {
	a.run(runFunc(func(ctx context.Context) error { a.eps.Run(ctx); return nil }),
		labelwatch.New(a.tables.Pods(), a.tables.Namespaces(), a.ids.Allocator(), a.eps, a.log))
}

// startServices builds the load balancer's syncer (this node's frontends
// and backends), BGP, and the cluster's nodes.
func (a *agent) startServices() (*lbsync.Syncer, *bgp.Subsystem, error) {
	cfg := a.cfg
	lbTables := lbsync.Tables{Services: a.tables.Kind("Service"), EndpointSlices: a.tables.Kind("EndpointSlice"), Pods: a.tables.Pods()}
	services, err := lbsync.New(a.store, lbTables, a.dp, a.nodes, lbsync.Options{
		Maglev: cfg.LBAlgorithm == "maglev", MaglevSize: uint64(cfg.MaglevTableSize), MaglevSeed: cfg.MaglevSeed,
		StateDir: cfg.StateDir,
		// Kubernetes' EndpointSlice controller writes the slices there.
		ControllerSlices: cfg.K8sKubeconfig != "",
		Local: func() loadbalancer.NodeInfo {
			return loadbalancer.NodeInfo{Name: cfg.NodeName, Zone: cfg.Zone, IPs: validAddrs(a.nodeIPv4, a.nodeIPv6)}
		},
	}, a.log)
	if err != nil {
		return nil, nil, err
	}
	bgpCP, err := newBGP(cfg, a.tables, services, a.nodeIPv4, a.nodeIPv6, a.log)
	if err != nil {
		return nil, nil, err
	}
	a.run(runFunc(func(ctx context.Context) error { services.Run(ctx); return nil }), bgpCP,
		runFunc(func(ctx context.Context) error { a.nodes.Run(ctx); return nil }),
		runFunc(func(ctx context.Context) error { return pruneStoreEndpoints(ctx, a.nodes, a.eps, a.log) }))
	return services, bgpCP, nil
}

// attachPrograms puts from_netdev on the host devices (following their
// changes), prunes the links nobody wants any more (devices and pods gone
// while no agent ran) and attaches socket load balancing where a cgroup
// is given.
func (a *agent) attachPrograms() (*deviceattach.Attacher, api.SubsystemStatus, error) {
	cfg := a.cfg
	devs := deviceattach.New(deviceattach.Deps{Datapath: a.dp, Initial: a.devs, Updates: a.devCh, XDP: cfg.LBAcceleration == "native", Log: a.log})
	err := a.dp.PruneLinks(datapath.WantedLinks{
		Endpoint: func(ifindex int) bool { return a.eps.IfIndexes()[ifindex] },
		Device:   devs.Has,
		XDP:      cfg.LBAcceleration == "native",
		Overlay:  a.overlayIndex,
	})
	if err != nil {
		a.log.Warn("pruning links", "err", err)
	}
	a.run(devs, conntrackgc.New(a.dp, a.log))

	sockLB := api.SubsystemStatus{Name: "socket-lb", State: api.StateDisabled, Message: "--socket-lb-cgroup not set: per-packet load balancing only"}
	if cfg.SocketLBCgroup == "" {
		return devs, sockLB, a.dp.DetachSocketLB()
	}
	if err := a.dp.AttachSocketLB(cfg.SocketLBCgroup); err != nil {
		return nil, sockLB, err
	}
	sockLB = api.SubsystemStatus{Name: "socket-lb", State: api.StateOK, Message: "cgroup " + cfg.SocketLBCgroup}
	if cfg.SockHostnsOnly {
		sockLB.Message += " (host namespace only)"
	}
	return devs, sockLB, nil
}

// observe builds the metrics, the Hubble server and the status.
func (a *agent) observe(started time.Time, policies *policysync.Syncer, services *lbsync.Syncer, bgpCP *bgp.Subsystem,
	devs *deviceattach.Attacher, sockLB api.SubsystemStatus) (*status.Aggregator, error) {
	cfg := a.cfg
	reg := metrics.New(a.dp.Counters, func() int { return len(a.eps.List()) })
	if err := reg.Register(append(reconcile.DefaultMetrics.Collectors(), a.tables.Collector())...); err != nil {
		return nil, err
	}
	if err := registerPolicyMetrics(reg, policies); err != nil {
		return nil, err
	}
	hs, err := hubbleserver.New(cfg.hubbleServer(), hubbleserver.Deps{Datapath: a.dp, Registry: reg, Endpoints: a.eps, Nodes: a.nodes,
		Identities: a.ids.Allocator(), Store: a.store, Peers: a.tables.Peers, RemoteEndpoints: a.tables.Endpoints, PodCIDRs: []netip.Prefix{cfg.v4, cfg.v6}, Log: a.log})
	if err != nil {
		return nil, err
	}
	subsystems := []func() api.SubsystemStatus{
		func() api.SubsystemStatus {
			return api.SubsystemStatus{Name: "datapath", State: api.StateOK, Message: "programs loaded, maps pinned"}
		},
		devs.Health,
		func() api.SubsystemStatus {
			return api.SubsystemStatus{Name: "ipam", State: api.StateOK, Message: fmt.Sprintf("%d allocated", len(a.pods.Owners()))}
		},
		func() api.SubsystemStatus { return status.StoreHealth(cfg.KVStore, a.storeMon) },
		a.nodes.Health, a.ids.Health, policies.Health, services.Health, bgpCP.Health,
		func() api.SubsystemStatus { return sockLB },
	}
	if cfg.Routing == "vxlan" {
		subsystems = append(subsystems, func() api.SubsystemStatus {
			return api.SubsystemStatus{Name: "tunnel", State: api.StateOK, Message: "vxlan " + tunnelName}
		})
	}
	st := status.New(status.Deps{
		Node: cfg.NodeName, Version: version, Routing: cfg.Routing, StartedAt: started,
		PodCIDRs: []netip.Prefix{cfg.v4, cfg.v6}, NodeIPs: []netip.Addr{a.nodeIPv4, a.nodeIPv6},
		Devices: devs.Names, Endpoints: func() int { return len(a.eps.List()) }, NotEnforced: policies.NotEnforced,
		Subsystems: subsystems, Registry: reg, KVStore: cfg.KVStore, StoreMonitor: a.storeMon, Log: a.log,
	})
	a.run(hs, st)
	if cfg.PrometheusServeAddr != "" {
		a.run(runFunc(func(ctx context.Context) error {
			return metrics.Serve(ctx, cfg.PrometheusServeAddr, st.MetricsHandler(), a.log)
		}))
	}
	return st, nil
}
