package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	gobgp "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// RouterSpec is the desired state of one virtual router: its identity, its
// sessions and the routes it announces on all of them.
type RouterSpec struct {
	ASN       uint32
	RouterID  netip.Addr
	Neighbors []Neighbor
	Routes    []Route
	Source    string
}

// Route is one announced prefix.
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Origin  string // "pod-cidr" or "service NAMESPACE/NAME"
}

// Connect back-off: a session that is not established is retried after
// 2 s, then twice as long each time, up to the neighbor's connect retry
// time, after which GoBGP retries at that interval by itself.
const (
	firstRetry = 2 * time.Second
	// deferralTime bounds how long a restarted speaker waits for the
	// End-of-RIB of every peer before announcing (RFC 4724's selection
	// deferral): Lumen learns nothing from its peers, so it is short.
	deferralTime = 5
	// idleHoldAfterReset keeps a reset session idle for a while.
	idleHoldAfterReset = 5
)

// Speaker keeps one GoBGP server per local ASN equal to the desired state.
// Every method may be called from any goroutine.
type Speaker struct {
	log      *slog.Logger
	gobgpLog *slog.Logger
	level    *slog.LevelVar

	mu      sync.Mutex
	routers map[uint32]*router
}

type router struct {
	spec      RouterSpec
	srv       *server.BgpServer
	neighbors map[netip.Addr]*neighborState
	paths     map[pathKey]*pathState
	log       *slog.Logger
}

type neighborState struct {
	want    Neighbor
	added   time.Time     // last (re)configuration in GoBGP
	backoff time.Duration // current connect back-off; 0 once it reached the configured retry time
	retry   time.Duration // ConnectRetry GoBGP was given
	lastErr string        // why it could not be configured
	// configured says GoBGP has the peer; a failed configuration is
	// retried by the next Apply.
	configured bool
	// downSince is when the session was configured or last seen go down
	// (zero while established); re-adding the peer for the back-off keeps it.
	downSince time.Time
}

type pathKey struct {
	prefix  netip.Prefix
	nextHop netip.Addr
}

type pathState struct {
	id     uuid.UUID
	origin string
	since  time.Time
}

// NewSpeaker returns a speaker with no routers. GoBGP's own logs go to log
// at warning level and above unless level says otherwise.
func NewSpeaker(log *slog.Logger, level *slog.LevelVar) *Speaker {
	if level == nil {
		level = &slog.LevelVar{}
		level.Set(slog.LevelWarn)
	}
	return &Speaker{
		log:      log,
		gobgpLog: slog.New(levelHandler{level: level, h: log.With("component", "gobgp").Handler()}),
		level:    level,
		routers:  map[uint32]*router{},
	}
}

// Apply reconciles the routers with specs: routers no longer wanted stop
// (their peers get a NOTIFICATION and withdraw the routes at once), new ones
// start, and the others get their neighbors and paths updated. Problems are
// returned together; whatever could be applied is.
func (s *Speaker) Apply(ctx context.Context, specs []RouterSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[uint32]RouterSpec{}
	for _, sp := range specs {
		want[sp.ASN] = sp
	}
	var errs []error
	for asn, r := range s.routers {
		sp, ok := want[asn]
		if ok && sp.RouterID == r.spec.RouterID {
			continue
		}
		reason := "no longer configured"
		if ok {
			reason = "router id changed"
		}
		r.log.Info("stopping BGP router", "reason", reason)
		r.srv.Stop()
		delete(s.routers, asn)
	}
	for _, asn := range sortedASNs(want) {
		sp := want[asn]
		r := s.routers[asn]
		if r == nil {
			var err error
			if r, err = s.startRouter(ctx, sp); err != nil {
				errs = append(errs, fmt.Errorf("local ASN %d: %w", asn, err))
				continue
			}
			s.routers[asn] = r
		}
		r.spec = sp
		if err := r.syncNeighbors(ctx, sp.Neighbors); err != nil {
			errs = append(errs, fmt.Errorf("local ASN %d: %w", asn, err))
		}
		if err := r.syncPaths(sp.Routes); err != nil {
			errs = append(errs, fmt.Errorf("local ASN %d: %w", asn, err))
		}
	}
	return errors.Join(errs...)
}

