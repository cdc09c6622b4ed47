package bench

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/policy"
)

// PolicyOptions size the policy benchmark.
type PolicyOptions struct {
	Identities int // pod identities (the reserved and CIDR ones come on top)
	Rules      int // policy rules selecting the measured endpoint
	Iterations int // builds timed; the report gives the median of each phase
	Packets    int // program runs per packet path
}

// DefaultPolicyOptions is the size Cilium's scalability figures use: an
// endpoint selected by 250 rules in a cluster of 1,000 identities.
var DefaultPolicyOptions = PolicyOptions{Identities: 1000, Rules: 250, Iterations: 9, Packets: 50000}

// PolicyReport is the outcome of PolicyBench.
type PolicyReport struct {
	Identities  int          `json:"identities"` // all identities the engine knows
	Rules       int          `json:"rules"`      // rules selecting the endpoint
	Entries     int          `json:"entries"`    // policy entries of the endpoint
	MapEntries  int          `json:"mapEntries"` // BPF map entries (any-protocol port entries expand to TCP, UDP, SCTP)
	MaxPerEntry int          `json:"maxEntries"` // the agent's default per-endpoint capacity
	Iterations  int          `json:"iterations"` // builds timed
	Build       []Phase      `json:"build"`      // median of each phase
	Packets     []PacketCost `json:"packets"`
	// Overheads compare paths: what enforcement adds to the same packet.
	Overheads  []Overhead   `json:"overheads"`
	PacketNote string       `json:"packetMethod"`
	Memory     PolicyMemory `json:"memory"`
}

// Phase is the median duration of one step of turning policies into maps.
type Phase struct {
	Name   string        `json:"name"`
	Median time.Duration `json:"medianNs"`
	Min    time.Duration `json:"minNs"`
}

// PacketCost is the per-packet cost of one program path. Medians are the
// figures to read: means include the runs an interrupt or preemption hit.
type PacketCost struct {
	Name        string  `json:"name"`
	Median      float64 `json:"medianNs"`
	Mean        float64 `json:"meanNs"`
	EmptyMedian float64 `json:"emptyMedianNs"` // the empty program, same method
	EmptyMean   float64 `json:"emptyMeanNs"`
	Ratio       float64 `json:"ratio"`   // Median / EmptyMedian
	Verdict     uint32  `json:"verdict"` // TC_ACT_* of the last run
	Runs        int     `json:"runs"`
	Distinct    bool    `json:"distinctPackets"` // every run a new connection
}

// Overhead is the difference between two packet paths.
type Overhead struct {
	Name   string  `json:"name"`
	Mean   float64 `json:"meanNs"`
	Median float64 `json:"medianNs"`
}

// PolicyMemory is what the policy engine keeps alive.
type PolicyMemory struct {
	// Heap in use by the decoded policies, the prepared engine and the
	// endpoint's computed policy, measured with runtime.MemStats after a
	// GC before and after building them.
	RetainedBytes uint64 `json:"retainedBytes"`
	// Allocated while building (garbage included).
	AllocatedBytes uint64 `json:"allocatedBytes"`
}

// Workload is a generated set of policies and identities.
type Workload struct {
	Docs       [][]byte // one policy object each
	Identities map[uint32]policy.Labels
	Endpoint   policy.EndpointInfo
	// PeerIdentity is a pod identity the endpoint's ingress rules allow on
	// TCP AllowedPort and not on DeniedPort; its egress rules allow
	// EgressPeerIdentity on TCP EgressPort.
	PeerIdentity            uint32
	AllowedPort, DeniedPort uint16
	EgressPeerIdentity      uint32
	EgressPort              uint16
}

// Identity numbering of the workload.
const (
	firstPodIdentity  = 1000
	firstCIDRIdentity = 1 << 24 // local scope, like the agent's
)

