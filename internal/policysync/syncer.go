// Package policysync keeps every local endpoint's policy map equal to what
// the policies in the store ask for, given the cluster's identities. It is
// the only writer of the policy map; internal/policy does the computing,
// so the datapath and `lumen policy explain` can never disagree.
package policysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/ipproto"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/resource"
)

// DefaultMaxEntries is the default per-endpoint policy capacity.
const DefaultMaxEntries = 16384

// Options configure the syncer.
type Options struct {
	// MaxEntries bounds one endpoint's policy map entries. An endpoint whose
	// policy needs more fails closed: enforced both ways with no entries.
	MaxEntries int
	// Audit reports denials instead of enforcing them (policy audit mode).
	Audit bool
	// KubeAPIServer lists the API server's addresses (standalone mode).
	KubeAPIServer []netip.Addr
	// LocalNodeIPs and RemoteNodeIPs tell which API server addresses are
	// this node's or another node's.
	LocalNodeIPs func() []netip.Addr
	RemoteNode   func(netip.Addr) bool
	// HostLabels are the node's labels: CiliumClusterwideNetworkPolicy
	// rules with a nodeSelector select the host endpoint through them.
	HostLabels map[string]string
	// SetHostFlags writes the host endpoint's enforcement flags (host
	// firewall); nil disables the host firewall.
	SetHostFlags func(uint16) error
	// PolicyStatus, if set, publishes this node's warnings about one policy
	// (by store key) when they change, nil when they are gone (Kubernetes
	// mode: the policy's status).
	PolicyStatus func(ctx context.Context, key string, warnings []string) error
}

// IPCache is where the syncer puts the CIDR and kube-apiserver identities,
// and where it reads the cluster's endpoints (egress named ports resolve on
// each destination pod's identity).
type IPCache interface {
	SetExtraIPCache(map[netip.Prefix]uint32)
	SetIPCacheOverrides(map[netip.Prefix]uint32)
	Endpoints() []node.Endpoint
	Subscribe() <-chan struct{} // endpoints (or nodes) changed
}

// Syncer converges policy maps.
type Syncer struct {
	store kvstore.Store
	alloc *identity.Allocator
	eps   *endpoint.Manager
	pm    *datapath.PolicyMap
	ipc   IPCache
	opts  Options
	log   *slog.Logger

	// Overflows counts endpoints whose policy exceeded MaxEntries.
	Overflows atomic.Uint64
	// ImportErrors counts policy objects (versions) that could not be
	// enforced as written.
	ImportErrors atomic.Uint64

	mu         sync.Mutex
	policies   map[string]*policy.Policy // by store key
	bad        map[string]string         // store key -> why it is not (fully) enforced
	podPorts   map[string]map[string]policy.PortProto
	synced     map[string]bool // kinds listed once
	engine     *policy.Engine
	idents     map[uint32]policy.Labels
	lastErr    error
	kick       chan struct{}
	pending    map[uint16]time.Time // regenerated, maybe not listed by the endpoint manager yet
	hostPolicy *policy.EndpointPolicy
	warned     map[string][]string // container id -> policy warnings last logged
	published  map[string][]string // policy store key -> warnings last published
	readyOnce  sync.Once
	ready      chan struct{}
}

// New returns a syncer. store may be nil (no policies: nothing enforced).
func New(store kvstore.Store, alloc *identity.Allocator, eps *endpoint.Manager, pm *datapath.PolicyMap, ipc IPCache, opts Options, log *slog.Logger) *Syncer {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	return &Syncer{
		store: store, alloc: alloc, eps: eps, pm: pm, ipc: ipc, opts: opts, log: log,
		policies: map[string]*policy.Policy{}, bad: map[string]string{}, synced: map[string]bool{},
		kick: make(chan struct{}, 1), ready: make(chan struct{}), pending: map[uint16]time.Time{},
		warned: map[string][]string{},
	}
}