func sortedASNs[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Close stops every router. With graceful, peers with graceful restart get
// no NOTIFICATION: they keep the routes for the restart time, as after a
// crash, so that a restarting agent does not make them flap.
func (s *Speaker) Close(ctx context.Context, graceful bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for asn, r := range s.routers {
		if graceful {
			if err := r.srv.StopBgp(ctx, &gobgp.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
				r.log.Warn("stopping BGP router", "err", err)
			}
		} else {
			r.srv.Stop()
		}
		delete(s.routers, asn)
	}
}

// allowLocal accepts locally originated paths; the global import policy
// rejects everything else, so that nothing learned from one router is
// passed on to another and nothing ends up in the node's tables.
var allowLocal = &gobgp.Policy{
	Name: "lumen-allow-local",
	Statements: []*gobgp.Statement{{
		Name:       "lumen-accept-local",
		Conditions: &gobgp.Conditions{RouteType: gobgp.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &gobgp.Actions{RouteAction: gobgp.RouteAction_ROUTE_ACTION_ACCEPT},
	}},
}

func (s *Speaker) startRouter(ctx context.Context, sp RouterSpec) (*router, error) {
	if !sp.RouterID.Is4() {
		return nil, errors.New("router-id: the node has no IPv4 address to use as BGP identifier; set one")
	}
	log := s.log.With("localASN", sp.ASN)
	srv := server.NewBgpServer(server.LoggerOption(s.gobgpLog.With("localASN", sp.ASN), s.level))
	go srv.Serve()
	fail := func(what string, err error) (*router, error) {
		srv.Stop()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// ListenPort -1: Lumen connects to its peers and listens to nobody.
	if err := srv.StartBgp(ctx, &gobgp.StartBgpRequest{Global: &gobgp.Global{Asn: sp.ASN, RouterId: sp.RouterID.String(), ListenPort: -1}}); err != nil {
		return fail("starting BGP", err)
	}
	if err := srv.AddPolicy(ctx, &gobgp.AddPolicyRequest{Policy: allowLocal}); err != nil {
		return fail("adding the local-routes policy", err)
	}
	if err := srv.SetPolicyAssignment(ctx, &gobgp.SetPolicyAssignmentRequest{Assignment: &gobgp.PolicyAssignment{
		Name: "global", Direction: gobgp.PolicyDirection_POLICY_DIRECTION_IMPORT,
		DefaultAction: gobgp.RouteAction_ROUTE_ACTION_REJECT, Policies: []*gobgp.Policy{allowLocal},
	}}); err != nil {
		return fail("setting the import policy", err)
	}
	err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			st := ev.Peer.State
			switch st.SessionState {
			case bgp.BGP_FSM_ESTABLISHED:
				log.Info("BGP session established", "peer", st.NeighborAddress, "peerASN", st.PeerASN)
			case bgp.BGP_FSM_IDLE, bgp.BGP_FSM_ACTIVE:
				if st.DisconnectReason != gobgp.PeerState_DISCONNECT_REASON_UNSPECIFIED {
					log.Info("BGP session down", "peer", st.NeighborAddress, "state", stateName(st.SessionState), "reason", disconnectReason(st.DisconnectReason, st.DisconnectMessage))
				}
			}
		},
	}, server.WatchPeer())
	if err != nil {
		return fail("watching peers", err)
	}
	log.Info("BGP router started", "routerID", sp.RouterID)
	return &router{spec: sp, srv: srv, neighbors: map[netip.Addr]*neighborState{}, paths: map[pathKey]*pathState{}, log: log}, nil
}

