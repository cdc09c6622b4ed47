package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

var base = time.Now().Add(-time.Minute).Truncate(time.Second)

// node is a test agent: an observer behind a unix socket.
type node struct {
	name string
	obs  *observer.Observer
	addr string
}

func startNode(t *testing.T, name string, svc *peer.Service) *node {
	t.Helper()
	sock := filepath.Join(t.TempDir(), name+".sock")
	o := observer.New(observer.Options{NodeName: name, Address: "unix://" + sock, Capacity: 1000})
	svcs := transport.Services{Observer: o}
	if svc != nil {
		svcs.Peer = svc
	}
	s, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, svcs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &node{name: name, obs: o, addr: "unix://" + sock}
}

// publish puts a flow observed at base+ms milliseconds.
func (n *node) publish(ms int, verdict flowpb.Verdict) {
	n.obs.Publish(&flowpb.Flow{
		Time: timestamppb.New(base.Add(time.Duration(ms) * time.Millisecond)), NodeName: n.name, Verdict: verdict,
		Summary: fmt.Sprintf("%s@%d", n.name, ms),
		Source:  &flowpb.Endpoint{Namespace: "ns-" + n.name, PodName: "p"},
	})
}

// startRelay serves a relay and returns a client of it.
func startRelay(t *testing.T, o Options) observerpb.ObserverClient {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	sock := filepath.Join(t.TempDir(), "relay.sock")
	s, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return observerpb.NewObserverClient(conn)
}

type received struct {
	flows       []string
	unavailable []string
}

func recvAll(t *testing.T, st observerpb.Observer_GetFlowsClient, max int) (received, error) {
	t.Helper()
	var r received
	for len(r.flows) < max {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
		if f := resp.GetFlow(); f != nil {
			r.flows = append(r.flows, f.GetSummary())
		}
		if ns := resp.GetNodeStatus(); ns != nil && ns.GetStateChange() == relaypb.NodeState_NODE_UNAVAILABLE {
			r.unavailable = append(r.unavailable, ns.GetNodeNames()...)
		}
	}
	return r, nil
}

func TestMergeInTimeOrder(t *testing.T) {
	n1, n2 := startNode(t, "n1", nil), startNode(t, "n2", nil)
	for _, ms := range []int{10, 20, 30, 60, 70} {
		n1.publish(ms, flowpb.Verdict_FORWARDED)
	}
	for _, ms := range []int{5, 25, 40, 50, 80} {
		n2.publish(ms, flowpb.Verdict_DROPPED)
	}
	nobody := "unix://" + filepath.Join(t.TempDir(), "nobody.sock")
	c := startRelay(t, Options{Peers: []string{n1.addr, n2.addr, nobody}})
	ctx := context.Background()
	get := func(req *observerpb.GetFlowsRequest) received {
		t.Helper()
		st, err := c.GetFlows(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		r, err := recvAll(t, st, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := get(&observerpb.GetFlowsRequest{})
	want := "n2@5 n1@10 n1@20 n2@25 n1@30 n2@40 n2@50 n1@60 n1@70 n2@80"
	if g := strings.Join(r.flows, " "); g != want {
		t.Errorf("merged:\n%s\nwant\n%s", g, want)
	}
	if len(r.unavailable) != 1 || r.unavailable[0] != nobody {
		t.Errorf("unavailable nodes reported: %v", r.unavailable)
	}
	if g := strings.Join(get(&observerpb.GetFlowsRequest{Number: 3}).flows, " "); g != "n1@60 n1@70 n2@80" {
		t.Errorf("last 3: %s", g)
	}
	if g := strings.Join(get(&observerpb.GetFlowsRequest{Number: 3, First: true}).flows, " "); g != "n2@5 n1@10 n1@20" {
		t.Errorf("first 3: %s", g)
	}
	dropped := []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}
	if g := strings.Join(get(&observerpb.GetFlowsRequest{Whitelist: dropped, Number: 2}).flows, " "); g != "n2@50 n2@80" {
		t.Errorf("filtered: %s", g)
	}

	// Bad filters are refused by the relay itself, naming the field.
	st, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{NodeName: []string{"a/b/c"}}}})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "whitelist[0].node_name[0]: ") {
		t.Errorf("invalid filter: %v", err)
	}

	// Aggregates.
	ss, err := c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ss.GetNumFlows() != 10 || ss.GetMaxFlows() != 2000 || ss.GetNumConnectedNodes().GetValue() != 2 || ss.GetNumUnavailableNodes().GetValue() != 1 {
		t.Errorf("status %v", ss)
	}
	nodes, err := c.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nodes.GetNodes() {
		got = append(got, n.GetName()+"="+n.GetState().String())
	}
	if g := strings.Join(got, " "); g != "n1=NODE_CONNECTED n2=NODE_CONNECTED "+nobody+"=NODE_UNAVAILABLE" {
		t.Errorf("nodes: %s", g)
	}
	nss, err := c.GetNamespaces(ctx, &observerpb.GetNamespacesRequest{})
	if err != nil || len(nss.GetNamespaces()) != 2 || nss.GetNamespaces()[0].GetNamespace() != "ns-n1" {
		t.Errorf("namespaces %v %v", nss, err)
	}
}

// TestFollowMerge: followed flows of two nodes arrive in time order, and a
// node that stays quiet delays the others by at most the sort window.
func TestFollowMerge(t *testing.T) {
	svc := peer.NewService()
	n1, n2 := startNode(t, "n1", svc), startNode(t, "n2", nil)
	svc.Set([]peer.Peer{{Name: "n1", Address: n1.addr}, {Name: "n2", Address: n2.addr}})
	// Discovery through n1's Peer service.
	c := startRelay(t, Options{PeerService: n1.addr, SortWindow: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Wait until the relay knows both nodes.
	for {
		ns, err := c.GetNodes(ctx, &observerpb.GetNodesRequest{})
		if err == nil && len(ns.GetNodes()) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("relay never discovered both nodes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A marker per node, so that both streams are known to be live.
	n1.publish(0, flowpb.Verdict_FORWARDED)
	n2.publish(1, flowpb.Verdict_FORWARDED)
	st, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := recvAll(t, st, 2)
	if err != nil || strings.Join(r.flows, " ") != "n1@0 n2@1" {
		t.Fatalf("markers: %v %v", r.flows, err)
	}
	// Published out of order across nodes, delivered in time order.
	n2.publish(300, flowpb.Verdict_FORWARDED)
	n1.publish(100, flowpb.Verdict_FORWARDED)
	n2.publish(400, flowpb.Verdict_FORWARDED)
	n1.publish(200, flowpb.Verdict_FORWARDED)
	r, err = recvAll(t, st, 4)
	if err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(r.flows, " "); g != "n1@100 n1@200 n2@300 n2@400" {
		t.Errorf("followed: %s", g)
	}
	// Only n1 speaks now: its flow still arrives (after the window).
	n1.publish(500, flowpb.Verdict_FORWARDED)
	r, err = recvAll(t, st, 1)
	if err != nil || strings.Join(r.flows, " ") != "n1@500" {
		t.Errorf("quiet node: %v %v", r.flows, err)
	}
}