// Run follows policies and identities until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	go s.loop(ctx)
	if s.store == nil {
		s.markReady()
		s.trigger()
		return
	}
	type upd struct {
		kind string
		u    kvstore.Update
	}
	ch := make(chan upd)
	peers := s.ipc.Subscribe()
	for _, kind := range KindNames {
		go func() {
			for u := range s.store.ListAndWatch(ctx, resource.KindPrefix(kind)) {
				select {
				case ch <- upd{kind, u}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.alloc.Changed():
		case <-peers:
			// A pod came or went: only egress named ports depend on that.
			if !s.usesEgressNamedPorts() {
				continue
			}
		case x := <-ch:
			s.apply(x.kind, x.u)
		}
		s.trigger()
	}
}

func (s *Syncer) apply(kind string, u kvstore.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := resource.KindPrefix(kind)
	if u.Resync {
		for k := range s.policies {
			if strings.HasPrefix(k, prefix) {
				delete(s.policies, k)
			}
		}
		for k := range s.bad {
			if strings.HasPrefix(k, prefix) {
				delete(s.bad, k)
			}
		}
		for _, kv := range u.KVs {
			s.put(kv)
		}
		s.synced[kind] = true
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(s.policies, ev.KV.Key)
			delete(s.bad, ev.KV.Key)
			continue
		}
		s.put(ev.KV)
	}
}

// put decodes one stored policy leniently: a policy with parts Lumen cannot
// enforce (Kubernetes objects pass only the CRD schema; store objects
// written around the CLI's validation) still applies, those parts failing
// closed (policy.DecodeLenient), and is counted as not fully enforced.
func (s *Syncer) put(kv kvstore.KV) {
	obj, err := resource.Unmarshal(kv.Value)
	var p *policy.Policy
	if err == nil {
		var b []byte
		if b, err = json.Marshal(obj); err == nil {
			p, err = policy.DecodeLenient(b)
		}
	}
	if err != nil {
		s.ImportErrors.Add(1)
		if p == nil {
			s.log.Error("policy cannot be enforced at all", "key", kv.Key, "err", err)
			delete(s.policies, kv.Key)
		} else {
			s.log.Error("policy not fully enforced: the parts named fail closed", "key", kv.Key, "err", err)
			s.policies[kv.Key] = p
		}
		s.bad[kv.Key] = err.Error()
		return
	}
	delete(s.bad, kv.Key)
	s.policies[kv.Key] = p
}

func (s *Syncer) usesEgressNamedPorts() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.policies {
		if p.HasEgressNamedPorts() {
			return true
		}
	}
	return false
}

// NotEnforced returns the policies that are not (fully) enforced as
// written, by store key, with why.
func (s *Syncer) NotEnforced() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.bad))
	for k, v := range s.bad {
		out[k] = v
	}
	return out
}

func (s *Syncer) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Syncer) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// isSynced reports whether policies and identities were listed once.
func (s *Syncer) isSynced() bool {
	if s.store == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range KindNames {
		if !s.synced[k] {
			return false
		}
	}
	return s.alloc.Synced()
}

func (s *Syncer) loop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry.C:
		}
		if !s.isSynced() {
			// Keep what the maps hold (a restarted agent's predecessor's
			// state) until the whole picture is known: no hole, no flush.
			retry.Reset(200 * time.Millisecond)
			continue
		}
		err := s.reconcile(ctx)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("policy sync", "err", err)
			retry.Reset(2 * time.Second)
			continue
		}
		s.markReady()
	}
}

