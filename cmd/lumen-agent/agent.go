package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/devices"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/ipam"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lbsync"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/podidentity"
	"github.com/lumen-net/lumen/internal/policysync"
)

// agent is what run builds: the parts the subsystems and the API share,
// the subsystems to run, and what to close once they all returned.
type agent struct {
	cfg *config
	log *slog.Logger

	dp                 *datapath.Datapath
	rtCfg              datapath.RuntimeConfig
	devs               []devices.Device
	devCh              <-chan []devices.Device
	nodeIPv4, nodeIPv6 netip.Addr
	mtu, overlayIndex  int
	nw                 *network

	store    kvstore.Store    // nil: a node alone
	storeMon *kvstore.Monitor // etcd answering (nil: no etcd)
	kube     *k8s.Store       // nil: not Kubernetes mode
	// tables are what the agent reads of the cluster, one watch per kind,
	// shared by every subsystem that reads it.
	tables *clusterstate.Tables

	pods      *ipam.IPAM
	ids       *podidentity.Resolver
	nodes     *node.Manager
	policyMap *datapath.PolicyMap
	eps       *endpoint.Manager

	runs    []runner
	closers []func() error
}

// runner is a subsystem: it works until ctx ends, then returns once every
// goroutine it started has.
type runner interface {
	Run(ctx context.Context) error
}

// runFunc makes a function a runner.
type runFunc func(ctx context.Context) error

func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

func (a *agent) run(r ...runner) { a.runs = append(a.runs, r...) }

func (a *agent) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		_ = a.closers[i]()
	}
}

// loadDatapath loads the programs (adopting the pinned maps after a
// restart), finds the node's devices and sets up the tunnel device.
func (a *agent) loadDatapath(ctx context.Context) error {
	cfg := a.cfg
	dp, err := datapath.Load(datapath.Options{BPFFS: filepath.Join(cfg.StateDir, "bpf"), MaglevSize: cfg.MaglevTableSize, EventsRingSize: uint32(cfg.BPFEventsRingSize)})
	if err != nil {
		return err
	}
	a.dp = dp
	a.closers = append(a.closers, dp.Close) // pins stay: the datapath keeps forwarding without us
	cookie, err := datapath.NetnsCookie()
	if err != nil {
		return err
	}
	a.rtCfg = datapath.RuntimeConfig{TraceLevel: cfg.datapathTraceLevel(), SockHostnsOnly: cfg.SockHostnsOnly, HostNetnsCookie: cookie}

	// Devices: the node's external interfaces and addresses.
	filter, err := devices.ParseFilter(cfg.Devices)
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if a.devCh, err = devices.Watch(ctx, devices.WatchConfig{NS: netns.None(), Filter: filter, Logger: a.log}); err != nil {
		return err
	}
	a.devs = <-a.devCh
	a.nodeIPv4, a.nodeIPv6 = nodeIPs(a.devs)
	a.mtu = deviceMTU(a.devs)

	// Tunnel device for --routing=vxlan.
	if a.nw, err = newNetwork(a.log); err != nil {
		return err
	}
	if cfg.Routing == "vxlan" {
		if a.overlayIndex, a.mtu, err = a.nw.ensureVXLAN(a.mtu); err != nil {
			return err
		}
		if err := dp.Attach(datapath.HookFromOverlay, a.overlayIndex); err != nil {
			return err
		}
		a.rtCfg.VXLANIfIndex = uint32(a.overlayIndex)
	} else if err := a.nw.deleteVXLAN(); err != nil {
		return err
	}
	a.rtCfg.NodeIPv4, a.rtCfg.NodeIPv6 = a.nodeIPv4, a.nodeIPv6
	a.rtCfg.DSR = cfg.LBMode == "dsr"
	return dp.SetConfig(a.rtCfg)
}

