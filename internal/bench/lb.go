package bench

// Service load balancing: Lumen against kube-proxy's iptables mode, in one
// run. See LBBench for what is measured and how.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
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
