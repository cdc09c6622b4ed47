package bench

// Service load balancing: Lumen against kube-proxy's iptables mode, in one
// run. See LBBench for what is measured and how.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/cilium/ebpf/asm"
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
	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/resource"
)

// LBOptions size the load-balancing benchmark.
type LBOptions struct {
	// Bins holds lumen, lumen-agent and lumen-cni (for the lab).
	Bins string
	// Sizes are the numbers of services in the store (and in iptables) at
	// which connections are measured.
	Sizes []int
	// Conns is the number of connections per measurement.
	Conns int
	// Backends is the number of backend pods behind every service.
	Backends int
	// IPTables is the iptables-restore flavour: "legacy" or "nft".
	IPTables string
	// AddRepeats is how often adding one service is timed (median) with
	// lumen apply; StoreRepeats how often with a store write.
	AddRepeats   int
	StoreRepeats int
	// MaglevBackends and MaglevSizes: the Maglev tables timed.
	MaglevBackends int
	MaglevSizes    []uint64
	// PacketServices fill the service map for the per-packet cost;
	// PacketRuns is the number of runs per path.
	PacketServices int
	PacketRuns     int
	// Parallel clients open ParallelConns connections in all, Parallel at a
	// time, connect and close only (no payload): a rate the client and
	// server costs weigh on as little as possible, so that what differs is
	// the load balancer's part (see LBConnMethod).
	Parallel      int
	ParallelConns int
	// MemBackends is the number of backends (and service slots) whose map
	// memory is reported; MemPerService backends per service.
	MemBackends   int
	MemPerService int
	// NoLab skips the parts that need a lab (connections, adding a service).
	NoLab bool
	Log   *slog.Logger
}

// DefaultLBOptions runs in about two minutes on two cores.
var DefaultLBOptions = LBOptions{
	Sizes: []int{1, 1000, 10000}, Conns: 3000, Backends: 3, IPTables: "legacy", AddRepeats: 3, StoreRepeats: 20,
	MaglevBackends: 1000, MaglevSizes: []uint64{maglev.DefaultTableSize, 131071},
	PacketServices: 10000, PacketRuns: 20000,
	MemBackends: 1_000_000, MemPerService: 100,
	Parallel: 8, ParallelConns: 10000,
}

// Validate checks the options, naming the bad one.
func (o *LBOptions) Validate() error {
	switch {
	case len(o.Sizes) == 0:
		return errors.New("sizes: at least one service count is needed")
	case slices.ContainsFunc(o.Sizes, func(n int) bool { return n < 1 || n > 60000 }):
		return fmt.Errorf("sizes: invalid value %v: each must be 1-60000 (the 10.96.0.0/16 and 10.97.0.0/16 service ranges)", o.Sizes)
	case o.Conns < 10:
		return fmt.Errorf("conns: invalid value %d: at least 10", o.Conns)
	case o.Backends < 1 || o.Backends > 50:
		return fmt.Errorf("backends: invalid value %d: want 1-50", o.Backends)
	case o.IPTables != "legacy" && o.IPTables != "nft":
		return fmt.Errorf("iptables: invalid value %q: want legacy or nft", o.IPTables)
	case o.AddRepeats < 1:
		return fmt.Errorf("add-repeats: invalid value %d: at least 1", o.AddRepeats)
	case o.Parallel < 1 || o.Parallel > 256:
		return fmt.Errorf("parallel: invalid value %d: want 1-256", o.Parallel)
	case o.ParallelConns < o.Parallel*10:
		return fmt.Errorf("parallel-conns: invalid value %d: at least 10 per parallel client (%d)", o.ParallelConns, o.Parallel*10)
	case o.StoreRepeats < 1 || o.StoreRepeats > 250:
		return fmt.Errorf("store-repeats: invalid value %d: want 1-250", o.StoreRepeats)
	case o.MaglevBackends < 1:
		return fmt.Errorf("maglev-backends: invalid value %d: at least 1", o.MaglevBackends)
	case o.PacketServices < 0 || o.PacketServices > 500000:
		return fmt.Errorf("packet-services: invalid value %d: want 0-500000", o.PacketServices)
	case o.PacketRuns < 100:
		return fmt.Errorf("packet-runs: invalid value %d: at least 100", o.PacketRuns)
	case o.MemPerService < 1 || o.MemBackends < o.MemPerService:
		return fmt.Errorf("mem-backends/mem-per-service: invalid values %d/%d: want mem-backends >= mem-per-service >= 1", o.MemBackends, o.MemPerService)
	case o.MemBackends > 1<<20 || o.MemBackends+o.MemBackends/o.MemPerService > 1<<20:
		return fmt.Errorf("mem-backends: invalid value %d: the service map holds at most %d slots and frontends", o.MemBackends, 1<<20)
	}
	for _, m := range o.MaglevSizes {
		if err := maglev.ValidateTableSize(m, o.MaglevBackends); err != nil {
			return fmt.Errorf("maglev-sizes: %w", err)
		}
	}
	return nil
}

