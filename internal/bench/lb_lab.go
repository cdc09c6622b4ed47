package bench

// The lab part of the load-balancing benchmark: connections through Lumen and
// through kube-proxy's rules between lab nodes, and the time to add a
// service.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/resource"
)

// Lab layout of the connection benchmark.
const (
	lbBenchNS     = "bench"
	lbBenchTarget = "10.96.250.1" // Lumen's measured service
	lbBenchApp    = "lbbench"
)

func lbBenchTopology(backends int) string {
	var b strings.Builder
	b.WriteString("nodes: [{name: n1, zone: a}]\npods:\n  - {name: client, namespace: bench, node: n1, ports: [\"80/tcp\"]}\n")
	for i := range backends {
		fmt.Fprintf(&b, "  - {name: be%d, namespace: bench, labels: {app: %s}, node: n1, ports: [\"80/tcp\"]}\n", i, lbBenchApp)
	}
	return b.String()
}

// benchService is a Lumen service of the benchmark, validated like apply.
func benchService(name string, ip netip.Addr) (resource.Object, error) {
	spec, err := json.Marshal(lb.ServiceSpec{
		ClusterIP: ip.String(), ClusterIPs: []string{ip.String()},
		Ports:    []lb.ServicePort{{Name: "http", Port: 80, TargetPort: lb.FromInt(80), Protocol: "TCP"}},
		Selector: map[string]string{"app": lbBenchApp},
	})
	if err != nil {
		return resource.Object{}, err
	}
	o := resource.Object{APIVersion: "v1", Kind: "Service", Metadata: resource.Metadata{Name: name, Namespace: lbBenchNS}, Spec: spec}
	if err := kinds.Registry().Validate(&o); err != nil {
		return o, err
	}
	return o, nil
}

// fillerIP is Lumen filler service i's cluster IP (10.96.0.1 and up).
func fillerIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 96, byte((i + 1) >> 8), byte(i + 1)})
}

// putServices writes services [from, to) to the store, in parallel.
func putServices(ctx context.Context, c *kvstore.Client, from, to int) error {
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				o, err := benchService(fmt.Sprintf("svc%d", i), fillerIP(i))
				if err == nil {
					// As lumen apply would: the allocation index first.
					k := lb.ClusterIPsPrefix + fillerIP(i).String()
					if _, err = c.Put(ctx, k, lb.IndexValue(o.Metadata.Namespace+"/"+o.Metadata.Name, time.Now())); err == nil {
						var v []byte
						if v, err = json.Marshal(o); err == nil {
							_, err = c.Put(ctx, o.Key(), v)
						}
					}
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("writing services: %w", err)
	default:
		return nil
	}
}

