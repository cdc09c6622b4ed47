package bgp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

// TestSpeaker runs the speaker against a GoBGP router in a private network
// namespace: the test binary runs itself again from a thread inside it,
// so that every socket of both speakers lives there.
func TestSpeaker(t *testing.T) {
	if os.Getenv("LUMEN_BGP_SPEAKER_TEST") == "1" {
		speakerScenario(t)
		return
	}
	testutil.RequirePrivileged(t)
	ns, name := testutil.NewNetNS(t, "bgp")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSpeaker$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "LUMEN_BGP_SPEAKER_TEST=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netnsutil.Do(ns, cmd.Start); err != nil {
		t.Fatalf("starting the scenario in %s: %v", name, err)
	}
	err := cmd.Wait()
	t.Logf("scenario in namespace %s:\n%s", name, out.String())
	if err != nil {
		t.Fatalf("scenario failed: %v", err)
	}
}

const (
	routerAddr = "127.0.0.2" // the GoBGP router's listening address
	deadAddr   = "127.0.0.9" // nobody listens: connections are refused
)

// speakerScenario runs inside the namespace.
func speakerScenario(t *testing.T) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rtr := startTestRouter(t, ctx)

	v4, v6 := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:10:99::1")
	pod4, pod6 := netip.MustParsePrefix("10.200.1.0/24"), netip.MustParsePrefix("fd00:10:200:1::/64")
	lbAddr := netip.MustParsePrefix("10.50.0.1/32")
	router := Neighbor{Address: netip.MustParseAddr(routerAddr), ASN: 65000, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
		GracefulRestart: true, RestartTime: 30 * time.Second}
	dead := Neighbor{Address: netip.MustParseAddr(deadAddr), ASN: 65009, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: 8 * time.Second}
	router.fillDefaults()
	dead.fillDefaults()
	spec := RouterSpec{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{router, dead}, Source: "test",
		Routes: []Route{{pod4, v4, "pod-cidr"}, {pod6, v6, "pod-cidr"}}}

	s := NewSpeaker(log, nil)
	if err := s.Apply(ctx, []RouterSpec{spec}); err != nil {
		t.Fatal(err)
	}
	stopTicks := ticking(s)
	waitFor(t, "the session to be established with both families", func() bool {
		p := peer(s, routerAddr)
		return p.State == api.BGPEstablished && len(p.Families) == 2 && p.PrefixesSent == 2
	})
	waitFor(t, "the router to learn both pod CIDRs", func() bool {
		r := rtr.rib(t)
		return r[pod4] == (ribEntry{v4, false}) && r[pod6] == (ribEntry{v6, false})
	})
	p := peer(s, routerAddr)
	if p.LocalASN != 65001 || p.PeerASN != 65000 || p.HoldTime != 9 || p.Keepalive != 3 || !p.GracefulRestart || p.RestartTime != 30 || p.Since.IsZero() || p.Source != "test" {
		t.Errorf("peer row: %+v", p)
	}
	routes := s.Routes(ctx)
	if len(routes) != 2 || routes[0].Prefix != pod4.String() || !slices.Equal(routes[0].AdvertisedTo, []string{routerAddr}) || routes[1].NextHop != v6.String() {
		t.Errorf("routes: %+v", routes)
	}

	// The dead peer is shown down, retried with a growing back-off.
	var seen []uint64
	downSince := peer(s, deadAddr).Since
	waitFor(t, "the dead peer's back-off to grow", func() bool {
		p := peer(s, deadAddr)
		if p.Since.IsZero() || p.Since.After(downSince) && !downSince.IsZero() {
			t.Fatalf("dead peer down since %s, earlier %s: the back-off must not reset it", p.Since, downSince)
		}
		if p.State == api.BGPEstablished {
			t.Fatalf("dead peer established: %+v", p)
		}
		if len(seen) == 0 || seen[len(seen)-1] != p.NextRetry {
			seen = append(seen, p.NextRetry)
		}
		return len(seen) >= 3
	})
	if !slices.IsSorted(seen) || seen[0] != 4 {
		t.Errorf("back-off steps %v: want growing from 4s", seen)
	}
	t.Logf("dead peer back-off steps: %v", seen)

	// Route changes: one withdrawn, one added.
	spec.Routes = []Route{{pod4, v4, "pod-cidr"}, {lbAddr, v4, "service a/b"}}
	if err := s.Apply(ctx, []RouterSpec{spec}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the router to follow the route changes", func() bool {
		r := rtr.rib(t)
		_, has6 := r[pod6]
		return !has6 && r[lbAddr] == (ribEntry{v4, false})
	})

	// A restart: the sessions close without a NOTIFICATION; the router keeps
	// the routes as stale; the new speaker refreshes what it still has and
	// the router drops the rest after the End-of-RIB.
	stopTicks()
	s.Close(ctx, true)
	waitFor(t, "the router to keep the routes as stale", func() bool {
		r := rtr.rib(t)
		return r[pod4] == (ribEntry{v4, true}) && r[lbAddr] == (ribEntry{v4, true})
	})
	s = NewSpeaker(log, nil)
	spec.Routes = []Route{{pod4, v4, "pod-cidr"}}
	if err := s.Apply(ctx, []RouterSpec{spec}); err != nil {
		t.Fatal(err)
	}
	defer ticking(s)()
	waitFor(t, "the router to take the refreshed routes and drop the others", func() bool {
		r := rtr.rib(t)
		_, hasLB := r[lbAddr]
		return r[pod4] == (ribEntry{v4, false}) && !hasLB
	})

	// No router any more: the peer gets a NOTIFICATION and drops everything.
	if err := s.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the router to drop the routes of a removed speaker", func() bool { return len(rtr.rib(t)) == 0 })
	if ps := s.Peers(ctx); len(ps) != 0 {
		t.Errorf("peers after removing the router: %+v", ps)
	}
}