// syncNeighbors adds, removes and replaces sessions.
func (r *router) syncNeighbors(ctx context.Context, want []Neighbor) error {
	wanted := map[netip.Addr]Neighbor{}
	for _, n := range want {
		wanted[n.Address] = n
	}
	var errs []error
	for addr, ns := range r.neighbors {
		if n, ok := wanted[addr]; ok && n == ns.want {
			continue
		}
		if ns.configured {
			if err := r.srv.DeletePeer(ctx, &gobgp.DeletePeerRequest{Address: addr.String()}); err != nil {
				errs = append(errs, fmt.Errorf("removing neighbor %s: %w", addr, err))
				continue
			}
			r.log.Info("BGP neighbor removed", "peer", addr)
		}
		delete(r.neighbors, addr)
	}
	for _, n := range want {
		ns, ok := r.neighbors[n.Address]
		if ok && ns.configured {
			continue
		}
		if !ok {
			ns = &neighborState{want: n, backoff: firstRetry, downSince: time.Now()}
			r.neighbors[n.Address] = ns
		}
		if err := r.addPeer(ctx, ns); err != nil {
			ns.lastErr = "configuring the session: " + err.Error()
			errs = append(errs, fmt.Errorf("adding neighbor %s: %w", n.Address, err))
			continue
		}
		r.log.Info("BGP neighbor added", "peer", n.Address, "peerASN", n.ASN, "gracefulRestart", n.GracefulRestart, "restartTime", n.RestartTime)
	}
	return errors.Join(errs...)
}

// addPeer configures the neighbor in GoBGP with the connect retry of its
// current back-off step.
func (r *router) addPeer(ctx context.Context, ns *neighborState) error {
	retry := ns.want.ConnectRetry
	p := toGoBGPPeer(ns.want, retry)
	if err := r.srv.AddPeer(ctx, &gobgp.AddPeerRequest{Peer: p}); err != nil {
		ns.configured = false
		return err
	}
	ns.added, ns.retry, ns.configured, ns.lastErr = time.Now(), retry, true, ""
	return nil
}

// toGoBGPPeer builds GoBGP's peer configuration: IPv4 and IPv6 unicast on
// every session, graceful restart as configured. LocalRestarting makes the
// OPEN carry the Restart State and Forwarding bits, so that a router still
// holding this node's routes as stale keeps them until the End-of-RIB.
func toGoBGPPeer(n Neighbor, retry time.Duration) *gobgp.Peer {
	p := &gobgp.Peer{
		Conf: &gobgp.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
		Timers: &gobgp.Timers{Config: &gobgp.TimersConfig{
			ConnectRetry: secs(retry), HoldTime: secs(n.HoldTime), KeepaliveInterval: secs(n.KeepaliveTime),
			IdleHoldTimeAfterReset: idleHoldAfterReset,
		}},
		Transport: &gobgp.Transport{RemotePort: uint32(n.Port)},
	}
	if n.SourceAddress.IsValid() {
		p.Transport.LocalAddress = n.SourceAddress.String()
	} else if n.Address.Is4() {
		p.Transport.LocalAddress = "0.0.0.0"
	} else {
		p.Transport.LocalAddress = "::"
	}
	if n.EBGPMultihopTTL > 1 {
		p.EbgpMultihop = &gobgp.EbgpMultihop{Enabled: true, MultihopTtl: uint32(n.EBGPMultihopTTL)}
	}
	if n.GracefulRestart {
		p.GracefulRestart = &gobgp.GracefulRestart{
			Enabled: true, RestartTime: uint32(n.RestartTime / time.Second),
			LocalRestarting: true, DeferralTime: deferralTime,
		}
	}
	for _, afi := range []gobgp.Family_Afi{gobgp.Family_AFI_IP, gobgp.Family_AFI_IP6} {
		as := &gobgp.AfiSafi{Config: &gobgp.AfiSafiConfig{Family: &gobgp.Family{Afi: afi, Safi: gobgp.Family_SAFI_UNICAST}, Enabled: true}}
		if n.GracefulRestart {
			as.MpGracefulRestart = &gobgp.MpGracefulRestart{Config: &gobgp.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, as)
	}
	return p
}

func secs(d time.Duration) uint64 { return uint64(d / time.Second) }

// syncPaths announces missing routes and withdraws stale ones.
func (r *router) syncPaths(routes []Route) error {
	want := map[pathKey]string{}
	for _, rt := range routes {
		want[pathKey{rt.Prefix.Masked(), rt.NextHop}] = rt.Origin
	}
	var errs []error
	var stale []uuid.UUID
	var staleKeys []pathKey
	for k, p := range r.paths {
		if origin, ok := want[k]; ok {
			p.origin = origin
			continue
		}
		stale = append(stale, p.id)
		staleKeys = append(staleKeys, k)
	}
	if len(stale) > 0 {
		if err := r.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: stale}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %d routes: %w", len(stale), err))
		} else {
			for _, k := range staleKeys {
				r.log.Info("BGP route withdrawn", "prefix", k.prefix, "nextHop", k.nextHop)
				delete(r.paths, k)
			}
		}
	}
	var keys []pathKey
	var paths []*apiutil.Path
	for k := range want {
		if _, ok := r.paths[k]; ok {
			continue
		}
		p, err := toGoBGPPath(k.prefix, k.nextHop)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", k.prefix, k.nextHop, err))
			continue
		}
		keys = append(keys, k)
		paths = append(paths, p)
	}
	if len(paths) > 0 {
		resps, err := r.srv.AddPath(apiutil.AddPathRequest{Paths: paths})
		if err != nil {
			errs = append(errs, fmt.Errorf("announcing %d routes: %w", len(paths), err))
		}
		for i, resp := range resps {
			if resp.Error != nil {
				continue
			}
			k := keys[i]
			r.paths[k] = &pathState{id: resp.UUID, origin: want[k], since: time.Now()}
			r.log.Info("BGP route announced", "prefix", k.prefix, "nextHop", k.nextHop, "origin", want[k])
		}
	}
	return errors.Join(errs...)
}

