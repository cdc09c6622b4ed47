// Package policysync keeps every local endpoint's policy map equal to what
// the policies ask for, given the cluster's identities. It is the only
// writer of the policy map: the endpoint manager asks it to realize an
// endpoint's policy at its identity (Realize) and waits, and pulls the
// enforcement state it computes (Realized). It reads policies, Pods (named
// ports) and the cluster's endpoints from state tables and runs its work
// through a reconcile loop. internal/policy does the computing, so the
// datapath and `lumen policy explain` can never disagree.
package policysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
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
	// RealizeTimeout bounds the wait for an endpoint's policy
	// (DefaultRealizeTimeout).
	RealizeTimeout time.Duration
	// Metrics records lumen_reconcile_* (nil: unregistered metrics).
	Metrics *reconcile.Metrics
}

// PolicyMap is the kernel's per-endpoint policy map (datapath.PolicyMap).
type PolicyMap interface {
	Sync(epID uint16, entries []datapath.PolicyEntry) error
	Delete(epID uint16) error
	Endpoints() []uint16
}

// IPCache is where the syncer puts the CIDR and kube-apiserver identities.
type IPCache interface {
	SetExtraIPCache(map[netip.Prefix]uint32)
	SetIPCacheOverrides(map[netip.Prefix]uint32)
}

// Syncer converges policy maps.
type Syncer struct {
	alloc *identity.Allocator
	pm    PolicyMap
	ipc   IPCache
	opts  Options
	log   *slog.Logger
	loop  *reconcile.Loop

	// Tables read; nil without tables (no policies: nothing enforced).
	kinds     map[string]*state.Table[*resource.Object] // policy kinds
	subs      map[string]*state.Subscription
	pods      *state.Table[*resource.Object]
	endpoints *state.Table[model.Endpoint] // the cluster's, local ones included
	identGen  atomic.Uint64                // new identities seen
	identKick chan struct{}

	// Overflows counts endpoints whose policy exceeded MaxEntries.
	Overflows atomic.Uint64
	// ImportErrors counts policy objects (versions) that could not be
	// enforced as written.
	ImportErrors atomic.Uint64

	mu         sync.Mutex
	policies   map[string]*policy.Policy // by store key
	bad        map[string]string         // store key -> why it is not (fully) enforced
	engine     *policy.Engine
	idents     map[uint32]policy.Labels
	lastErr    error
	done       []uint64           // input revisions of the last complete reconcile
	records    map[string]*record // by container id
	hostPolicy *policy.EndpointPolicy
	warned     map[string][]string // container id -> policy warnings last logged
	published  map[string][]string // policy store key -> warnings last published

	qmu      sync.Mutex
	queue    []*request
	requests chan struct{} // queue not empty
	changed  chan struct{} // a record's enforcement state changed
}

// New returns a syncer reading policies, Pods and endpoints from tables
// (nil: no policies, nothing enforced), whose policy kinds must include
// KindNames. The policy map is adopted as it is: nothing in it changes
// before the tables and the identities have synced.
func New(tables *clusterstate.Tables, alloc *identity.Allocator, pm PolicyMap, ipc IPCache, opts Options, log *slog.Logger) *Syncer {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.RealizeTimeout <= 0 {
		opts.RealizeTimeout = DefaultRealizeTimeout
	}
	s := &Syncer{
		alloc: alloc, pm: pm, ipc: ipc, opts: opts, log: log,
		identKick: make(chan struct{}, 1),
		policies:  map[string]*policy.Policy{}, bad: map[string]string{},
		records: map[string]*record{}, warned: map[string][]string{},
		requests: make(chan struct{}, 1), changed: make(chan struct{}, 1),
	}
	var inputs []reconcile.Input
	if tables != nil {
		s.kinds, s.subs = map[string]*state.Table[*resource.Object]{}, map[string]*state.Subscription{}
		for _, k := range KindNames {
			t := tables.Kind(k)
			s.kinds[k], s.subs[k] = t, t.Subscribe()
			inputs = append(inputs, t)
		}
		s.pods, s.endpoints = tables.Pods(), tables.Endpoints
		inputs = append(inputs, s.pods, s.endpoints)
	}
	if alloc != nil {
		inputs = append(inputs, identities{alloc, s.identKick})
	}
	s.loop = reconcile.New(reconcile.Config{
		Name: "policy", Inputs: inputs, Triggers: []<-chan struct{}{s.requests},
		Reconcile: s.pass, Prune: s.prune, MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Metrics: opts.Metrics, Log: log,
	})
	return s
}

// identities makes the allocator a reconcile input: synced once the
// cluster's identities are listed, changed when a new one is known.
type identities struct {
	a       *identity.Allocator
	changed chan struct{}
}

func (i identities) Synced() <-chan struct{}  { return i.a.SyncedC() }
func (i identities) Changed() <-chan struct{} { return i.changed }

