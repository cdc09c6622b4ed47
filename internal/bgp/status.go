package bgp

// The speaker's state for the API: peers, routes and a summary.

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"time"

	gobgp "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/lumen-net/lumen/internal/api"
)

// Peers describes every session.
func (s *Speaker) Peers(ctx context.Context) []api.BGPPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.BGPPeer{}
	for _, asn := range sortedASNs(s.routers) {
		r := s.routers[asn]
		got := map[string]*gobgp.Peer{}
		err := r.srv.ListPeer(ctx, &gobgp.ListPeerRequest{EnableAdvertised: true}, func(p *gobgp.Peer) {
			if p.Conf != nil {
				got[p.Conf.NeighborAddress] = p
			}
		})
		for _, n := range r.spec.Neighbors {
			row := api.BGPPeer{
				LocalASN: asn, RouterID: r.spec.RouterID.String(), PeerAddress: n.Address.String(), PeerPort: n.Port, PeerASN: n.ASN,
				State: api.BGPIdle, HoldTime: secs(n.HoldTime), Keepalive: secs(n.KeepaliveTime),
				GracefulRestart: n.GracefulRestart, Source: r.spec.Source,
			}
			if n.GracefulRestart {
				row.RestartTime = secs(n.RestartTime)
			}
			ns := r.neighbors[n.Address]
			p := got[n.Address.String()]
			switch {
			case err != nil:
				row.LastError = "listing peers: " + err.Error()
			case ns == nil:
				row.LastError = "not configured"
			case p == nil && ns.configured:
				row.LastError = "not configured in the speaker"
			}
			if ns != nil && ns.lastErr != "" {
				row.LastError = ns.lastErr
			}
			if p != nil {
				fillPeer(&row, p, ns)
			}
			out = append(out, row)
		}
	}
	return out
}

func fillPeer(row *api.BGPPeer, p *gobgp.Peer, ns *neighborState) {
	st := p.State
	if st != nil {
		row.State = stateName(bgp.FSMState(st.SessionState - 1))
		if st.DisconnectReason != gobgp.PeerState_DISCONNECT_REASON_UNSPECIFIED && st.SessionState != gobgp.PeerState_SESSION_STATE_ESTABLISHED {
			row.LastError = disconnectReason(st.DisconnectReason, st.DisconnectMessage)
		}
	}
	if t := p.Timers; t != nil && t.State != nil {
		if row.State == api.BGPEstablished {
			if t.State.Uptime != nil {
				row.Since = t.State.Uptime.AsTime().UTC().Truncate(time.Second)
			}
			if t.State.NegotiatedHoldTime != 0 {
				row.HoldTime = t.State.NegotiatedHoldTime
			}
			if t.State.KeepaliveInterval != 0 {
				row.Keepalive = t.State.KeepaliveInterval
			}
		} else if t.State.Downtime != nil && t.State.Downtime.AsTime().Unix() > 0 {
			row.Since = t.State.Downtime.AsTime().UTC().Truncate(time.Second)
		}
	}
	if row.State != api.BGPEstablished && ns != nil {
		if d := ns.downSince.UTC().Truncate(time.Second); !ns.downSince.IsZero() && (row.Since.IsZero() || d.Before(row.Since)) {
			row.Since = d
		}
		row.NextRetry = secs(ns.retry)
		if ns.backoff > 0 {
			row.NextRetry = secs(firstRetry + ns.backoff)
		}
	}
	for _, as := range p.AfiSafis {
		if as.State == nil || as.State.Family == nil {
			continue
		}
		row.PrefixesSent += as.State.Advertised
		row.PrefixesReceived += as.State.Received
		if row.State == api.BGPEstablished && as.State.Enabled {
			row.Families = append(row.Families, familyName(as.State.Family))
		}
	}
	sort.Strings(row.Families)
}

func familyName(f *gobgp.Family) string {
	return bgp.NewFamily(uint16(f.Afi), uint8(f.Safi)).String()
}

func stateName(s bgp.FSMState) string {
	switch s {
	case bgp.BGP_FSM_IDLE:
		return api.BGPIdle
	case bgp.BGP_FSM_CONNECT:
		return api.BGPConnect
	case bgp.BGP_FSM_ACTIVE:
		return api.BGPActive
	case bgp.BGP_FSM_OPENSENT:
		return api.BGPOpenSent
	case bgp.BGP_FSM_OPENCONFIRM:
		return api.BGPOpenConfirm
	case bgp.BGP_FSM_ESTABLISHED:
		return api.BGPEstablished
	}
	return api.BGPIdle
}

func disconnectReason(r gobgp.PeerState_DisconnectReason, msg string) string {
	s := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_"), "_", " "))
	if msg != "" {
		s += ": " + msg
	}
	return s
}

// Routes lists the announced routes and the peers each was advertised to.
func (s *Speaker) Routes(ctx context.Context) []api.BGPRoute {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.BGPRoute{}
	for _, asn := range sortedASNs(s.routers) {
		r := s.routers[asn]
		advertised := map[netip.Prefix][]string{}
		for _, n := range r.spec.Neighbors {
			for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
				_ = r.srv.ListPath(apiutil.ListPathRequest{TableType: gobgp.TableType_TABLE_TYPE_ADJ_OUT, Name: n.Address.String(), Family: fam},
					func(nlri bgp.NLRI, _ []*apiutil.Path) {
						if p, err := netip.ParsePrefix(nlri.String()); err == nil {
							advertised[p] = append(advertised[p], n.Address.String())
						}
					})
			}
		}
		keys := make([]pathKey, 0, len(r.paths))
		for k := range r.paths {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if c := keys[i].prefix.Addr().Compare(keys[j].prefix.Addr()); c != 0 {
				return c < 0
			}
			return keys[i].prefix.Bits() < keys[j].prefix.Bits()
		})
		for _, k := range keys {
			p := r.paths[k]
			to := advertised[k.prefix]
			if to == nil {
				to = []string{}
			}
			sort.Strings(to)
			out = append(out, api.BGPRoute{LocalASN: asn, Prefix: k.prefix.String(), NextHop: k.nextHop.String(), Origin: p.origin, AdvertisedTo: to, Since: p.since.UTC()})
		}
	}
	return out
}

// Summary counts routers, sessions (established of all) and routes.
func (s *Speaker) Summary(ctx context.Context) (routers, established, peers, routes int) {
	for _, p := range s.Peers(ctx) {
		peers++
		if p.State == api.BGPEstablished {
			established++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.routers {
		routers++
		routes += len(r.paths)
	}
	return
}