// PolicyWorkload generates rules CiliumNetworkPolicies and NetworkPolicies
// (one rule each) that all select the endpoint app=app0 of namespace ns0,
// over identities pod identities in 10 namespaces (plus the reserved ones
// and one CIDR identity per prefix the rules name, allocated as the agent
// does). The mix: L3 peers, L4 ports and ranges, namespace-wide peers,
// matchExpressions, entities, CIDR sets with excepts, ingress and egress
// denies, L4-only rules, and NetworkPolicies with namespaceSelectors.
func PolicyWorkload(identities, rules int) (*Workload, error) {
	w := &Workload{Identities: map[uint32]policy.Labels{}}
	for id, l := range map[uint32]string{
		policy.IdentityHost: "reserved:host", policy.IdentityWorld: "reserved:world",
		policy.IdentityRemoteNode: "reserved:remote-node", policy.IdentityKubeAPIServer: "reserved:kube-apiserver",
		policy.IdentityHealth: "reserved:health", policy.IdentityInit: "reserved:init", policy.IdentityUnmanaged: "reserved:unmanaged",
	} {
		w.Identities[id] = policy.MustParseLabels(l)
	}
	const namespaces = 10
	apps := max(identities/namespaces, 1)
	for i := range identities {
		ns, app := i%namespaces, i/namespaces
		w.Identities[firstPodIdentity+uint32(i)] = policy.MustParseLabels(
			fmt.Sprintf("k8s:app=app%d", app), fmt.Sprintf("k8s:tier=t%d", app%5),
			fmt.Sprintf("k8s:%s=ns%d", policy.PodNamespaceLabel, ns),
			fmt.Sprintf("k8s:%skubernetes.io/metadata.name=ns%d", policy.NamespaceLabelsPrefix, ns),
			fmt.Sprintf("k8s:%steam=team%d", policy.NamespaceLabelsPrefix, ns%3))
	}
	w.Endpoint = policy.EndpointInfo{Identity: firstPodIdentity, Labels: w.Identities[firstPodIdentity], Namespace: "ns0"}

	const cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p%d, namespace: ns0}\nspec:\n  endpointSelector: {matchLabels: {app: app0}}\n  %s"
	const np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p%d, namespace: ns0}\nspec:\n  podSelector: {matchLabels: {app: app0}}\n  %s"
	for i := range rules {
		a := 1 + i%max(apps-1, 1) // a peer app (app0 is the endpoint's own)
		n := i % namespaces
		var doc string
		switch i % 12 {
		case 0:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {app: app%d}}]\n", a))
		case 1:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {app: app%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", a, n, 8000+i))
		case 2:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: team%d}}]\n    toPorts: [{ports: [{port: \"%d\", endPort: %d, protocol: TCP}]}]\n", i%3, 1000+i, 1040+i))
		case 3:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("egress:\n  - toEndpoints: [{matchLabels: {tier: t%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\"}]}]\n", i%5, n, 5000+i))
		case 4:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("egress:\n  - toCIDRSet: [{cidr: 10.%d.0.0/16, except: [10.%d.1.0/24]}]\n", i%256, i%256))
		case 5:
			doc = fmt.Sprintf(cnp, i, "egress:\n  - toEntities: [kube-apiserver, remote-node]\n    toPorts: [{ports: [{port: \"6443\", protocol: TCP}]}]\n")
		case 6:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: app%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", a, n, 8000+i-5))
		case 7:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingress:\n  - toPorts: [{ports: [{port: \"%d\", protocol: UDP}]}]\n", 9000+i))
		case 8:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: In, values: [ns%d, ns%d]}, {key: tier, operator: NotIn, values: [t0, t1, t2]}]}]\n    toPorts: [{ports: [{port: \"%d\", protocol: ANY}]}]\n", n, (n+3)%namespaces, 7000+i))
		case 9:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("egressDeny:\n  - toEndpoints: [{matchLabels: {tier: t%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", i%5, n, 5000+i-6))
		case 10:
			doc = fmt.Sprintf(np, i, fmt.Sprintf("ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ns%d}}\n      podSelector: {matchLabels: {tier: t%d}}\n    ports: [{port: %d, endPort: %d}]\n", n, i%5, 3000+i, 3003+i))
		case 11:
			doc = fmt.Sprintf(cnp, i, fmt.Sprintf("egress:\n  - toEntities: [world]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", 443+i))
		}
		w.Docs = append(w.Docs, []byte(doc))
	}
	pols, err := decodeAll(w.Docs)
	if err != nil {
		return nil, err
	}
	// One CIDR identity per prefix, labelled with every policy prefix
	// containing it, as policysync allocates them.
	prefixes := policy.CIDRPrefixes(pols)
	for i, p := range prefixes {
		ls := []string{"reserved:world"}
		for _, q := range prefixes {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				ls = append(ls, "cidr:"+q.String())
			}
		}
		w.Identities[firstCIDRIdentity+uint32(i)] = policy.MustParseLabels(ls...)
	}

	// Packets for the datapath paths, checked with the Go model of the
	// datapath (policy.Lookup).
	eng, err := policy.NewEngine(pols, w.Identities, policy.Options{})
	if err != nil {
		return nil, err
	}
	ep, err := eng.Compute(w.Endpoint)
	if err != nil {
		return nil, err
	}
	for _, e := range ep.Entries {
		if e.Deny || e.Identity < firstPodIdentity || e.Identity >= firstCIDRIdentity || e.Proto != policy.ProtoTCP || e.PortBits != 16 {
			continue
		}
		if !e.Egress && w.PeerIdentity == 0 {
			w.PeerIdentity, w.AllowedPort = e.Identity, e.Port
		}
		if e.Egress && w.EgressPeerIdentity == 0 {
			w.EgressPeerIdentity, w.EgressPort = e.Identity, e.Port
		}
	}
	if w.PeerIdentity == 0 || w.EgressPeerIdentity == 0 {
		return nil, errors.New("generating the policy workload: no identity-specific TCP allow in both directions")
	}
	if !policy.Lookup(ep, w.PeerIdentity, false, policy.ProtoTCP, w.AllowedPort).Allowed ||
		!policy.Lookup(ep, w.EgressPeerIdentity, true, policy.ProtoTCP, w.EgressPort).Allowed {
		return nil, errors.New("generating the policy workload: chosen allow entries do not allow")
	}
	for port := uint16(20000); ; port++ {
		if !policy.Lookup(ep, w.PeerIdentity, false, policy.ProtoTCP, port).Allowed {
			w.DeniedPort = port
			break
		}
	}
	return w, nil
}