// agentFrontends reads the agent's count of programmed frontends.
func agentFrontends(ctx context.Context, sock string) (int, error) {
	s, err := api.NewClient(sock).Status(ctx)
	if err != nil {
		return 0, err
	}
	for _, ss := range s.Subsystems {
		if ss.Name == "load-balancer" {
			var n, b int
			if _, err := fmt.Sscanf(ss.Message, "%d frontends, %d backends", &n, &b); err != nil {
				return 0, fmt.Errorf("load-balancer status %q: %w", ss.Message, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("the agent reports no load-balancer subsystem")
}

// serviceKey is the BPF service map key of a frontend's slot 0 (struct
// lb_key: family, proto, dport, slot, addr[16], scope, pad[3]).
func serviceKey(a netip.Addr, port uint16, scope uint8) []byte {
	k := make([]byte, 28)
	k[0], k[1] = unix.AF_INET, 6
	binary.BigEndian.PutUint16(k[2:], port)
	a4 := a.As4()
	copy(k[8:], a4[:])
	k[24] = scope
	return k
}

// frontendReady reports whether the pinned service map holds the frontend
// with at least one backend (struct lb_value: backend_id, count, ...).
func frontendReady(m *ebpf.Map, key []byte) bool {
	v := make([]byte, m.ValueSize())
	if err := m.Lookup(key, v); err != nil {
		return false
	}
	return binary.NativeEndian.Uint32(v[4:]) > 0
}

// runClient runs `lumen bench lb client` on a thread in the named
// namespace (joining cgroup first when given) and decodes its figures.
func runClient(ctx context.Context, lumenBin, nsName, cgroup, target string, conns, parallel int) (ConnStats, error) {
	args := []string{"bench", "lb", "client", "--target", target, "--conns", strconv.Itoa(conns)}
	if parallel > 1 {
		args = append(args, "--parallel", strconv.Itoa(parallel), "--connect-only")
	}
	if cgroup != "" {
		args = append(args, "--cgroup", cgroup)
	}
	var out []byte
	err := lab.InNamedNS(nsName, func() error {
		var err error
		cmd := exec.CommandContext(ctx, lumenBin, args...)
		cmd.Stderr = os.Stderr
		out, err = cmd.Output()
		return err
	})
	if err != nil {
		return ConnStats{}, fmt.Errorf("client in %s: %w", nsName, err)
	}
	var st ConnStats
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("client in %s: %w: %s", nsName, err, out)
	}
	if st.Failed > 0 {
		return st, fmt.Errorf("client in %s -> %s: %d connections failed: %s", nsName, target, st.Failed, st.Error)
	}
	return st, nil
}

// lbLabBench measures connections and adding a service in a lab.
func lbLabBench(ctx context.Context, o LBOptions, r *LBReport) (err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	lumenBin := filepath.Join(o.Bins, "lumen")
	labName := fmt.Sprintf("lbbench%d", os.Getpid()%100000)
	topo, err := lab.ParseTopology([]byte(lbBenchTopology(o.Backends)))
	if err != nil {
		return err
	}
	o.Log.Info("starting a lab", "lab", labName)
	st, err := lab.Up(ctx, lab.UpOptions{Lab: labName, Topology: topo, BinDir: o.Bins, Lumen: lumenBin, Log: o.Log})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer func() {
		if derr := lab.Down(labName, o.Log); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	node, err := st.Node("n1")
	if err != nil {
		return err
	}
	client, err := st.FindPod("bench/client")
	if err != nil {
		return err
	}
	var backends []netip.AddrPort
	for _, p := range st.Pods {
		if p.Labels["app"] == lbBenchApp {
			a, _ := p.Addr(4)
			backends = append(backends, netip.AddrPortFrom(a, 80))
		}
	}
	store, err := kvstore.Dial(ctx, st.StoreURL)
	if err != nil {
		return err
	}
	defer store.Close()
	svcMap, err := ebpf.LoadPinnedMap(filepath.Join(labpath.NodeBPFDir(labName, "n1"), "maps", "lumen_lb_services"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening the agent's service map: %w", err)
	}
	defer svcMap.Close()

	// clients run in rounds, taking turns, so that a change of the
	// machine's load hits them alike; each gets Conns connections in all.
	type run struct {
		dst            *ConnStats
		ns, cgroup, to string
		parallel       bool // Parallel at a time, connect and close only
	}
	const rounds = 5
	measure := func(clients []run) error {
		runs := make([][]ConnStats, len(clients))
		for range rounds {
			for i, c := range clients {
				par, conns := 1, max(o.Conns/rounds, 1)
				if c.parallel {
					par, conns = o.Parallel, max(o.ParallelConns/rounds, o.Parallel)
				}
				s, err := runClient(ctx, lumenBin, c.ns, c.cgroup, c.to, conns, par)
				if err != nil {
					return err
				}
				runs[i] = append(runs[i], s)
			}
		}
		for i, c := range clients {
			*c.dst = mergeStats(runs[i])
		}
		return nil
	}

	// First pass: Lumen alone, the measured service, then fillers up to
	// each size.
	target, err := benchService("target", netip.MustParseAddr(lbBenchTarget))
	if err != nil {
		return err
	}
	if _, err := kinds.Registry().Apply(ctx, store, []resource.Object{target}); err != nil {
		return err
	}
	// The store's allocation index covers what the benchmark stores (it
	// writes the fillers' entries itself).
	if err := lb.BuildIndex(ctx, store); err != nil {
		return err
	}
	sizes := slices.Sorted(slices.Values(o.Sizes))
	have := 1
	waitFrontends := func(n int) error {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			got, err := agentFrontends(ctx, node.Socket)
			if err == nil && got >= n {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the agent programs %d of %d frontends after 5 minutes (%v)", got, n, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	targetAddr := lbBenchTarget + ":80"
	for _, n := range sizes {
		if n > have {
			o.Log.Info("adding services", "from", have, "to", n)
			if err := putServices(ctx, store, have-1, n-1); err != nil {
				return err
			}
			have = n
		}
		if err := waitFrontends(n); err != nil {
			return err
		}
		row := ConnRow{Services: n}
		o.Log.Info("measuring Lumen", "services", n)
		if err := measure([]run{
			{&row.LumenPod, client.NetNS, node.Cgroup, targetAddr, false},
			{&row.LumenPodPerPacket, client.NetNS, "", targetAddr, false},
			{&row.LumenNode, node.NetNS, node.Cgroup, targetAddr, false},
		}); err != nil {
			return err
		}
		if err := measure([]run{{&row.LumenPodParallel, client.NetNS, node.Cgroup, targetAddr, true}}); err != nil {
			return err
		}
		r.Connections = append(r.Connections, row)
	}

	// Adding one service to the largest set, apply to BPF map.
	add := &AddServiceCost{Existing: have}
	var applies, visibles []time.Duration
	dir, err := os.MkdirTemp("", "lumen-bench-lb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for i := range o.AddRepeats {
		ip := netip.AddrFrom4([4]byte{10, 96, 251, byte(i + 1)})
		f := filepath.Join(dir, fmt.Sprintf("added%d.yaml", i))
		doc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: added%d, namespace: %s}\nspec:\n  clusterIP: %s\n  selector: {app: %s}\n  ports: [{name: http, port: 80, protocol: TCP}]\n", i, lbBenchNS, ip, lbBenchApp)
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			return err
		}
		key := serviceKey(ip, 80, datapath.ScopeInternal)
		t := time.Now()
		if out, err := exec.CommandContext(ctx, lumenBin, "--lab", labName, "apply", "-f", f).CombinedOutput(); err != nil {
			return fmt.Errorf("lumen apply: %w: %s", err, out)
		}
		applies = append(applies, time.Since(t))
		for !frontendReady(svcMap, key) {
			if time.Since(t) > 5*time.Minute {
				return fmt.Errorf("service %s not in the agent's map after 5 minutes", ip)
			}
			time.Sleep(500 * time.Microsecond)
		}
		visibles = append(visibles, time.Since(t))
	}
	add.LumenApply, add.LumenVisible = medianDur(applies), medianDur(visibles)
	if add.StoreSamples, add.AgentSamples, add.AgentWrites, err = timeStoreToMap(ctx, store, svcMap, node.Socket, o.StoreRepeats); err != nil {
		return err
	}
	add.StoreToMap = medianDur(add.StoreSamples)
	if len(add.AgentSamples) > 0 {
		add.AgentSync = medianDur(add.AgentSamples)
	}

	// Second pass: the same numbers of services as kube-proxy's iptables
	// rules, in rounds with Lumen's pod client. The cluster IPs need a
	// route for the client's connect to get as far as the OUTPUT chain.
	if err := addServiceRoute(node.NetNS); err != nil {
		return err
	}
	r.IPTables = "iptables-" + o.IPTables + "-restore"
	for i, n := range sizes {
		svcs, mid, last := iptServices(n, backends)
		o.Log.Info("measuring iptables", "services", n)
		if _, err := iptablesRestore(ctx, o.IPTables, node.NetNS, KubeProxyRules(svcs, true), false); err != nil {
			return err
		}
		row := &r.Connections[i]
		if err := measure([]run{
			{&row.IPTablesNode, node.NetNS, "", netip.AddrPortFrom(mid, 80).String(), false},
			{&row.IPTablesNodeLast, node.NetNS, "", netip.AddrPortFrom(last, 80).String(), false},
			{&row.LumenPodBeside, client.NetNS, node.Cgroup, targetAddr, false},
		}); err != nil {
			return err
		}
		row.Ratio = row.LumenPodBeside.PerSec / row.IPTablesNode.PerSec
		row.RatioLast = row.LumenPodBeside.PerSec / row.IPTablesNodeLast.PerSec
		if err := measure([]run{
			{&row.IPTablesNodeParallel, node.NetNS, "", netip.AddrPortFrom(mid, 80).String(), true},
			{&row.IPTablesNodeLastParallel, node.NetNS, "", netip.AddrPortFrom(last, 80).String(), true},
			{&row.LumenPodParallelBeside, client.NetNS, node.Cgroup, targetAddr, true},
		}); err != nil {
			return err
		}
		row.RatioParallel = row.LumenPodParallelBeside.PerSec / row.IPTablesNodeParallel.PerSec
		row.RatioParallelLast = row.LumenPodParallelBeside.PerSec / row.IPTablesNodeLastParallel.PerSec
		if l := row.LumenPodParallelBeside.CPUPerConn(); l > 0 {
			row.CPURatio = float64(row.IPTablesNodeParallel.CPUPerConn()) / float64(l)
			row.CPURatioLast = float64(row.IPTablesNodeLastParallel.CPUPerConn()) / float64(l)
		}
	}
	// Adding one service to the largest set: a full sync, then (on top) a
	// partial one adding another.
	svcs, _, _ := iptServices(have, backends)
	var full, partial []time.Duration
	for i := range o.AddRepeats {
		added := IPTService{Name: fmt.Sprintf("bench/added%d:http", i), IP: netip.AddrFrom4([4]byte{10, 97, 251, byte(2*i + 1)}), Port: 80, Backends: backends}
		svcs = append(svcs, added)
		rules := KubeProxyRules(svcs, false)
		add.IPTablesRules = strings.Count(string(rules), "\n")
		d, err := iptablesRestore(ctx, o.IPTables, node.NetNS, rules, true)
		if err != nil {
			return err
		}
		full = append(full, d)
		added = IPTService{Name: fmt.Sprintf("bench/added%db:http", i), IP: netip.AddrFrom4([4]byte{10, 97, 251, byte(2*i + 2)}), Port: 80, Backends: backends}
		svcs = append(svcs, added)
		if d, err = iptablesRestore(ctx, o.IPTables, node.NetNS, KubeProxyPartial(svcs, added), true); err != nil {
			return err
		}
		partial = append(partial, d)
	}
	add.IPTablesFull, add.IPTablesPartial = medianDur(full), medianDur(partial)
	r.AddService = add
	return nil
}

// timeStoreToMap writes services with their cluster IPs given (nothing to
// allocate) straight to the store and times each until its frontend is in
// the service map. The map is polled every 20 µs or so (a sleep, so that the
// poller does not take a CPU from the agent): that is the resolution. It
// also collects the agent's own figure for each (see AgentSync).
func timeStoreToMap(ctx context.Context, store *kvstore.Client, svcMap *ebpf.Map, sock string, repeats int) (e2e, agent []time.Duration, writes int, err error) {
	for i := range repeats {
		ip := netip.AddrFrom4([4]byte{10, 96, 252, byte(i + 1)})
		o, err := benchService(fmt.Sprintf("stored%d", i), ip)
		if err != nil {
			return nil, nil, 0, err
		}
		v, err := json.Marshal(o)
		if err != nil {
			return nil, nil, 0, err
		}
		key := serviceKey(ip, 80, datapath.ScopeInternal)
		time.Sleep(100 * time.Millisecond) // the previous one settles
		t := time.Now()
		if _, err := store.Put(ctx, o.Key(), v); err != nil {
			return nil, nil, 0, fmt.Errorf("writing %s: %w", o.Key(), err)
		}
		for !frontendReady(svcMap, key) {
			if time.Since(t) > 5*time.Minute {
				return nil, nil, 0, fmt.Errorf("service %s not in the agent's map after 5 minutes", ip)
			}
			time.Sleep(20 * time.Microsecond)
		}
		e2e = append(e2e, time.Since(t))
		if d, w, ok := agentLastSync(ctx, sock); ok {
			agent = append(agent, d)
			writes = w
		}
	}
	return e2e, agent, writes, nil
}

// lastSyncRe reads the agent's load-balancer status (lbsync.Syncer.Health).
var lastSyncRe = regexp.MustCompile(`last change: (\d+) services, (\d+) map writes in \S+, (\S+) after the event`)

// agentLastSync reads the agent's figure for its last reconcile, when that
// was a change of one service.
func agentLastSync(ctx context.Context, sock string) (time.Duration, int, bool) {
	st, err := api.NewClient(sock).Status(ctx)
	if err != nil {
		return 0, 0, false
	}
	for _, ss := range st.Subsystems {
		if ss.Name != "load-balancer" {
			continue
		}
		m := lastSyncRe.FindStringSubmatch(ss.Message)
		if m == nil || m[1] != "1" {
			return 0, 0, false
		}
		d, err := time.ParseDuration(m[3])
		w, _ := strconv.Atoi(m[2])
		return d, w, err == nil
	}
	return 0, 0, false
}

// addServiceRoute routes 10.97.0.0/16 out of the node's eth0 (any route
// does: DNAT in OUTPUT re-routes to the backend).
func addServiceRoute(nodeNS string) error {
	ns, err := netns.GetFromPath(labpath.NSPath(nodeNS))
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(lab.NodeDevice)
	if err != nil {
		return err
	}
	dst := &net.IPNet{IP: net.IPv4(10, 97, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}
	if err := h.RouteReplace(&netlink.Route{Dst: dst, LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("adding the route to 10.97.0.0/16 in %s: %w", nodeNS, err)
	}
	return nil
}

func medianDur(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
