package datapath

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

// TestNodePortSNATSparesNodeSockets: the SNAT ports are the kernel's
// ephemeral ports too. A NodePort flow must not be given the port of one of
// the node's own connections to the same backend, and a backend's reply on
// such a tuple belongs to that connection even when a (stale) SNAT entry
// names it: diverted to the NodePort client, the node's connection hung
// (seen in TestLBAgentRestart, a node's socket-LB connection to a remote
// backend against external clients' NodePort churn).
func TestNodePortSNATSparesNodeSockets(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	h, err := netlink.NewHandleAt(f.ns)
	must(t, err)
	defer h.Close()
	eth0 := f.devs["eth0"]
	lo, err := h.LinkByName("lo")
	must(t, err)
	must(t, h.LinkSetUp(lo))
	node := netip.MustParseAddr("10.99.0.1")
	client := netip.MustParseAddr("10.99.0.200")
	backend := netip.MustParseAddr("10.200.2.5")
	must(t, h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: node.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
	must(t, h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.ParseIP("10.200.2.0"), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.99.0.2"), LinkIndex: eth0.Attrs().Index}))
	// The backend answers in the namespace itself, so that the node's
	// connection to it is a real established socket.
	must(t, h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: backend.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, netnsutil.Do(f.ns, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }))
	must(t, f.dp.SetConfig(RuntimeConfig{NodeIPv4: node}))
	must(t, f.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.PrefixFrom(node, 32), Identity: 1}))
	must(t, f.dp.UpsertBackend(1, Backend{Addr: backend, Port: 80, Proto: 6}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30080, Proto: 6}, RevNat: 1, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, f.dp.UpsertRevNat(1, node, 30080))

	syn := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: client, Dst: node, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes()
	res := f.run(HookFromNetdev, "eth0", syn)
	// (The backend's address is local here: the translated packet goes to
	// the stack rather than out of eth0.)
	src, port := srcOf(res.Data)
	if dst, _ := dstOf(res.Data); res.Verdict == tcActShot || src != node || dst != backend {
		t.Fatalf("NodePort to a remote backend: verdict %d, translated to %s:%d -> %s, want from %s to %s", res.Verdict, src, port, dst, node, backend)
	}
	// Forget the flow (its SNAT entry stays, as after the client left),
	// then let the node open a connection to the backend from that port.
	var rk lxcSnatRevKey
	var rv lxcSnatRevValue
	it := f.dp.lxc.LumenSnatRev.Iterate()
	if !it.Next(&rk, &rv) {
		t.Fatalf("no SNAT entry: %v", it.Err())
	}
	var fk lxcSnatFwdKey
	var fv uint16
	for fit := f.dp.lxc.LumenSnatFwd.Iterate(); fit.Next(&fk, &fv); {
		must(t, f.dp.lxc.LumenSnatFwd.Delete(&fk))
	}
	must(t, f.dp.lxc.LumenSnatRev.Delete(&rk))
	var conn net.Conn
	must(t, netnsutil.Do(f.ns, func() error {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(backend, 80).String())
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(node, port))}
		conn, err = d.Dial("tcp4", netip.AddrPortFrom(backend, 80).String())
		return err
	}))
	defer conn.Close()

	// The same flow again (same hash, same first candidate port): it gets
	// another port.
	res = f.run(HookFromNetdev, "eth0", syn)
	if src, p2 := srcOf(res.Data); res.Verdict == tcActShot || src != node || p2 == port {
		t.Errorf("NodePort flow while the node's connection uses port %d: verdict %d, translated from %s:%d, want another port", port, res.Verdict, src, p2)
	}

	// A stale SNAT entry naming the node's connection: its replies stay
	// its own.
	must(t, f.dp.lxc.LumenSnatRev.Put(&rk, &rv))
	reply := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: backend, Dst: node, Proto: 6, SrcPort: 80, DstPort: port, TTL: 64, TCPFlags: 0x10}.Bytes()
	res = f.run(HookFromNetdev, "eth0", reply)
	dst, dport := dstOf(res.Data)
	if res.Verdict != tcActOK || dst != node || dport != port {
		t.Errorf("reply to the node's connection %s:%d: verdict %d, sent to %s:%d, want it passed to the stack untouched", node, port, res.Verdict, dst, dport)
	}
}