func decodeAll(docs [][]byte) ([]*policy.Policy, error) {
	out := make([]*policy.Policy, 0, len(docs))
	for _, d := range docs {
		p, err := policy.Decode(d)
		if err != nil {
			return nil, fmt.Errorf("decoding generated policy: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

func toDatapath(entries []policy.Entry) []datapath.PolicyEntry {
	out := make([]datapath.PolicyEntry, len(entries))
	for i, e := range entries {
		out[i] = datapath.PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny}
	}
	return out
}

// PolicyBench measures, in one run, what an endpoint selected by o.Rules
// rules costs with o.Identities identities: the time from decoded policies
// to its entries in the BPF policy map of a real loaded datapath (private
// bpffs, throwaway network namespace), the per-packet cost of enforcement
// against an empty program, and the engine's memory.
func PolicyBench(o PolicyOptions) (*PolicyReport, error) {
	switch {
	case o.Identities < 100:
		return nil, fmt.Errorf("policy benchmark: identities %d: want at least 100", o.Identities)
	case o.Rules < 12:
		return nil, fmt.Errorf("policy benchmark: rules %d: want at least 12 (one of each shape)", o.Rules)
	case o.Iterations < 1:
		return nil, fmt.Errorf("policy benchmark: iterations %d: want at least 1", o.Iterations)
	case o.Packets < 100 || o.Packets > maxDistinct:
		return nil, fmt.Errorf("policy benchmark: packets %d: want 100 to %d (one source port per new connection)", o.Packets, maxDistinct)
	}
	w, err := PolicyWorkload(o.Identities, o.Rules)
	if err != nil {
		return nil, err
	}
	rep := &PolicyReport{Identities: len(w.Identities), Rules: o.Rules, Iterations: o.Iterations, MaxPerEntry: 16384}
	rep.Memory, err = PolicyEngineMemory(w)
	if err != nil {
		return nil, err
	}
	err = withPolicyDatapath(func(b *benchDP) error {
		if rep.Build, rep.Entries, rep.MapEntries, err = policyBuild(b, w, o.Iterations); err != nil {
			return err
		}
		rep.Packets, rep.PacketNote, err = policyPackets(b, w, o.Packets)
		if err != nil {
			return err
		}
		for _, d := range []struct{ name, with, without string }{
			{"enforcement, new connection allowed (to_container)", pathInAllowed, pathInNoPolicy},
			{"enforcement, new connection denied (to_container)", pathInDenied, pathInNoPolicy},
			{"enforcement, established (to_container)", pathInEstablished, pathInNoPolicyEst},
			{"enforcement, new connection allowed (from_container)", pathOutAllowed, pathOutNoPolicy},
		} {
			a, b := findPath(rep.Packets, d.with), findPath(rep.Packets, d.without)
			rep.Overheads = append(rep.Overheads, Overhead{Name: d.name, Mean: a.Mean - b.Mean, Median: a.Median - b.Median})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// PolicyEngineMemory measures the heap the decoded policies, the engine
// and the endpoint's computed policy keep alive.
func PolicyEngineMemory(w *Workload) (PolicyMemory, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pols, err := decodeAll(w.Docs)
	if err != nil {
		return PolicyMemory{}, err
	}
	eng, err := policy.NewEngine(pols, w.Identities, policy.Options{AllowLocalhost: true})
	if err != nil {
		return PolicyMemory{}, err
	}
	ep, err := eng.Compute(w.Endpoint)
	if err != nil {
		return PolicyMemory{}, err
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(pols)
	runtime.KeepAlive(eng)
	runtime.KeepAlive(ep)
	m := PolicyMemory{AllocatedBytes: after.TotalAlloc - before.TotalAlloc}
	if after.HeapAlloc > before.HeapAlloc {
		m.RetainedBytes = after.HeapAlloc - before.HeapAlloc
	}
	return m, nil
}

// Phase names.
const (
	PolicyMapWrite = "write map (PolicyMap.Sync, new endpoint)"
	PolicySetToMap = "policy set -> map (engine + compute + sync)"
)

// policyBuild times, iterations times: decode, engine preparation, Compute,
// conversion and the first Sync of a new endpoint's map entries; then an
// update (one policy changed: engine, Compute, Sync of the difference).
func policyBuild(b *benchDP, w *Workload, iterations int) ([]Phase, int, int, error) {
	names := []string{"decode policies (YAML)", "prepare engine (NewEngine)", "compute endpoint (Compute)", PolicyMapWrite,
		PolicySetToMap, "update one rule -> map (engine + compute + sync diff)"}
	times := make([][]time.Duration, len(names))
	changed := slices.Clone(w.Docs)
	changed[1] = []byte(string(changed[1]) + "  - fromEndpoints: [{matchLabels: {app: app3}}]\n    toPorts: [{ports: [{port: \"31000\", protocol: TCP}]}]\n")
	changedPols, err := decodeAll(changed)
	if err != nil {
		return nil, 0, 0, err
	}
	var entries, mapEntries int
	for it := range iterations {
		epID := uint16(100 + it)
		t0 := time.Now()
		pols, err := decodeAll(w.Docs)
		if err != nil {
			return nil, 0, 0, err
		}
		t1 := time.Now()
		eng, err := policy.NewEngine(pols, w.Identities, policy.Options{AllowLocalhost: true})
		if err != nil {
			return nil, 0, 0, err
		}
		t2 := time.Now()
		ep, err := eng.Compute(w.Endpoint)
		if err != nil {
			return nil, 0, 0, err
		}
		t3 := time.Now()
		de := toDatapath(ep.Entries)
		if err := b.pm.Sync(epID, de); err != nil {
			return nil, 0, 0, err
		}
		t4 := time.Now()
		entries, mapEntries = len(ep.Entries), len(datapath.ExpandAnyProto(de))

		u0 := time.Now()
		eng2, err := policy.NewEngine(changedPols, w.Identities, policy.Options{AllowLocalhost: true})
		if err != nil {
			return nil, 0, 0, err
		}
		ep2, err := eng2.Compute(w.Endpoint)
		if err != nil {
			return nil, 0, 0, err
		}
		if err := b.pm.Sync(epID, toDatapath(ep2.Entries)); err != nil {
			return nil, 0, 0, err
		}
		u1 := time.Now()
		for i, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), t4.Sub(t1), u1.Sub(u0)} {
			times[i] = append(times[i], d)
		}
		// The map must hold what Compute asked for.
		got, err := b.pm.Dump(epID)
		if err != nil {
			return nil, 0, 0, err
		}
		if want := len(datapath.ExpandAnyProto(toDatapath(ep2.Entries))); len(got) != want {
			return nil, 0, 0, fmt.Errorf("policy map of endpoint %d holds %d entries, want %d", epID, len(got), want)
		}
		if err := b.pm.Delete(epID); err != nil {
			return nil, 0, 0, err
		}
	}
	phases := make([]Phase, len(names))
	for i, n := range names {
		slices.Sort(times[i])
		phases[i] = Phase{Name: n, Median: times[i][len(times[i])/2], Min: times[i][0]}
	}
	return phases, entries, mapEntries, nil
}

func mustDecode(docs [][]byte) []*policy.Policy {
	p, err := decodeAll(docs)
	if err != nil {
		panic(err)
	}
	return p
}