// Run serves requests and follows policies, identities, Pods and
// endpoints until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	defer s.failQueued(errStopped)
	if s.alloc != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-s.alloc.Changed():
					s.identGen.Add(1)
					select {
					case s.identKick <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	s.loop.Run(ctx)
}

// pass is one reconcile: every endpoint when an input changed since the
// last complete pass, then the manager's requests in order (computed with
// the engine of the state just reconciled).
func (s *Syncer) pass(ctx context.Context) error {
	// Revisions first: a change landing between the two reads then makes
	// the next pass differ from s.done, instead of being marked as done
	// without having been read.
	rev := s.revisions()
	s.syncPolicies()
	s.mu.Lock()
	clean := s.lastErr == nil && s.done != nil && slices.Equal(rev, s.done)
	s.mu.Unlock()
	var err error
	if !clean {
		err = s.reconcile(ctx)
		s.mu.Lock()
		s.lastErr = err
		if err == nil {
			s.done = rev
		}
		s.mu.Unlock()
	}
	s.serve(ctx)
	return err
}

// revisions tells the state a complete pass depends on: policies,
// identities and, when policies name ports, Pods and endpoints. Other
// changes of those tables (pod status) cost no pass.
func (s *Syncer) revisions() []uint64 {
	rev := []uint64{s.identGen.Load()}
	for _, k := range KindNames {
		if t := s.kinds[k]; t != nil {
			rev = append(rev, t.Revision())
		}
	}
	ingress, egress := s.namedPortUse()
	if s.pods != nil && (ingress || egress) {
		rev = append(rev, s.pods.Revision())
	} else {
		rev = append(rev, 0)
	}
	if s.endpoints != nil && egress {
		rev = append(rev, s.endpoints.Revision())
	}
	return rev
}

// isSynced reports whether policies and identities were listed once.
func (s *Syncer) isSynced() bool {
	for _, t := range s.kinds {
		if !t.IsSynced() {
			return false
		}
	}
	return s.alloc == nil || s.alloc.Synced()
}

// rebuild prepares the engine from the current policies and identities,
// allocating the CIDR identities the policies need.
func (s *Syncer) rebuild(ctx context.Context) (*policy.Engine, error) {
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
			return nil, err
		}
		cidrIDs[p] = uint32(id)
	}
	overrides, err := s.apiServerIdentities(ctx)
	if err != nil {
		return nil, err
	}
	s.ipc.SetExtraIPCache(cidrIDs)
	s.ipc.SetIPCacheOverrides(overrides)

	idents := map[uint32]policy.Labels{}
	for id, ls := range s.alloc.Snapshot() {
		pl, err := policy.ParseLabels(ls.Strings()...)
		if err != nil {
			return nil, fmt.Errorf("identity %d: %w", id, err)
		}
		idents[uint32(id)] = pl
	}
	if s.apiServerIsLocal() {
		idents[uint32(identity.Host)] = append(idents[uint32(identity.Host)], policy.Label{Source: "reserved", Key: "kube-apiserver"})
		idents[uint32(identity.Host)] = policy.NewLabels(idents[uint32(identity.Host)]...)
	}
	eng, err := policy.NewEngine(pols, idents, policy.Options{AllowLocalhost: true})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.engine, s.idents = eng, idents
	s.mu.Unlock()
	return eng, nil
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

// reconcile recomputes every endpoint realized so far and the host's.
func (s *Syncer) reconcile(ctx context.Context) error {
	eng, err := s.rebuild(ctx)
	if err != nil {
		return err
	}
	ports := s.namedPorts()
	var errs []error
	warnings := map[string][]string{} // endpoint -> its policy warnings
	changed := false
	for _, ep := range s.Endpoints() {
		st := s.enforce(eng, ep, ports.own(ep.Namespace, ep.PodName), ports.peers)
		changed = s.setPolicy(ep, st) || changed
		if len(st.Warnings) > 0 {
			warnings[ep.Namespace+"/"+ep.PodName] = st.Warnings
		}
	}
	if changed {
		s.signal()
	}
	if err := s.publishWarnings(ctx, warnings); err != nil {
		// Status only: enforcement is done; retried on the next change.
		s.log.Warn("publishing policy warnings", "err", err)
	}
	if err := s.enforceHost(eng); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// prune removes, once after the first complete pass, the entries of
// endpoints nobody asked for: after a restart, those of pods that went
// while the agent was down. (Entries of endpoints deleted later go with
// their Forget.)
func (s *Syncer) prune(context.Context) error {
	live := map[uint16]bool{datapath.HostEndpointID: true}
	for _, ep := range s.Endpoints() {
		live[ep.ID] = true
	}
	var errs []error
	for _, id := range s.pm.Endpoints() {
		if !live[id] {
			errs = append(errs, s.pm.Delete(id))
		}
	}
	return errors.Join(errs...)
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
		if ls := s.loop.Status(); ls.State != api.StateOK {
			st.Message = ls.Message
		}
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