// rebuild prepares the engine from the current policies and identities,
// allocating the CIDR identities the policies need.
func (s *Syncer) rebuild(ctx context.Context) (*policy.Engine, []*policy.Policy, error) {
	s.mu.Lock()
	pols := make([]*policy.Policy, 0, len(s.policies))
	keys := make([]string, 0, len(s.policies))
	for k := range s.policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		pols = append(pols, s.policies[k])
	}
	s.mu.Unlock()

	// CIDR identities: one per prefix, labelled with every policy prefix
	// containing it, so that a selector of a wider prefix matches it.
	prefixes := policy.CIDRPrefixes(pols)
	cidrIDs := map[netip.Prefix]uint32{}
	for _, p := range prefixes {
		lbls := []identity.Label{{Source: identity.SourceReserved, Key: "world"}}
		for _, q := range prefixes {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				lbls = append(lbls, identity.Label{Source: identity.SourceCIDR, Key: q.String()})
			}
		}
		id, err := s.alloc.Allocate(ctx, identity.NewLabels(lbls...))
		if err != nil {
			return nil, nil, err
		}
		cidrIDs[p] = uint32(id)
	}
	overrides, err := s.apiServerIdentities(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.ipc.SetExtraIPCache(cidrIDs)
	s.ipc.SetIPCacheOverrides(overrides)

	idents := map[uint32]policy.Labels{}
	for id, ls := range s.alloc.Snapshot() {
		pl, err := policy.ParseLabels(ls.Strings()...)
		if err != nil {
			return nil, nil, fmt.Errorf("identity %d: %w", id, err)
		}
		idents[uint32(id)] = pl
	}
	if s.apiServerIsLocal() {
		idents[uint32(identity.Host)] = append(idents[uint32(identity.Host)], policy.Label{Source: "reserved", Key: "kube-apiserver"})
		idents[uint32(identity.Host)] = policy.NewLabels(idents[uint32(identity.Host)]...)
	}
	eng, err := policy.NewEngine(pols, idents, policy.Options{AllowLocalhost: true})
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.engine, s.idents = eng, idents
	s.mu.Unlock()
	return eng, pols, nil
}

func (s *Syncer) apiServerIsLocal() bool {
	if s.opts.LocalNodeIPs == nil {
		return false
	}
	for _, a := range s.opts.KubeAPIServer {
		for _, l := range s.opts.LocalNodeIPs() {
			if a == l {
				return true
			}
		}
	}
	return false
}

// apiServerIdentities gives each API server address an identity carrying
// reserved:kube-apiserver (plus remote-node when it is another node).
func (s *Syncer) apiServerIdentities(ctx context.Context) (map[netip.Prefix]uint32, error) {
	out := map[netip.Prefix]uint32{}
	for _, a := range s.opts.KubeAPIServer {
		p := netip.PrefixFrom(a, a.BitLen())
		local := false
		if s.opts.LocalNodeIPs != nil {
			for _, l := range s.opts.LocalNodeIPs() {
				local = local || l == a
			}
		}
		if local {
			continue // the host identity carries the label
		}
		lbls := []identity.Label{
			{Source: identity.SourceReserved, Key: "kube-apiserver"},
			{Source: identity.SourceCIDR, Key: p.String()},
		}
		if s.opts.RemoteNode != nil && s.opts.RemoteNode(a) {
			lbls = append(lbls, identity.Label{Source: identity.SourceReserved, Key: "remote-node"})
		} else {
			lbls = append(lbls, identity.Label{Source: identity.SourceReserved, Key: "world"})
		}
		id, err := s.alloc.Allocate(ctx, identity.NewLabels(lbls...))
		if err != nil {
			return nil, err
		}
		out[p] = uint32(id)
	}
	return out, nil
}

// reconcile recomputes every local endpoint.
func (s *Syncer) reconcile(ctx context.Context) error {
	eng, _, err := s.rebuild(ctx)
	if err != nil {
		return err
	}
	peerPorts, podPorts := s.namedPorts(ctx)
	var errs []error
	warnings := map[string][]string{} // endpoint -> its policy warnings
	for _, ep := range s.eps.List() {
		st := s.enforce(eng, ep, podPorts[ep.Namespace+"/"+ep.PodName], peerPorts)
		if err := s.eps.SetPolicy(ep.ContainerID, st); err != nil && !errors.Is(err, endpoint.ErrNotFound) {
			errs = append(errs, err)
		}
		if len(st.Warnings) > 0 {
			warnings[ep.Namespace+"/"+ep.PodName] = st.Warnings
		}
	}
	if err := s.publishWarnings(ctx, warnings); err != nil {
		// Status only: enforcement is done; retried on the next change.
		s.log.Warn("publishing policy warnings", "err", err)
	}
	if err := s.enforceHost(eng); err != nil {
		errs = append(errs, err)
	}
	// Entries of endpoints that no longer exist. An endpoint being created
	// has entries before the manager lists it: spare those for a while.
	live := map[uint16]bool{}
	liveCIDs := map[string]bool{}
	for _, ep := range s.eps.List() {
		live[ep.ID] = true
		liveCIDs[ep.ContainerID] = true
	}
	s.mu.Lock()
	for cid := range s.warned {
		if !liveCIDs[cid] {
			delete(s.warned, cid)
		}
	}
	live[datapath.HostEndpointID] = true
	for id, at := range s.pending {
		if live[id] || time.Since(at) > time.Minute {
			delete(s.pending, id)
		} else {
			live[id] = true
		}
	}
	s.mu.Unlock()
	for _, id := range s.pm.Endpoints() {
		if !live[id] {
			errs = append(errs, s.pm.Delete(id))
		}
	}
	return errors.Join(errs...)
}