func toGoBGPPath(prefix netip.Prefix, nextHop netip.Addr) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, err
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	family := bgp.RF_IPv4_UC
	switch {
	case prefix.Addr().Is4() && nextHop.Is4():
		nh, err := bgp.NewPathAttributeNextHop(nextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	case prefix.Addr().Is6() && nextHop.Is6():
		family = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	default:
		return nil, errors.New("next hop of another family")
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs, Age: time.Now().Unix()}, nil
}

// Tick moves the connect back-off of sessions that are not established:
// each step reconfigures the peer, which makes GoBGP try again about two
// seconds later, and doubles the wait for the next step.
func (s *Speaker) Tick(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.routers {
		states := map[string]gobgp.PeerState_SessionState{}
		_ = r.srv.ListPeer(ctx, &gobgp.ListPeerRequest{}, func(p *gobgp.Peer) {
			if p.State != nil && p.Conf != nil {
				states[p.Conf.NeighborAddress] = p.State.SessionState
			}
		})
		for addr, ns := range r.neighbors {
			if !ns.configured {
				continue // Apply tries again
			}
			switch states[addr.String()] {
			case gobgp.PeerState_SESSION_STATE_ESTABLISHED:
				ns.backoff = firstRetry // for the next time it goes down
				ns.downSince = time.Time{}
				continue
			case gobgp.PeerState_SESSION_STATE_OPENSENT, gobgp.PeerState_SESSION_STATE_OPENCONFIRM:
				continue // a connection is being set up
			}
			if ns.downSince.IsZero() {
				ns.downSince = time.Now()
			}
			if ns.backoff == 0 || time.Since(ns.added) < firstRetry+ns.backoff {
				continue
			}
			next := 2 * ns.backoff
			if next >= ns.want.ConnectRetry {
				next = 0 // GoBGP's connect retry takes over from here
			}
			if err := r.srv.DeletePeer(ctx, &gobgp.DeletePeerRequest{Address: addr.String()}); err != nil {
				r.log.Warn("BGP connect back-off: removing neighbor", "peer", addr, "err", err)
				continue
			}
			ns.backoff = next
			if err := r.addPeer(ctx, ns); err != nil {
				ns.lastErr = "configuring the session: " + err.Error()
				r.log.Warn("BGP connect back-off: re-adding neighbor", "peer", addr, "err", err)
				continue
			}
			r.log.Debug("BGP neighbor not established, retrying", "peer", addr, "nextStep", next)
		}
	}
}

// levelHandler filters GoBGP's records by a level of our own, so that its
// chatter stays out of the agent's log unless asked for.
type levelHandler struct {
	level *slog.LevelVar
	h     slog.Handler
}

func (l levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.level.Level() && l.h.Enabled(ctx, lv)
}
func (l levelHandler) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{level: l.level, h: l.h.WithAttrs(a)}
}
func (l levelHandler) WithGroup(g string) slog.Handler {
	return levelHandler{level: l.level, h: l.h.WithGroup(g)}
}
