// Command lumen-agent runs on every node: it loads Lumen's eBPF datapath,
// keeps its maps, routes and neighbours equal to the desired state, and
// serves the node's API. The whole agent is wired in run below.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/apiserver"
	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/devices"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/ipam"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lbsync"
	"github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/policysync"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/resource"
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

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	started := time.Now().UTC()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}

	// Datapath: programs loaded, maps pinned (and adopted after a restart).
	dp, err := datapath.Load(datapath.Options{BPFFS: filepath.Join(cfg.StateDir, "bpf"), MaglevSize: cfg.MaglevTableSize, EventsRingSize: uint32(cfg.BPFEventsRingSize)})
	if err != nil {
		return err
	}
	defer dp.Close() // pins stay: the datapath keeps forwarding without us
	cookie, err := datapath.NetnsCookie()
	if err != nil {
		return err
	}
	rtCfg := datapath.RuntimeConfig{TraceLevel: cfg.datapathTraceLevel(), SockHostnsOnly: cfg.SockHostnsOnly, HostNetnsCookie: cookie}

	// Devices: the node's external interfaces and addresses.
	filter, err := devices.ParseFilter(cfg.Devices)
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	devCh, err := devices.Watch(ctx, devices.WatchConfig{NS: netns.None(), Filter: filter, Logger: log})
	if err != nil {
		return err
	}
	devs := <-devCh
	nodeIPv4, nodeIPv6 := nodeIPs(devs)
	mtu := deviceMTU(devs)

	// Tunnel device for --routing=vxlan.
	nw, err := newNetwork(log)
	if err != nil {
		return err
	}
	overlayIndex := 0
	if cfg.Routing == "vxlan" {
		overlayIndex, mtu, err = nw.ensureVXLAN(mtu)
		if err != nil {
			return err
		}
		if err := dp.Attach(datapath.HookFromOverlay, overlayIndex); err != nil {
			return err
		}
		rtCfg.VXLANIfIndex = uint32(overlayIndex)
	} else if err := nw.deleteVXLAN(); err != nil {
		return err
	}
	rtCfg.NodeIPv4, rtCfg.NodeIPv6 = nodeIPv4, nodeIPv6
	rtCfg.DSR = cfg.LBMode == "dsr"
	if err := dp.SetConfig(rtCfg); err != nil {
		return err
	}

	// The store: etcd (standalone or kvstore mode), the Kubernetes API, or
	// none (a node alone). A nil Store, not a nil *Client in an interface.
	var store kvstore.Store
	var storeMon *kvstore.Monitor // etcd answering (nil: no etcd)
	if cfg.KVStore != "" {
		etcd, err := kvstore.New(cfg.KVStore)
		if err != nil {
			return fmt.Errorf("kvstore: %w", err)
		}
		defer etcd.Close()
		store = etcd
		storeMon = kvstore.NewMonitor(etcd)
		go storeMon.Run(ctx)
	}
	var kube *k8s.Store
	if cfg.K8sKubeconfig != "" {
		if kube, store, err = k8sStore(ctx, cfg, store, cmp.Or(addrString(nodeIPv4), addrString(nodeIPv6)), log); err != nil {
			return err
		}
	}
	if kube != nil {
		if err := nodeLabelsFromKubernetes(ctx, kube, cfg, log); err != nil {
			return err
		}
	}
	if !cfg.v4.IsValid() && !cfg.v6.IsValid() {
		pre := node.Node{Name: cfg.NodeName, Zone: cfg.Zone, IPv4: addrString(nodeIPv4), IPv6: addrString(nodeIPv6), Labels: hostLabels(cfg)}
		if cfg.v4, cfg.v6, err = podCIDRsFromCiliumNode(ctx, kube, store, pre, log); err != nil {
			return err
		}
	}

	// The state tables: what the agent reads of the cluster, one watch per
	// kind, shared by every subsystem that reads it.
	tables := clusterstate.New(store, agentKinds(cfg), log)
	go tables.Run(ctx)

	// IPAM: this node's pod CIDRs.
	pods, err := ipam.New(cfg.v4, cfg.v6, filepath.Join(cfg.StateDir, "ipam.json"))
	if err != nil {
		return err
	}
	ids := newIdentities(store, log)
	if err := ids.alloc.SetStateFile(filepath.Join(cfg.StateDir, "identities.json")); err != nil {
		return err
	}

	// Cluster: this node, the others, their endpoints.
	local := node.Node{Name: cfg.NodeName, Zone: cfg.Zone, PodCIDRv4: prefixString(cfg.v4), PodCIDRv6: prefixString(cfg.v6),
		IPv4: addrString(nodeIPv4), IPv6: addrString(nodeIPv6), Labels: hostLabels(cfg)}
	nodes := node.New(local, store, tables.NodeTables(), dp, nw, cfg.Routing == "vxlan", log)

	// Policy map, adopted as the previous agent left it: nothing is flushed
	// until the policies are known again.
	policyMap, err := dp.Policy()
	if err != nil {
		return fmt.Errorf("loading policy map: %w", err)
	}
	// The policy syncer is the only writer of the policy map: endpoints
	// wait on it for their policy.
	policies := policysync.New(tables, ids.alloc, policyMap, nodes, policysync.Options{
		MaxEntries:    cfg.PolicyMapMaxEntries,
		Audit:         cfg.PolicyAuditMode,
		KubeAPIServer: cfg.apiServer,
		LocalNodeIPs:  func() []netip.Addr { return validAddrs(nodeIPv4, nodeIPv6) },
		RemoteNode:    nodes.IsRemoteNodeIP,
		HostLabels:    hostLabels(cfg),
		SetHostFlags:  dp.SetHostFlags,
		PolicyStatus:  policyStatus(kube),
	}, log)

	// Endpoints: restore what the previous agent left, then serve new ones.
	eps, err := endpoint.New(dp, cfg.StateDir, endpoint.Hooks{
		Identity: ids.resolve,
		Policy:   policies,
		Owns: func(owner string, ips []netip.Addr) bool {
			a, ok := pods.Owners()[owner]
			if !ok {
				return false
			}
			for _, ip := range ips {
				if ip != a.IPv4 && ip != a.IPv6 {
					return false
				}
			}
			return true
		},
		AddRoute:  nw.addEndpointRoute,
		DelRoute:  nw.delEndpointRoute,
		Publish:   nodes.Publish,
		Unpublish: nodes.Unpublish,
	}, log)
	if err != nil {
		return err
	}
	// The datapath first, from local state only: the store may be down.
	gone, err := eps.Restore()
	if err != nil {
		return err
	}
	// What this node holds goes back to the store on every listing of it;
	// the allocator never hands out a number held here or announced.
	nodes.SetLocalEndpoints(eps.List)
	ids.track(ctx, eps, nodes)
	go ids.run(ctx, tables.Identities)
	for _, ep := range gone {
		_, _ = pods.Release(ep.ContainerID)
	}
	if err := pruneEndpointMap(dp, eps.IPs()); err != nil {
		return err
	}
	go policies.Run(ctx)
	go eps.Run(ctx)
	// Pod and namespace label changes move endpoints to their new identity.
	go newLabelWatcher(store, ids.alloc, eps, log).run(ctx)

	// Services: this node's frontends and backends.
	lbTables := lbsync.Tables{Services: tables.Kind("Service"), EndpointSlices: tables.Kind("EndpointSlice"), Pods: tables.Pods()}
	services, err := lbsync.New(store, lbTables, dp, nodes, lbsync.Options{
		Maglev: cfg.LBAlgorithm == "maglev", MaglevSize: uint64(cfg.MaglevTableSize), MaglevSeed: cfg.MaglevSeed,
		StateDir: cfg.StateDir,
		// Kubernetes' EndpointSlice controller writes the slices there.
		ControllerSlices: cfg.K8sKubeconfig != "",
		Local: func() loadbalancer.NodeInfo {
			return loadbalancer.NodeInfo{Name: cfg.NodeName, Zone: cfg.Zone, IPs: validAddrs(nodeIPv4, nodeIPv6)}
		},
	}, log)
	if err != nil {
		return err
	}
	go services.Run(ctx)
	bgpCP, err := startBGP(ctx, cfg, tables, services, nodeIPv4, nodeIPv6, log)
	if err != nil {
		return err
	}
	go nodes.Run(ctx)
	go func() {
		keep := map[string]bool{}
		for _, ep := range eps.List() {
			keep[ep.ContainerID] = true
		}
		if err := nodes.PruneEndpoints(ctx, keep); err != nil {
			log.Warn("pruning stale endpoints in the store", "err", err)
		}
	}()

	// Host devices: from_netdev on every selected device, following changes.
	devState := &deviceState{xdp: cfg.LBAcceleration == "native"}
	attachDevices(dp, devState, devs, log)
	go func() {
		for d := range devCh {
			attachDevices(dp, devState, d, log)
		}
	}()
	// Links nobody wants any more (devices and pods gone while we were away).
	err = dp.PruneLinks(func(ifindex int, prog string) bool {
		switch prog {
		case "from_container", "to_container":
			return eps.IfIndexes()[ifindex]
		case "from_netdev", "to_netdev":
			return devState.has(ifindex)
		case "xdp_nodeport":
			return devState.has(ifindex) && cfg.LBAcceleration == "native"
		case "from_overlay":
			return ifindex == overlayIndex && overlayIndex != 0
		case "connect4", "sendmsg4", "recvmsg4", "getpeername4", "connect6", "sendmsg6", "recvmsg6", "getpeername6":
			return cfg.SocketLBCgroup != ""
		}
		return false
	})
	if err != nil {
		log.Warn("pruning links", "err", err)
	}

	go gcConntrack(ctx, dp, log)

	// Socket load balancing, where a cgroup is given.
	sockLB := api.SubsystemStatus{Name: "socket-lb", State: api.StateDisabled, Message: "--socket-lb-cgroup not set: per-packet load balancing only"}
	if cfg.SocketLBCgroup != "" {
		if err := dp.AttachSocketLB(cfg.SocketLBCgroup); err != nil {
			return err
		}
		sockLB = api.SubsystemStatus{Name: "socket-lb", State: api.StateOK, Message: "cgroup " + cfg.SocketLBCgroup}
		if cfg.SockHostnsOnly {
			sockLB.Message += " (host namespace only)"
		}
	} else if err := dp.DetachSocketLB(); err != nil {
		return err
	}

	// Events and metrics.
	reg := metrics.New(dp.Counters, func() int { return len(eps.List()) })
	if err := reg.Register(append(reconcile.DefaultMetrics.Collectors(), tables.Collector())...); err != nil {
		return err
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "lumen_policy_map_overflow_total",
		Help: "Endpoint policy computations that exceeded --policy-map-max-entries (the endpoint then denies all traffic).",
	}, func() float64 { return float64(policies.Overflows.Load()) })); err != nil {
		return err
	}
	// Cilium: policy_import_errors_total; plus the current count.
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "lumen_policy_import_errors_total",
		Help: "Policy object versions that could not be enforced as written (unsupported or malformed parts fail closed).",
	}, func() float64 { return float64(policies.ImportErrors.Load()) })); err != nil {
		return err
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lumen_policy_not_enforced",
		Help: "Policies in force that Lumen does not enforce as written (their unsupported or malformed parts deny).",
	}, func() float64 { return float64(len(policies.NotEnforced())) })); err != nil {
		return err
	}
	if err := startHubble(ctx, cfg, dp, reg, eps, nodes, ids.alloc, store, log); err != nil {
		return err
	}

	status := func() api.Status {
		st := api.Status{
			Node: cfg.NodeName, Version: version, Routing: cfg.Routing, StartedAt: started,
			Devices: devState.names(), PodCIDRs: []string{}, NodeIPs: []string{},
		}
		for _, p := range []netip.Prefix{cfg.v4, cfg.v6} {
			if p.IsValid() {
				st.PodCIDRs = append(st.PodCIDRs, p.String())
			}
		}
		for _, a := range []netip.Addr{nodeIPv4, nodeIPv6} {
			if a.IsValid() {
				st.NodeIPs = append(st.NodeIPs, a.String())
			}
		}
		list := eps.List()
		st.Endpoints = len(list)
		st.PoliciesNotEnforced = []string{}
		for k, why := range policies.NotEnforced() {
			st.PoliciesNotEnforced = append(st.PoliciesNotEnforced, strings.TrimPrefix(k, resource.Prefix)+": "+why)
		}
		sort.Strings(st.PoliciesNotEnforced)
		st.Subsystems = []api.SubsystemStatus{
			{Name: "datapath", State: api.StateOK, Message: "programs loaded, maps pinned"},
			devState.health(),
			{Name: "ipam", State: api.StateOK, Message: fmt.Sprintf("%d allocated", len(pods.Owners()))},
			storeHealth(cfg.KVStore, storeMon),
			nodes.Health(),
			ids.health(),
			policies.Health(),
			services.Health(),
			bgpCP.health(),
			sockLB,
		}
		if cfg.Routing == "vxlan" {
			st.Subsystems = append(st.Subsystems, api.SubsystemStatus{Name: "tunnel", State: api.StateOK, Message: "vxlan " + tunnelName})
		}
		for _, s := range st.Subsystems {
			v := 0.0
			if s.State == api.StateOK || s.State == api.StateDisabled {
				v = 1
			}
			reg.Subsystem.WithLabelValues(s.Name).Set(v)
		}
		return st
	}

	// The subsystem gauges are set by status: fresh at every scrape.
	metricsHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status()
		reg.Handler().ServeHTTP(w, r)
	})
	if storeMon != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-storeMon.Changed():
					s := storeHealth(cfg.KVStore, storeMon)
					if s.State == api.StateOK {
						log.Info("kvstore reachable again", "kvstore", cfg.KVStore)
					} else {
						log.Warn("kvstore unreachable: agent degraded", "kvstore", cfg.KVStore, "reason", s.Message)
					}
					status()
				}
			}
		}()
	}
	if cfg.PrometheusServeAddr != "" {
		go servePrometheus(ctx, cfg.PrometheusServeAddr, metricsHandler, log)
	}
	h := apiserver.Handler(&apiserver.Backend{Status: status, Endpoints: eps, IPAM: pods, MTU: mtu, Metrics: metricsHandler, Log: log, Datapath: dp, Policy: policyMap,
		Services: services.Services, BGPPeers: bgpCP.peers, BGPRoutes: bgpCP.routes,
		Explain: func(ctx context.Context, req *api.ExplainRequest) (*api.Explanation, error) {
			return policies.Explain(ctx, cfg.NodeName, req, dp.IdentityOf)
		},
	})
	sock := filepath.Join(cfg.StateDir, "agent.sock")
	log.Info("agent ready", "node", cfg.NodeName, "socket", sock, "routing", cfg.Routing, "devices", devState.names(), "endpoints", len(eps.List()))
	return apiserver.Serve(ctx, sock, h)
}