// LBReport is the outcome of LBBench.
type LBReport struct {
	Connections []ConnRow        `json:"connections,omitempty"`
	ConnMethod  string           `json:"connectionMethod,omitempty"`
	IPTables    string           `json:"iptables,omitempty"` // the iptables-restore used
	AddService  *AddServiceCost  `json:"addService,omitempty"`
	Maglev      []MaglevCost     `json:"maglev"`
	Packets     []PacketCost     `json:"packets"`
	PacketNote  string           `json:"packetMethod"`
	Memory      LBMemory         `json:"memory"`
	Elapsed     time.Duration    `json:"elapsedNs"`
	Phases      map[string]int64 `json:"phasesNs,omitempty"`
}

// ConnStats is one client's run of sequential connections (connect, echo
// 32 bytes, close).
type ConnStats struct {
	Conns  int           `json:"conns"`
	Failed int           `json:"failed"`
	PerSec float64       `json:"perSecond"`
	P50    time.Duration `json:"p50Ns"`
	P90    time.Duration `json:"p90Ns"`
	P99    time.Duration `json:"p99Ns"`
	Mean   time.Duration `json:"meanNs"`
	Error  string        `json:"error,omitempty"` // the first failure
	// Elapsed is the time the measured connections took; Samples their
	// latencies (the client reports them; merged runs drop them).
	Elapsed time.Duration   `json:"elapsedNs"`
	Samples []time.Duration `json:"samplesNs,omitempty"`
	// The connect alone (the handshake: the kernel's part, where a load
	// balancer's cost per connection is): percentiles and samples.
	ConnectP50     time.Duration   `json:"connectP50Ns"`
	ConnectP99     time.Duration   `json:"connectP99Ns"`
	ConnectSamples []time.Duration `json:"connectSamplesNs,omitempty"`
	// CPU is the client process' CPU time (user + system) for the measured
	// connections. The kernel charges the softirq work done in the
	// client's context to it (tick accounting without IRQ time accounting,
	// as on this kernel): sending over a veth runs the peer's receive path
	// there, so this holds most of both ends' kernel work, netfilter's and
	// the BPF programs' included, but not the echo server's own.
	CPU time.Duration `json:"cpuNs"`
}