// ticking ticks the speaker every second, as the controller does, until
// the returned function is called.
func ticking(s *Speaker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			s.Tick(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func peer(s *Speaker, addr string) api.BGPPeer {
	for _, p := range s.Peers(context.Background()) {
		if p.PeerAddress == addr {
			return p
		}
	}
	return api.BGPPeer{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testRouter is a GoBGP speaker listening on routerAddr:179, a graceful
// restart helper for the node at 127.0.0.1.
type testRouter struct{ srv *server.BgpServer }

type ribEntry struct {
	nextHop netip.Addr
	stale   bool
}

func startTestRouter(t *testing.T, ctx context.Context) *testRouter {
	srv := server.NewBgpServer()
	go srv.Serve()
	t.Cleanup(srv.Stop)
	if err := srv.StartBgp(ctx, &gobgp.StartBgpRequest{Global: &gobgp.Global{Asn: 65000, RouterId: "10.0.0.250", ListenPort: 179, ListenAddresses: []string{routerAddr}}}); err != nil {
		t.Fatal(err)
	}
	p := &gobgp.Peer{
		Conf:            &gobgp.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport:       &gobgp.Transport{PassiveMode: true, LocalAddress: routerAddr},
		GracefulRestart: &gobgp.GracefulRestart{Enabled: true, RestartTime: 30},
	}
	for _, afi := range []gobgp.Family_Afi{gobgp.Family_AFI_IP, gobgp.Family_AFI_IP6} {
		p.AfiSafis = append(p.AfiSafis, &gobgp.AfiSafi{
			Config:            &gobgp.AfiSafiConfig{Family: &gobgp.Family{Afi: afi, Safi: gobgp.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &gobgp.MpGracefulRestart{Config: &gobgp.MpGracefulRestartConfig{Enabled: true}},
		})
	}
	if err := srv.AddPeer(ctx, &gobgp.AddPeerRequest{Peer: p}); err != nil {
		t.Fatal(err)
	}
	return &testRouter{srv: srv}
}

// rib lists the router's best paths with their next hops.
func (r *testRouter) rib(t *testing.T) map[netip.Prefix]ribEntry {
	out := map[netip.Prefix]ribEntry{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: gobgp.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
			p, err := netip.ParsePrefix(nlri.String())
			if err != nil || len(paths) == 0 {
				return
			}
			var e ribEntry
			for _, a := range paths[0].Attrs {
				switch x := a.(type) {
				case *bgp.PathAttributeNextHop:
					e.nextHop = x.Value
				case *bgp.PathAttributeMpReachNLRI:
					e.nextHop = x.Nexthop
				}
			}
			e.stale = paths[0].Stale
			out[p] = e
		})
		if err != nil {
			t.Fatalf("listing the router's %s paths: %v", fam, err)
		}
	}
	return out
}

// String helps failure messages.
func (e ribEntry) String() string { return fmt.Sprintf("via %s stale=%v", e.nextHop, e.stale) }