// storeHealth is the "kvstore" subsystem: whether the etcd answers, naming
// it and the error when not.
func storeHealth(endpoint string, mon *kvstore.Monitor) api.SubsystemStatus {
	st := api.SubsystemStatus{Name: "kvstore", State: api.StateOK}
	if mon == nil {
		st.State, st.Message = api.StateDisabled, "no etcd (--kvstore not set)"
		return st
	}
	checked, err, since := mon.State()
	switch {
	case !checked:
		st.State, st.Message = api.StateDegraded, "etcd "+endpoint+": not checked yet"
	case err != nil:
		st.State = api.StateDegraded
		st.Message = fmt.Sprintf("etcd %s unreachable since %s (%s): %v; local endpoints keep their datapath and policy, changes wait for the store",
			endpoint, since.UTC().Format(time.RFC3339), time.Since(since).Round(time.Second), err)
	default:
		st.Message = "etcd " + endpoint + " reachable"
	}
	return st
}

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

// gcConntrack expires idle connection tracking entries.
func gcConntrack(ctx context.Context, dp *datapath.Datapath, log *slog.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := dp.GCConntrack(datapath.DefaultCTLifetimes); err != nil {
			log.Warn("conntrack GC", "err", err)
		} else if n > 0 {
			log.Debug("conntrack GC", "expired", n)
		}
	}
}

func servePrometheus(ctx context.Context, addr string, h http.Handler, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("prometheus listener", "addr", addr, "err", err)
		return
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("prometheus server", "err", err)
	}
}

// policyStatus publishes policy warnings in Kubernetes mode (nil otherwise).
func policyStatus(kube *k8s.Store) func(context.Context, string, []string) error {
	if kube == nil {
		return nil
	}
	return kube.SetPolicyStatus
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