// Regenerate computes and writes a new endpoint's policy before it is
// wired (see endpoint.Hooks.Policy). It waits for the first full sync.
func (s *Syncer) Regenerate(ctx context.Context, ep api.Endpoint) (api.EndpointPolicy, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return api.EndpointPolicy{}, ctx.Err()
	case <-time.After(30 * time.Second):
		return api.EndpointPolicy{}, errors.New("policies not synchronised with the kvstore yet: try again")
	}
	s.mu.Lock()
	eng := s.engine
	_, known := s.idents[ep.Identity]
	s.pending[ep.ID] = time.Now()
	s.mu.Unlock()
	if eng == nil || !known {
		var err error
		if eng, _, err = s.rebuild(ctx); err != nil {
			return api.EndpointPolicy{}, err
		}
	}
	peerPorts, podPorts := s.namedPorts(ctx)
	return s.enforce(eng, ep, podPorts[ep.Namespace+"/"+ep.PodName], peerPorts), nil
}

// enforce computes one endpoint's policy and writes its map entries.
// Failures fail closed.
func (s *Syncer) enforce(eng *policy.Engine, ep api.Endpoint, named map[string]policy.PortProto, peers map[uint32]map[string][]policy.PortProto) api.EndpointPolicy {
	s.mu.Lock()
	lbls := s.idents[ep.Identity]
	s.mu.Unlock()
	info := policy.EndpointInfo{Identity: ep.Identity, Labels: lbls, Namespace: ep.Namespace, NamedPorts: named, PeerNamedPorts: peers}
	closed := api.EndpointPolicy{IngressEnforced: true, EgressEnforced: true}
	pol, err := eng.Compute(info)
	if err != nil {
		closed.Error = err.Error()
		s.log.Error("computing endpoint policy: denying all its traffic", "endpoint", ep.ID, "err", err)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	entries := make([]datapath.PolicyEntry, 0, len(pol.Entries))
	for _, e := range pol.Entries {
		entries = append(entries, datapath.PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
	}
	if n := len(datapath.ExpandAnyProto(entries)); n > s.opts.MaxEntries {
		s.Overflows.Add(1)
		closed.Error = fmt.Sprintf("policy needs %d map entries, more than the per-endpoint capacity of %d (--policy-map-max-entries): all traffic denied", n, s.opts.MaxEntries)
		s.log.Error("policy map overflow", "endpoint", ep.ID, "pod", ep.Namespace+"/"+ep.PodName, "entries", n, "max", s.opts.MaxEntries)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	st := api.EndpointPolicy{
		IngressEnforced: pol.IngressEnforced, EgressEnforced: pol.EgressEnforced,
		Audit: s.opts.Audit && (pol.IngressEnforced || pol.EgressEnforced), Entries: len(entries), SelectedBy: pol.SelectedBy,
		Warnings: pol.Warnings,
	}
	s.logWarnings(ep, pol.Warnings)
	if err := s.pm.Sync(ep.ID, entries); err != nil {
		closed.Error = err.Error()
		s.log.Error("writing policy map: denying all traffic of the endpoint", "endpoint", ep.ID, "err", err)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	return st
}

// hostInfo describes the host endpoint to the engine.
func (s *Syncer) hostInfo() policy.EndpointInfo {
	lbls := []policy.Label{{Source: "reserved", Key: "host"}}
	for k, v := range s.opts.HostLabels {
		lbls = append(lbls, policy.Label{Source: "k8s", Key: k, Value: v})
	}
	return policy.EndpointInfo{Identity: uint32(identity.Host), Labels: policy.NewLabels(lbls...), IsHost: true}
}

// enforceHost computes the host endpoint's policy (host firewall): map
// entries first, then the flags that turn enforcement on.
func (s *Syncer) enforceHost(eng *policy.Engine) error {
	if s.opts.SetHostFlags == nil {
		return nil
	}
	var flags uint16
	pol, err := eng.Compute(s.hostInfo())
	if err == nil {
		entries := make([]datapath.PolicyEntry, 0, len(pol.Entries))
		for _, e := range pol.Entries {
			entries = append(entries, datapath.PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
		}
		if n := len(datapath.ExpandAnyProto(entries)); n > s.opts.MaxEntries {
			err = fmt.Errorf("host policy needs %d map entries, more than %d", n, s.opts.MaxEntries)
		} else {
			err = s.pm.Sync(datapath.HostEndpointID, entries)
		}
		if pol.IngressEnforced {
			flags |= datapath.EndpointIngressEnforced
		}
		if pol.EgressEnforced {
			flags |= datapath.EndpointEgressEnforced
		}
	}
	if err != nil {
		// Fail closed, but keep the node reachable for its operators:
		// audit mode reports instead of locking everybody out.
		s.log.Error("host firewall policy failed: enforcing with no entries in audit mode", "err", err)
		_ = s.pm.Sync(datapath.HostEndpointID, nil)
		return errors.Join(err, s.opts.SetHostFlags(datapath.EndpointIngressEnforced|datapath.EndpointEgressEnforced|datapath.EndpointAudit))
	}
	if flags != 0 && s.opts.Audit {
		flags |= datapath.EndpointAudit
	}
	s.mu.Lock()
	s.hostPolicy = pol
	s.mu.Unlock()
	return s.opts.SetHostFlags(flags)
}

// publishWarnings hands each policy's warnings on this node to
// Options.PolicyStatus when they changed since the last reconcile.
func (s *Syncer) publishWarnings(ctx context.Context, byEndpoint map[string][]string) error {
	if s.opts.PolicyStatus == nil {
		return nil
	}
	s.mu.Lock()
	names := map[string]string{} // "CiliumNetworkPolicy ns/name" -> store key
	live := map[string]bool{}
	for key, p := range s.policies {
		names[p.String()] = key
		live[key] = true
	}
	prev := s.published
	s.mu.Unlock()
	next := policyWarnings(names, byEndpoint)
	var errs []error
	done := map[string][]string{}
	for _, key := range slices.Sorted(maps.Keys(next)) {
		if slices.Equal(prev[key], next[key]) {
			done[key] = next[key]
			continue
		}
		if err := s.opts.PolicyStatus(ctx, key, next[key]); err != nil {
			errs = append(errs, fmt.Errorf("policy status of %s: %w", key, err))
			continue // retried on the next reconcile
		}
		done[key] = next[key]
	}
	for key := range prev {
		if _, ok := next[key]; ok {
			continue
		}
		if !live[key] {
			continue // the policy is gone: no status to clear
		}
		if err := s.opts.PolicyStatus(ctx, key, nil); err != nil {
			errs = append(errs, fmt.Errorf("policy status of %s: %w", key, err))
			done[key] = prev[key]
		}
	}
	s.mu.Lock()
	s.published = done
	s.mu.Unlock()
	return errors.Join(errs...)
}

// policyWarnings groups endpoint warnings by policy (store key): each
// warning without the policy's name, with the endpoints it concerns.
func policyWarnings(names map[string]string, byEndpoint map[string][]string) map[string][]string {
	type item struct{ key, text string }
	eps := map[item][]string{}
	for ep, ws := range byEndpoint {
		for _, w := range ws {
			for name, key := range names {
				if rest, ok := strings.CutPrefix(w, name+" "); ok {
					it := item{key, rest}
					eps[it] = append(eps[it], ep)
				}
			}
		}
	}
	out := map[string][]string{}
	for it, list := range eps {
		slices.Sort(list)
		out[it.key] = append(out[it.key], fmt.Sprintf("%s (endpoints %s)", it.text, strings.Join(list, ", ")))
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

// logWarnings logs an endpoint's policy warnings when they change (every
// reconcile recomputes them; the log says it once).
func (s *Syncer) logWarnings(ep api.Endpoint, warnings []string) {
	s.mu.Lock()
	prev, seen := s.warned[ep.ContainerID]
	s.warned[ep.ContainerID] = warnings
	s.mu.Unlock()
	if seen && slices.Equal(prev, warnings) {
		return
	}
	for _, w := range warnings {
		s.log.Warn("policy warning", "endpoint", ep.ID, "pod", ep.Namespace+"/"+ep.PodName, "warning", w)
	}
}

// namedPorts reads the container ports of every stored pod: each pod's
// own by namespace/name (ingress named ports) and, through the cluster's
// endpoints, by identity (egress named ports resolve on the destination).
func (s *Syncer) namedPorts(ctx context.Context) (map[uint32]map[string][]policy.PortProto, map[string]map[string]policy.PortProto) {
	peers := map[uint32]map[string][]policy.PortProto{}
	own := map[string]map[string]policy.PortProto{}
	if s.store == nil {
		return peers, own
	}
	kind := resource.PodKind
	objs, err := resource.List(ctx, s.store, kind, "")
	if err != nil {
		s.log.Warn("listing pods for named ports", "err", err)
		return peers, own
	}
	for i := range objs {
		pod, err := resource.PodOf(&objs[i])
		if err != nil {
			continue
		}
		for _, cp := range pod.Ports() {
			if cp.Name == "" {
				continue
			}
			key := pod.Namespace + "/" + pod.Name
			if own[key] == nil {
				own[key] = map[string]policy.PortProto{}
			}
			own[key][cp.Name] = policy.PortProto{Port: uint16(cp.ContainerPort), Proto: protoNumber(cp.Protocol)}
		}
	}
	// Every endpoint, local ones included, keyed by its pod.
	for _, ep := range s.ipc.Endpoints() {
		ports := own[ep.Namespace+"/"+ep.PodName]
		if ep.Identity == 0 || ep.PodName == "" || len(ports) == 0 {
			continue
		}
		m := peers[ep.Identity]
		if m == nil {
			m = map[string][]policy.PortProto{}
			peers[ep.Identity] = m
		}
		for name, pp := range ports {
			if !slices.Contains(m[name], pp) {
				m[name] = append(m[name], pp)
			}
		}
	}
	return peers, own
}

// protoNumber reads a container port's protocol; TCP unless UDP or SCTP.
func protoNumber(p string) uint8 {
	if n, ok := ipproto.Parse(p); ok && (n == ipproto.UDP || n == ipproto.SCTP) {
		return n
	}
	return ipproto.TCP
}

// Health reports the syncer's state.
func (s *Syncer) Health() api.SubsystemStatus {
	st := api.SubsystemStatus{Name: "policy", State: api.StateOK}
	synced := s.isSynced()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !synced:
		st.State, st.Message = api.StateDegraded, "waiting for policies and identities from the kvstore"
	case s.lastErr != nil:
		st.State, st.Message = api.StateDegraded, s.lastErr.Error()
	default:
		st.Message = fmt.Sprintf("%d policies, %d identities", len(s.policies), len(s.idents))
		if len(s.bad) > 0 {
			// Fail closed is not "ok": the operator must fix the policy.
			keys := make([]string, 0, len(s.bad))
			for k := range s.bad {
				keys = append(keys, strings.TrimPrefix(k, resource.Prefix))
			}
			sort.Strings(keys)
			st.State = api.StateDegraded
			st.Message += fmt.Sprintf(", %d not fully enforced (failing closed): %s", len(s.bad), strings.Join(keys, ", "))
		}
	}
	return st
}