// CPUPerConn is the client's CPU time per measured connection.
func (c ConnStats) CPUPerConn() time.Duration {
	if c.Conns == 0 {
		return 0
	}
	return c.CPU / time.Duration(c.Conns)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// withConnect adds the connect percentiles of samples to st.
func withConnect(st ConnStats, samples []time.Duration) ConnStats {
	s := slices.Clone(samples)
	slices.Sort(s)
	st.ConnectP50, st.ConnectP99 = percentile(s, 0.5), percentile(s, 0.99)
	return st
}

// statsOf computes rate and percentiles of latency samples.
func statsOf(lat []time.Duration, elapsed time.Duration, failed int, firstErr string) ConnStats {
	st := ConnStats{Conns: len(lat), Failed: failed, Error: firstErr, Elapsed: elapsed}
	if len(lat) == 0 || elapsed <= 0 {
		return st
	}
	st.PerSec = float64(len(lat)) / elapsed.Seconds()
	s := slices.Clone(lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	st.Mean = sum / time.Duration(len(s))
	st.P50, st.P90, st.P99 = percentile(s, 0.50), percentile(s, 0.90), percentile(s, 0.99)
	return st
}

// mergeStats combines runs of one client (rounds) into one figure.
func mergeStats(runs []ConnStats) ConnStats {
	var lat, conn []time.Duration
	var elapsed, cpu time.Duration
	failed, firstErr := 0, ""
	for _, r := range runs {
		lat = append(lat, r.Samples...)
		conn = append(conn, r.ConnectSamples...)
		elapsed += r.Elapsed
		cpu += r.CPU
		failed += r.Failed
		if firstErr == "" {
			firstErr = r.Error
		}
	}
	st := withConnect(statsOf(lat, elapsed, failed, firstErr), conn)
	st.CPU = cpu
	return st
}

// ConnRow is every client measured at one number of services.
type ConnRow struct {
	Services int `json:"services"`
	// First pass, Lumen alone (no iptables rules anywhere yet), Services
	// services in the store; the three clients take turns, in rounds.
	// LumenPod: socket load balancing from a pod (the default).
	LumenPod ConnStats `json:"lumenPod"`
	// LumenPodPerPacket: per-packet DNAT from a pod (a client outside the
	// socket LB cgroup).
	LumenPodPerPacket ConnStats `json:"lumenPodPerPacket"`
	// LumenNode: socket load balancing from the node's own namespace.
	LumenNode ConnStats `json:"lumenNode"`
	// LumenPodParallel: LumenPod's client, Parallel connections at a time,
	// connect and close only.
	LumenPodParallel ConnStats `json:"lumenPodParallel"`

	// Second pass, Services services as kube-proxy's iptables rules, from
	// the node's own namespace (the only place they work beside Lumen's
	// datapath: Lumen delivers pod traffic by redirect, so replies to pods
	// would bypass netfilter's reverse NAT), to the service in the middle
	// of KUBE-SERVICES and to the last one; in rounds with LumenPodBeside,
	// Lumen's pod client at the same time (Lumen then holds the largest
	// number of services, never fewer than Services).
	IPTablesNode     ConnStats `json:"iptablesNode"`
	IPTablesNodeLast ConnStats `json:"iptablesNodeLast"`
	LumenPodBeside   ConnStats `json:"lumenPodBeside"`
	// Ratio is LumenPodBeside's connection rate over IPTablesNode's (taken
	// in the same rounds); RatioLast over IPTablesNodeLast's.
	Ratio     float64 `json:"ratio"`
	RatioLast float64 `json:"ratioLast"`
	// The same three clients Parallel connections at a time, connect and
	// close only, in rounds: the ratios of the rates.
	IPTablesNodeParallel     ConnStats `json:"iptablesNodeParallel"`
	IPTablesNodeLastParallel ConnStats `json:"iptablesNodeLastParallel"`
	LumenPodParallelBeside   ConnStats `json:"lumenPodParallelBeside"`
	RatioParallel            float64   `json:"ratioParallel"`
	RatioParallelLast        float64   `json:"ratioParallelLast"`
	// CPURatio is iptables' client CPU per connection over Lumen's (the
	// parallel runs), to the middle and to the last service: how many
	// connections Lumen serves for the CPU one costs through iptables.
	CPURatio     float64 `json:"cpuRatio"`
	CPURatioLast float64 `json:"cpuRatioLast"`
}

// AddServiceCost is the time to add one service when Sizes' largest number
// of services exists.
type AddServiceCost struct {
	Existing int `json:"existing"`
	// LumenApply is `lumen apply -f` of the service (validation, cluster IP
	// allocation against every stored service, the store write).
	LumenApply time.Duration `json:"lumenApplyNs"`
	// LumenVisible is from starting `lumen apply` until the frontend is in
	// the agent's BPF service map, with its backends.
	LumenVisible time.Duration `json:"lumenVisibleNs"`
	// IPTablesFull is iptables-restore of the whole nat ruleset with the new
	// service (kube-proxy's full sync); IPTablesPartial rewrites
	// KUBE-SERVICES and adds the new service's chains (kube-proxy's
	// minimized partial sync, the default since 1.27).
	// StoreToMap is from the store write of an (already allocated) service
	// to its frontend being in the agent's BPF service map with a backend:
	// the watch delivery plus the agent's work (the median of
	// StoreRepeats; StoreSamples are all of them).
	StoreToMap   time.Duration   `json:"storeToMapNs"`
	StoreSamples []time.Duration `json:"storeToMapSamplesNs,omitempty"`
	// AgentSync is the agent's own figure for the same additions (median):
	// from the watch event's arrival to the end of its map writes, as its
	// status reports it; AgentWrites the map writes it made for one.
	AgentSync       time.Duration   `json:"agentSyncNs"`
	AgentSamples    []time.Duration `json:"agentSyncSamplesNs,omitempty"`
	AgentWrites     int             `json:"agentMapWrites"`
	IPTablesFull    time.Duration   `json:"iptablesFullNs"`
	IPTablesPartial time.Duration   `json:"iptablesPartialNs"`
	IPTablesRules   int             `json:"iptablesRules"` // lines of the full ruleset
}

// MaglevCost is the time to build one Maglev table.
type MaglevCost struct {
	Backends  int           `json:"backends"`
	TableSize uint64        `json:"tableSize"`
	Median    time.Duration `json:"medianNs"`
	Builds    int           `json:"builds"`
}

// LBMemory is the kernel memory of the load-balancing maps filled with
// Backends backends, as /proc/self/fdinfo's memlock reports it.
type LBMemory struct {
	Backends        int     `json:"backends"`
	Services        int     `json:"services"`
	Slots           int     `json:"slots"`
	BackendMapBytes uint64  `json:"backendMapBytes"`
	ServiceMapBytes uint64  `json:"serviceMapBytes"`
	RevNatMapBytes  uint64  `json:"revNatMapBytes"`
	EmptyBytes      uint64  `json:"emptyBytes"` // the three maps before filling
	TotalBytes      uint64  `json:"totalBytes"`
	BytesPerBackend float64 `json:"bytesPerBackend"` // (Total - Empty) / Backends, slots included
}

// LBConnMethod explains the connection figures.
const LBConnMethod = `A client opens TCP connections one after the other to a ClusterIP (connect, write 32 bytes, read their echo, close with a reset so no TIME_WAIT piles up); rate = connections / time, latency = connect+echo. One node; every service has the same Backends echo-server pods on it. Clients take turns in 5 rounds (each after 200 warm-up connections) so that changes of the machine's load hit them alike. First pass, Lumen alone: the services are in the store and programmed by the agent, measured from a pod (socket LB), from a pod outside the socket-LB cgroup (per-packet DNAT) and from the node. Second pass: the same numbers of services as iptables DNAT rules in kube-proxy's chain layout (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* with statistic random), installed with iptables-restore in the lab node's own network namespace for cluster IPs Lumen does not hold (10.97.0.0/16), measured to the service in the middle of KUBE-SERVICES (a service's average position) and to the last one, in rounds with Lumen's pod client (which then holds the largest number of services). The iptables client runs in the node's namespace: beside Lumen's datapath that is where DNAT rules work at all (pods' replies are delivered by redirect, past netfilter's reverse NAT). Parallel connect-only pass: the sequential connect+echo rate is mostly the client's and the echo server's own work and waiting for a CPU (both Go processes on the same 2 CPUs), which every path pays alike and which hides the load balancer's part; so the same clients also run Parallel connections at a time, connect and close by reset only (no payload, the server only accepts), keeping the CPUs busy: the rate then reflects the CPU each connection costs, the load balancer's share included (iptables walks KUBE-SERVICES for every new connection; Lumen looks up one hash entry at connect()). Same rounds, same lab.`

// LBBench measures, in one run: connection rate and latency through Lumen
// and through kube-proxy's iptables rules at each number of services; the
// time to add one service when many exist; Maglev table builds; the
// per-packet cost of from_container's DNAT against an empty program; and
// the kernel memory of the maps at MemBackends backends.
func LBBench(ctx context.Context, o LBOptions) (*LBReport, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	r := &LBReport{Phases: map[string]int64{}, PacketNote: PolicyPacketMethod}
	phase := func(name string, t0 time.Time) { r.Phases[name] = int64(time.Since(t0)) }

	t0 := time.Now()
	o.Log.Info("timing Maglev table builds")
	for _, m := range o.MaglevSizes {
		c, err := MaglevBuild(o.MaglevBackends, m)
		if err != nil {
			return nil, err
		}
		r.Maglev = append(r.Maglev, c)
	}
	phase("maglev", t0)

	t0 = time.Now()
	o.Log.Info("timing from_container's DNAT", "services", o.PacketServices, "runs", o.PacketRuns)
	pk, err := LBPacketCost(o.PacketServices, o.PacketRuns)
	if err != nil {
		return nil, fmt.Errorf("per-packet cost: %w", err)
	}
	r.Packets = pk
	phase("packets", t0)

	t0 = time.Now()
	o.Log.Info("filling the maps", "backends", o.MemBackends)
	mem, err := LBMapMemory(o.MemBackends, o.MemPerService)
	if err != nil {
		return nil, fmt.Errorf("map memory: %w", err)
	}
	r.Memory = *mem
	phase("memory", t0)

	if !o.NoLab {
		t0 = time.Now()
		if err := lbLabBench(ctx, o, r); err != nil {
			return nil, err
		}
		r.ConnMethod = LBConnMethod
		phase("lab", t0)
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// MaglevBuild times building a Maglev table of backends over a table of
// size m (the median of a few builds).
func MaglevBuild(backends int, m uint64) (MaglevCost, error) {
	keys := make([]string, backends)
	for i := range keys {
		keys[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 80).String() + "/TCP"
	}
	builds := 5
	var d []time.Duration
	for range builds {
		t := time.Now()
		if _, err := maglev.Table(keys, m, maglev.DefaultSeed); err != nil {
			return MaglevCost{}, err
		}
		d = append(d, time.Since(t))
	}
	slices.Sort(d)
	return MaglevCost{Backends: backends, TableSize: m, Median: d[len(d)/2], Builds: builds}, nil
}

// Packet paths of LBPacketCost.
const (
	PathPodToPod      = "from_container: pod to local pod, no service (established)"
	PathDNATNew       = "from_container: to a ClusterIP, new connection (backend chosen, DNAT)"
	PathDNATEstablish = "from_container: to a ClusterIP, established (backend from conntrack, DNAT)"
)

// LBPacketCost times from_container on packets to a service frontend
// (a new connection, and an established one) and to a pod directly, with
// services frontends of 3 backends each in the maps, against an empty
// program, each packet one BPF_PROG_TEST_RUN (PolicyPacketMethod).
func LBPacketCost(services, runs int) ([]PacketCost, error) {
	var out []PacketCost
	err := withLBDatapath(func(d *lbDP) error {
		dp := d.dp
		mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
		client, backend := netip.MustParseAddr("10.200.0.2"), netip.MustParseAddr("10.200.0.3")
		vip := netip.MustParseAddr("10.96.250.1")
		if err := errors.Join(
			dp.UpsertEndpoint(client, datapath.EndpointInfo{IfIndex: uint32(d.ifidx[0]), ID: 1, Identity: 300, MAC: mac, HostMAC: mac}),
			dp.UpsertEndpoint(backend, datapath.EndpointInfo{IfIndex: uint32(d.ifidx[1]), ID: 2, Identity: 301, MAC: mac, HostMAC: mac}),
			dp.UpsertBackend(1, datapath.Backend{Addr: backend, Port: 80, Proto: 6}),
			dp.UpsertRevNat(1, vip, 80),
			dp.UpsertService(datapath.ServiceEntry{Frontend: datapath.Frontend{Addr: vip, Port: 80, Proto: 6, Scope: datapath.ScopeInternal}, RevNat: 1, Backends: []uint32{1}}, 0),
		); err != nil {
			return err
		}
		if err := fillServices(dp, services, 3, 2); err != nil {
			return err
		}
		empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			return fmt.Errorf("loading empty program: %w", err)
		}
		defer empty.Close()
		prog := dp.Program(datapath.HookFromContainer)
		const redirect = 7
		for _, p := range []struct {
			name     string
			dst      netip.Addr
			distinct bool
		}{{PathPodToPod, backend, false}, {PathDNATNew, vip, true}, {PathDNATEstablish, vip, false}} {
			if _, err := dp.GCConntrack(datapath.CTLifetimes{}); err != nil {
				return err
			}
			pkts := make([][]byte, runs)
			for i := range pkts {
				sport, flags := uint16(40000), uint8(0x10)
				if p.distinct {
					sport, flags = uint16(1024+i%60000), 0x02
				}
				pkts[i] = datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: client, Dst: p.dst, Proto: 6, SrcPort: sport, DstPort: 80, TTL: 64, TCPFlags: flags}.Bytes()
			}
			if !p.distinct {
				syn := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: client, Dst: p.dst, Proto: 6, SrcPort: 40000, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
				if _, _, err := testRun(prog, d.ifidx[0], syn); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
			}
			dur, verdict, err := timeRuns(prog, d.ifidx[0], pkts)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if verdict != redirect {
				return fmt.Errorf("%s: verdict %d, want %d (redirect to the backend): the path measured is not the one named", p.name, verdict, redirect)
			}
			e, _, err := timeRuns(empty, d.ifidx[0], pkts)
			if err != nil {
				return fmt.Errorf("empty program: %w", err)
			}
			c := PacketCost{Name: p.name, Median: median(dur), Mean: mean(dur), EmptyMedian: median(e), EmptyMean: mean(e), Verdict: verdict, Runs: runs, Distinct: p.distinct}
			c.Ratio = c.Median / c.EmptyMedian
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// fillServices writes n frontends 10.96.0.0/16 + i : 80/TCP (internal
// scope) with per backends each, backend ids from firstID up (addresses in
// 10.201.0.0/16), reverse NAT ids from firstID up.
func fillServices(dp *datapath.Datapath, n, per int, firstID uint32) error {
	id := firstID
	for i := 0; i < n; i++ {
		fe := netip.AddrFrom4([4]byte{10, 96, byte((i + 1) >> 8), byte(i + 1)})
		if n > 60000 {
			fe = netip.AddrFrom4([4]byte{10, byte(96 + (i+1)>>16), byte((i + 1) >> 8), byte(i + 1)})
		}
		ids := make([]uint32, per)
		for j := range ids {
			k := uint32(i*per + j)
			if err := dp.UpsertBackend(id, datapath.Backend{Addr: netip.AddrFrom4([4]byte{10, byte(201 + k>>16), byte(k >> 8), byte(k)}), Port: 80, Proto: 6}); err != nil {
				return err
			}
			ids[j] = id
			id++
		}
		rev := firstID + uint32(i)
		if err := dp.UpsertRevNat(rev, fe, 80); err != nil {
			return err
		}
		if err := dp.UpsertService(datapath.ServiceEntry{Frontend: datapath.Frontend{Addr: fe, Port: 80, Proto: 6, Scope: datapath.ScopeInternal}, RevNat: rev, Backends: ids}, 0); err != nil {
			return err
		}
	}
	return nil
}

// LBMapMemory fills the backend map with backends backends, and the service
// map with one frontend per perService of them (a slot each), and reports
// the maps' memlock.
func LBMapMemory(backends, perService int) (*LBMemory, error) {
	m := &LBMemory{Backends: backends, Services: backends / perService, Slots: backends / perService * perService}
	err := withLBDatapath(func(d *lbDP) error {
		names := []string{"lumen_lb_backends", "lumen_lb_services", "lumen_lb_revnat"}
		read := func() ([]uint64, error) {
			var out []uint64
			for _, n := range names {
				v, err := pinnedMemlock(filepath.Join(d.bpffs, "maps", n))
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		}
		before, err := read()
		if err != nil {
			return err
		}
		if err := fillServices(d.dp, m.Services, perService, 1); err != nil {
			return err
		}
		after, err := read()
		if err != nil {
			return err
		}
		m.BackendMapBytes, m.ServiceMapBytes, m.RevNatMapBytes = after[0], after[1], after[2]
		m.EmptyBytes = before[0] + before[1] + before[2]
		m.TotalBytes = after[0] + after[1] + after[2]
		m.BytesPerBackend = float64(m.TotalBytes-m.EmptyBytes) / float64(m.Slots)
		return nil
	})
	return m, err
}

// pinnedMemlock reads the memlock line of a pinned map's fdinfo.
func pinnedMemlock(path string) (uint64, error) {
	mp, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer mp.Close()
	return fdMemlock(mp.FD())
}

func fdMemlock(fd int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseMemlock(f)
}

// parseMemlock finds "memlock:\tN" in an fdinfo.
func parseMemlock(r io.Reader) (uint64, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no memlock in fdinfo")
}

// lbDP is a throwaway datapath: its own namespace and bpffs, two veths.
type lbDP struct {
	dp    *datapath.Datapath
	bpffs string
	ifidx [2]int
}

// withLBDatapath runs fn on a thread inside a new network namespace with
// the datapath loaded on a private bpffs, and removes everything after.
func withLBDatapath(fn func(*lbDP) error) error {
	var sfx [3]byte
	_, _ = rand.Read(sfx[:])
	name := "lmn-benchlb-" + hex.EncodeToString(sfx[:])
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		return err
	}
	defer func() { ns.Close(); _ = netns.DeleteNamed(name) }()
	return netnsutil.Do(ns, func() error { return lbDatapathIn(fn) })
}

// lbDatapathIn is withLBDatapath on a thread in the namespace.
func lbDatapathIn(fn func(*lbDP) error) (err error) {
	dir, err := os.MkdirTemp("", "lumen-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &lbDP{bpffs: filepath.Join(dir, "bpf")}
	if d.dp, err = datapath.Load(datapath.Options{BPFFS: d.bpffs}); err != nil {
		return err
	}
	defer func() { d.dp.Close(); _ = unix.Unmount(d.bpffs, 0) }()
	if err := d.dp.SetConfig(datapath.RuntimeConfig{TraceLevel: datapath.TraceControl}); err != nil {
		return err
	}
	for i, n := range []string{"lxclb0", "lxclb1"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			return fmt.Errorf("creating veth: %w", err)
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		d.ifidx[i] = l.Attrs().Index
	}
	// Drain events as the agent does (a full ring is cheaper to hit).
	rd, err := d.dp.OpenEvents()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}()
	defer func() { rd.Close(); wg.Wait() }()
	return fn(d)
}

// LBClient opens conns TCP connections to target one after the other
// (connect, 32 bytes echoed, close by reset), after warm connections that
// are not counted, and reports rate and latency. A failed connection is
// counted and skipped.
func LBClient(target string, conns, warm int, timeout time.Duration) ConnStats {
	return RunLBClient(LBClientOptions{Target: target, Conns: conns, Warm: warm, Parallel: 1, Timeout: timeout})
}

// LBClientOptions configure RunLBClient.
type LBClientOptions struct {
	Target      string
	Conns, Warm int // measured connections, and those before (in all)
	// Parallel connections at a time (each worker opens its share one
	// after the other).
	Parallel int
	// ConnectOnly: connect and close by reset, no payload (the handshake
	// is the load balancer's part of a connection), with plain blocking
	// system calls rather than Go's net package, so that the client's own
	// work is as small as it gets.
	ConnectOnly bool
	Timeout     time.Duration
}

// RunLBClient opens connections as o says and reports the rate (all
// measured connections over their wall time) and the latencies.
func RunLBClient(o LBClientOptions) ConnStats {
	o.Parallel = max(o.Parallel, 1)
	payload := []byte("lumen-bench-lb 0123456789abcdef\n")
	target, perr := netip.ParseAddrPort(o.Target)
	one := func(buf []byte, connect *time.Duration) error {
		t := time.Now()
		if o.ConnectOnly && perr == nil {
			err := rawConnect(target, o.Timeout)
			*connect = time.Since(t)
			return err
		}
		c, err := net.DialTimeout("tcp", o.Target, o.Timeout)
		if err != nil {
			return err
		}
		*connect = time.Since(t)
		defer c.Close()
		_ = c.(*net.TCPConn).SetLinger(0)
		if o.ConnectOnly {
			return nil
		}
		_ = c.SetDeadline(time.Now().Add(o.Timeout))
		if _, err := c.Write(payload); err != nil {
			return err
		}
		_, err = io.ReadFull(c, buf)
		return err
	}
	type result struct {
		lat, conn []time.Duration
		failed    int
		firstErr  string
	}
	work := func(n int, res *result) {
		buf := make([]byte, len(payload))
		var connect time.Duration
		for range n {
			t := time.Now()
			if err := one(buf, &connect); err != nil {
				res.failed++
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				continue
			}
			res.lat = append(res.lat, time.Since(t))
			res.conn = append(res.conn, connect)
		}
	}
	run := func(total int, results []result) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for w := range o.Parallel {
			wg.Add(1)
			go func() { defer wg.Done(); work(share(total, o.Parallel, w), &results[w]) }()
		}
		wg.Wait()
		return time.Since(start)
	}
	run(o.Warm, make([]result, o.Parallel))
	results := make([]result, o.Parallel)
	cpu0 := processCPU()
	elapsed := run(o.Conns, results)
	cpu := processCPU() - cpu0
	var lat, conn []time.Duration
	failed, firstErr := 0, ""
	for _, r := range results {
		lat, conn = append(lat, r.lat...), append(conn, r.conn...)
		failed += r.failed
		if firstErr == "" {
			firstErr = r.firstErr
		}
	}
	st := withConnect(statsOf(lat, elapsed, failed, firstErr), conn)
	st.Samples, st.ConnectSamples, st.CPU = lat, conn, cpu
	return st
}

// rawConnect connects a blocking socket to target and closes it with a
// reset.
func rawConnect(target netip.AddrPort, timeout time.Duration) error {
	fam := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()}
	if target.Addr().Is6() && !target.Addr().Is4In6() {
		fam = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(target.Port()), Addr: target.Addr().As16()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, sa); errors.Is(err, unix.EINTR) {
		// A signal (Go's preemption) interrupted the wait, not the
		// handshake: wait for it to finish.
		if err := awaitConnect(fd, timeout); err != nil {
			return fmt.Errorf("connect %s: %w", target, err)
		}
	} else if err != nil {
		return fmt.Errorf("connect %s: %w", target, err)
	}
	return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// awaitConnect waits for an interrupted connect of fd to complete.
func awaitConnect(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(time.Until(deadline).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("timed out")
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// processCPU is this process' user + system CPU time.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// share is worker w's part of n split among k.
func share(n, k, w int) int {
	s := n / k
	if w < n%k {
		s++
	}
	return s
}

// IPTService is a service as kube-proxy renders it.
type IPTService struct {
	Name     string // "namespace/name:port"
	IP       netip.Addr
	Port     uint16
	Backends []netip.AddrPort
}

func kubeChain(prefix, s string) string {
	h := sha256.Sum256([]byte(s))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// svcChain and sepChain name chains as kube-proxy does.
func svcChain(s IPTService) string { return kubeChain("KUBE-SVC-", s.Name+"tcp") }
func sepChain(s IPTService, b netip.AddrPort) string {
	return kubeChain("KUBE-SEP-", s.Name+"tcp"+b.String())
}

// KubeProxyRules renders services as kube-proxy's iptables mode writes the
// nat table: PREROUTING and OUTPUT jump to KUBE-SERVICES, which has one
// rule per service port matching its cluster IP and port and jumping to its
// KUBE-SVC chain; that picks an endpoint with statistic random rules
// (probability 1/n, 1/(n-1), ... 1) and jumps to its KUBE-SEP chain, which
// marks hairpin traffic for masquerade and DNATs. KUBE-NODEPORTS is last.
// full also writes the built-in chains and their jumps (a fresh table);
// otherwise only the KUBE-* chains, for iptables-restore --noflush.
func KubeProxyRules(svcs []IPTService, full bool) []byte {
	var b strings.Builder
	b.WriteString("*nat\n")
	if full {
		b.WriteString(":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	}
	b.WriteString(":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain(s))
		for _, be := range s.Backends {
			fmt.Fprintf(&b, ":%s - [0:0]\n", sepChain(s, be))
		}
	}
	if full {
		b.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
		b.WriteString(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
		b.WriteString(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING` + "\n")
	}
	b.WriteString("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n")
	b.WriteString("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
	b.WriteString("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n")
	b.WriteString(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully` + "\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n", s.IP, s.Name, s.Port, svcChain(s))
	}
	b.WriteString(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n")
	for _, s := range svcs {
		writeServiceChains(&b, s)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

func writeServiceChains(b *strings.Builder, s IPTService) {
	n := len(s.Backends)
	for i, be := range s.Backends {
		if i < n-1 {
			fmt.Fprintf(b, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %.11f -j %s\n", svcChain(s), s.Name, be, 1/float64(n-i), sepChain(s, be))
		} else {
			fmt.Fprintf(b, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", svcChain(s), s.Name, be, sepChain(s, be))
		}
	}
	for _, be := range s.Backends {
		fmt.Fprintf(b, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", sepChain(s, be), be.Addr(), s.Name)
		fmt.Fprintf(b, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s\n", sepChain(s, be), s.Name, be)
	}
}

// KubeProxyPartial is kube-proxy's minimized sync after adding added to
// svcs (which includes it): KUBE-SERVICES rewritten whole, the new
// service's chains created, every other chain left alone (--noflush).
func KubeProxyPartial(svcs []IPTService, added IPTService) []byte {
	var b strings.Builder
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain(added))
	for _, be := range added.Backends {
		fmt.Fprintf(&b, ":%s - [0:0]\n", sepChain(added, be))
	}
	for _, s := range svcs {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n", s.IP, s.Name, s.Port, svcChain(s))
	}
	b.WriteString(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n")
	writeServiceChains(&b, added)
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// iptServices are n services in 10.97.0.0/16 over backends: the measured
// one (mid, 10.97.250.1) in the middle of the list, and (n > 1) another
// (last, 10.97.250.2) at its end.
func iptServices(n int, backends []netip.AddrPort) (svcs []IPTService, mid, last netip.Addr) {
	mid, last = netip.MustParseAddr("10.97.250.1"), netip.MustParseAddr("10.97.250.2")
	fillers := n - 2
	if n == 1 {
		fillers, last = 0, mid
	}
	for i := 0; i < fillers; i++ {
		svcs = append(svcs, IPTService{Name: fmt.Sprintf("bench/svc%d:http", i), IP: netip.AddrFrom4([4]byte{10, 97, byte((i + 1) >> 8), byte(i + 1)}), Port: 80, Backends: backends})
	}
	svcs = slices.Insert(svcs, fillers/2, IPTService{Name: "bench/target:http", IP: mid, Port: 80, Backends: backends})
	if n > 1 {
		svcs = append(svcs, IPTService{Name: "bench/last:http", IP: last, Port: 80, Backends: backends})
	}
	return svcs, mid, last
}

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

// iptablesRestore runs iptables-restore (flavour legacy or nft) in the
// named namespace with rules on stdin.
func iptablesRestore(ctx context.Context, flavour, nsName string, rules []byte, noflush bool) (time.Duration, error) {
	bin := "iptables-legacy-restore"
	if flavour == "nft" {
		bin = "iptables-nft-restore"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return 0, fmt.Errorf("%s not found (apt-get install iptables): %w", bin, err)
	}
	args := []string{}
	if noflush {
		args = append(args, "--noflush")
	}
	var d time.Duration
	err = lab.InNamedNS(nsName, func() error {
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Stdin = strings.NewReader(string(rules))
		t := time.Now()
		out, err := cmd.CombinedOutput()
		d = time.Since(t)
		if err != nil {
			return fmt.Errorf("%s: %w: %s", bin, err, out)
		}
		return nil
	})
	return d, err
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