// connectStore opens the store: etcd (standalone or kvstore mode), the
// Kubernetes API, or none (a node alone; a nil Store, not a nil *Client in
// an interface). In Kubernetes mode it also takes the node's labels and,
// when not given, its pod CIDRs from the API.
func (a *agent) connectStore(ctx context.Context) error {
	cfg := a.cfg
	if cfg.KVStore != "" {
		etcd, err := kvstore.New(cfg.KVStore)
		if err != nil {
			return fmt.Errorf("kvstore: %w", err)
		}
		a.closers = append(a.closers, func() error { etcd.Close(); return nil })
		a.store = etcd
		a.storeMon = kvstore.NewMonitor(etcd)
		a.run(runFunc(func(ctx context.Context) error { a.storeMon.Run(ctx); return nil }))
	}
	var err error
	if cfg.K8sKubeconfig != "" {
		if a.kube, a.store, err = k8sStore(ctx, cfg, a.store, cmp.Or(addrString(a.nodeIPv4), addrString(a.nodeIPv6)), a.log); err != nil {
			return err
		}
		if err := nodeLabelsFromKubernetes(ctx, a.kube, cfg, a.log); err != nil {
			return err
		}
	}
	if !cfg.v4.IsValid() && !cfg.v6.IsValid() {
		pre := node.Node{Name: cfg.NodeName, Zone: cfg.Zone, IPv4: addrString(a.nodeIPv4), IPv6: addrString(a.nodeIPv6), Labels: hostLabels(cfg)}
		if cfg.v4, cfg.v6, err = podCIDRsFromCiliumNode(ctx, a.kube, a.store, pre, a.log); err != nil {
			return err
		}
	}
	a.tables = clusterstate.New(a.store, agentKinds(cfg), a.log)
	a.run(runFunc(func(ctx context.Context) error { a.tables.Run(ctx); return nil }))
	return nil
}

// agentKinds are the resource kinds the agent's controllers read
// (CiliumBGPPeeringPolicies only with the BGP control plane: their CRD
// may not exist otherwise).
func agentKinds(cfg *config) []string {
	kinds := slices.Concat(policysync.KindNames, lbsync.Kinds)
	if cfg.EnableBGPControlPlane {
		kinds = append(kinds, bgp.PolicyKind)
	}
	return kinds
}

// buildCluster builds IPAM, identities, the node manager and the policy
// map.
func (a *agent) buildCluster() error {
	cfg := a.cfg
	var err error
	if a.pods, err = ipam.New(cfg.v4, cfg.v6, filepath.Join(cfg.StateDir, "ipam.json")); err != nil {
		return err
	}
	a.ids = podidentity.New(a.store, a.tables.Identities, a.log)
	if err := a.ids.Allocator().SetStateFile(filepath.Join(cfg.StateDir, "identities.json")); err != nil {
		return err
	}
	local := node.Node{Name: cfg.NodeName, Zone: cfg.Zone, PodCIDRv4: prefixString(cfg.v4), PodCIDRv6: prefixString(cfg.v6),
		IPv4: addrString(a.nodeIPv4), IPv6: addrString(a.nodeIPv6), Labels: hostLabels(cfg)}
	a.nodes = node.New(local, a.store, a.tables.NodeTables(), a.dp, a.nw, cfg.Routing == "vxlan", a.log)
	// Policy map, adopted as the previous agent left it: nothing is flushed
	// until the policies are known again.
	if a.policyMap, err = a.dp.Policy(); err != nil {
		return fmt.Errorf("loading policy map: %w", err)
	}
	return nil
}

// restoreEndpoints builds the endpoint manager, whose endpoints wait on
// policies for their policy, and restores what the previous agent left:
// the datapath first, from local state only (the store may be down).
func (a *agent) restoreEndpoints(ctx context.Context, policies endpoint.Policy) error {
	var err error
	a.eps, err = endpoint.New(a.dp, a.cfg.StateDir, endpoint.Hooks{
		Identity:  a.ids.Resolve,
		Policy:    policies,
		Owns:      a.ownsIPs,
		AddRoute:  a.nw.addEndpointRoute,
		DelRoute:  a.nw.delEndpointRoute,
		Publish:   a.nodes.Publish,
		Unpublish: a.nodes.Unpublish,
	}, a.log)
	if err != nil {
		return err
	}
	gone, err := a.eps.Restore()
	if err != nil {
		return err
	}
	// What this node holds goes back to the store on every listing of it;
	// the allocator never hands out a number held here or announced.
	a.nodes.SetLocalEndpoints(a.eps.List)
	a.ids.Track(ctx, a.eps, a.nodes)
	for _, ep := range gone {
		_, _ = a.pods.Release(ep.ContainerID)
	}
	return pruneEndpointMap(a.dp, a.eps.IPs())
}

// ownsIPs reports whether IPAM gave exactly ips to owner.
func (a *agent) ownsIPs(owner string, ips []netip.Addr) bool {
	addrs, ok := a.pods.Owners()[owner]
	if !ok {
		return false
	}
	for _, ip := range ips {
		if ip != addrs.IPv4 && ip != addrs.IPv6 {
			return false
		}
	}
	return true
}
