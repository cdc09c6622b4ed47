package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

func TestServiceDNATAndReverse(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	vip := netip.MustParseAddr("10.96.0.10")
	vip6 := netip.MustParseAddr("fd00:96::10")
	must(t, f.dp.UpsertBackend(7, Backend{Addr: podB4, Port: 8080, Proto: 6}))
	must(t, f.dp.UpsertBackend(8, Backend{Addr: podB6, Port: 8080, Proto: 17}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: vip, Port: 80, Proto: 6, Scope: ScopeExternal}, RevNat: 3, Backends: []uint32{7}}, 0))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: vip6, Port: 53, Proto: 17, Scope: ScopeExternal}, RevNat: 4, Backends: []uint32{8}}, 0))
	must(t, f.dp.UpsertRevNat(3, vip, 80))
	must(t, f.dp.UpsertRevNat(4, vip6, 53))

	for _, c := range []struct {
		name         string
		client, vip  netip.Addr
		backend      netip.Addr
		proto        uint8
		vport, bport uint16
	}{
		{"tcp4", podA4, vip, podB4, 6, 80, 8080},
		{"udp6", podA6, vip6, podB6, 17, 53, 8080},
	} {
		t.Run(c.name, func(t *testing.T) {
			pkt := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: c.client, Dst: c.vip, Proto: c.proto, SrcPort: 40000, DstPort: c.vport, TTL: 64, TCPFlags: 0x02, Payload: []byte("hello")}.Bytes()
			res := f.run(HookFromContainer, "lxca", pkt)
			if res.Verdict != tcActRedirect || !bytes.Equal(res.Data[0:6], podBMAC) {
				t.Fatalf("to the service: verdict %d, MAC %x", res.Verdict, res.Data[0:6])
			}
			dst, dport := dstOf(res.Data)
			if dst != c.backend || dport != c.bport {
				t.Errorf("DNAT to %s:%d, want %s:%d", dst, dport, c.backend, c.bport)
			}
			if !VerifyL4Checksum(res.Data) {
				t.Error("L4 checksum broken by DNAT")
			}
			if c.client.Is4() && IPv4Checksum(res.Data[14:34]) != binary.BigEndian.Uint16(res.Data[24:26]) {
				t.Error("IPv4 checksum broken by DNAT")
			}
			// The backend's reply reaches the client from the frontend.
			reply := Packet{SrcMAC: podBMAC, DstMAC: hostBMAC, Src: c.backend, Dst: c.client, Proto: c.proto, SrcPort: c.bport, DstPort: 40000, TTL: 64, TCPFlags: 0x12, Payload: []byte("world")}.Bytes()
			res = f.run(HookToContainer, "lxca", reply)
			if res.Verdict != tcActOK {
				t.Fatalf("reply: verdict %d", res.Verdict)
			}
			src, sport := srcOf(res.Data)
			if src != c.vip || sport != c.vport {
				t.Errorf("reverse NAT: reply from %s:%d, want %s:%d", src, sport, c.vip, c.vport)
			}
			if !VerifyL4Checksum(res.Data) {
				t.Error("L4 checksum broken by reverse NAT")
			}
		})
	}

	// A service without backends drops, with a reason.
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: vip, Port: 81, Proto: 6}, RevNat: 5}, 0))
	res := f.run(HookFromContainer, "lxca", tcpPort(podA4, vip, 40100, 81, 0x02))
	if res.Verdict != tcActShot || f.dropCount(158) != 1 {
		t.Errorf("no backend: verdict %d, drops %d", res.Verdict, f.dropCount(158))
	}
	svcs, err := f.dp.Services()
	must(t, err)
	if len(svcs) != 3 {
		t.Errorf("services %+v", svcs)
	}
}

func TestServiceConnectionsKeepTheirBackend(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	vip := netip.MustParseAddr("10.96.0.11")
	other := netip.MustParseAddr("10.200.1.99")
	must(t, f.dp.UpsertBackend(1, Backend{Addr: podB4, Port: 80, Proto: 6}))
	must(t, f.dp.UpsertBackend(2, Backend{Addr: other, Port: 80, Proto: 6}))
	fe := Frontend{Addr: vip, Port: 80, Proto: 6}
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: fe, RevNat: 9, Backends: []uint32{1}}, 0))
	res := f.run(HookFromContainer, "lxca", tcpPort(podA4, vip, 45000, 80, 0x02))
	if dst, _ := dstOf(res.Data); dst != podB4 {
		t.Fatalf("first packet to %s", dst)
	}
	// Backend 1 starts terminating: new connections go to backend 2, the
	// established one stays on 1.
	must(t, f.dp.UpsertBackend(1, Backend{Addr: podB4, Port: 80, Proto: 6, Terminating: true}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: fe, RevNat: 9, Backends: []uint32{2}}, 1))
	res = f.run(HookFromContainer, "lxca", tcpPort(podA4, vip, 45000, 80, 0x10))
	if dst, _ := dstOf(res.Data); dst != podB4 {
		t.Errorf("established connection moved to %s", dst)
	}
	res = f.run(HookFromContainer, "lxca", tcpPort(podA4, vip, 45001, 80, 0x02))
	if dst, _ := dstOf(res.Data); dst != other {
		t.Errorf("new connection went to %s, want the active backend %s", dst, other)
	}
}

func dstOf(frame []byte) (netip.Addr, uint16) {
	if binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
		return netip.AddrFrom4([4]byte(frame[30:34])), binary.BigEndian.Uint16(frame[36:])
	}
	return netip.AddrFrom16([16]byte(frame[38:54])), binary.BigEndian.Uint16(frame[56:])
}

func srcOf(frame []byte) (netip.Addr, uint16) {
	if binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
		return netip.AddrFrom4([4]byte(frame[26:30])), binary.BigEndian.Uint16(frame[34:])
	}
	return netip.AddrFrom16([16]byte(frame[22:38])), binary.BigEndian.Uint16(frame[54:])
}

// remoteBackendNode makes the fixture a node (10.99.0.1 on eth0, forwarding)
// that routes the pod CIDR 10.200.2.0/24 to another node, and returns the
// node's address, an outside client and a backend on the other node.
func (f *fixture) remoteBackendNode(t *testing.T) (node, client, backend netip.Addr) {
	t.Helper()
	h, err := netlink.NewHandleAt(f.ns)
	must(t, err)
	defer h.Close()
	eth0 := f.devs["eth0"]
	must(t, h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.99.0.1"), Mask: net.CIDRMask(24, 32)}}))
	must(t, h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.ParseIP("10.200.2.0"), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.99.0.2"), LinkIndex: eth0.Attrs().Index}))
	must(t, netnsutil.Do(f.ns, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }))
	node = netip.MustParseAddr("10.99.0.1")
	client = netip.MustParseAddr("10.99.0.200")
	backend = netip.MustParseAddr("10.200.2.5")
	must(t, f.dp.SetConfig(RuntimeConfig{NodeIPv4: node}))
	must(t, f.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.PrefixFrom(node, 32), Identity: 1}))
	return node, client, backend
}

func TestNodePortSNATToRemoteBackend(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	node, client, backend := f.remoteBackendNode(t)
	must(t, f.dp.UpsertBackend(1, Backend{Addr: backend, Port: 80, Proto: 6}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30080, Proto: 6}, RevNat: 1, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, f.dp.UpsertRevNat(1, node, 30080))

	in := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: client, Dst: node, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes()
	res := f.run(HookFromNetdev, "eth0", in)
	if res.Verdict != tcActRedirect {
		t.Fatalf("NodePort to a remote backend: verdict %d, want redirect", res.Verdict)
	}
	src, sport := srcOf(res.Data)
	dst, dport := dstOf(res.Data)
	if src != node || sport < 32768 || dst != backend || dport != 80 {
		t.Fatalf("translated to %s:%d -> %s:%d, want %s:(>=32768) -> %s:80", src, sport, dst, dport, node, backend)
	}
	if !VerifyL4Checksum(res.Data) {
		t.Error("L4 checksum broken by DNAT+SNAT")
	}
	// The same flow keeps its port.
	res2 := f.run(HookFromNetdev, "eth0", Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: client, Dst: node, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x10}.Bytes())
	if _, p2 := srcOf(res2.Data); p2 != sport {
		t.Errorf("second packet got port %d, first %d", p2, sport)
	}

	reply := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: backend, Dst: node, Proto: 6, SrcPort: 80, DstPort: sport, TTL: 64, TCPFlags: 0x12}.Bytes()
	res = f.run(HookFromNetdev, "eth0", reply)
	if res.Verdict != tcActRedirect {
		t.Fatalf("reply: verdict %d, want redirect back to the client", res.Verdict)
	}
	src, sport = srcOf(res.Data)
	dst, dport = dstOf(res.Data)
	if src != node || sport != 30080 || dst != client || dport != 5555 {
		t.Errorf("reply translated to %s:%d -> %s:%d, want %s:30080 -> %s:5555", src, sport, dst, dport, node, client)
	}
	if !VerifyL4Checksum(res.Data) {
		t.Error("L4 checksum broken by reverse SNAT")
	}

	// A LoadBalancer address (announced by several nodes) is not the
	// node's: the node's own address stands in for the client, so the
	// backend's reply comes back to this node.
	lbIP := netip.MustParseAddr("192.0.2.10")
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: lbIP, Port: 80, Proto: 6}, RevNat: 2, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, f.dp.UpsertRevNat(2, lbIP, 80))
	res = f.run(HookFromNetdev, "eth0", Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: client, Dst: lbIP, Proto: 6, SrcPort: 5600, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes())
	src, sport = srcOf(res.Data)
	if res.Verdict != tcActRedirect || src != node {
		t.Fatalf("LoadBalancer address to a remote backend: verdict %d, source %s, want the node's %s", res.Verdict, src, node)
	}
	res = f.run(HookFromNetdev, "eth0", Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: backend, Dst: node, Proto: 6, SrcPort: 80, DstPort: sport, TTL: 64, TCPFlags: 0x12}.Bytes())
	if src, sp := srcOf(res.Data); src != lbIP || sp != 80 {
		t.Errorf("LoadBalancer reply from %s:%d, want %s:80", src, sp, lbIP)
	}
}

func TestXDPNodePortAcceleration(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	h, err := netlink.NewHandleAt(f.ns)
	must(t, err)
	defer h.Close()
	eth0 := f.devs["eth0"]
	peerMAC := net.HardwareAddr{0x02, 0, 0, 0, 0xc, 2}
	clientMAC := net.HardwareAddr{0x02, 0, 0, 0, 0xc, 9}
	must(t, h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.99.0.1"), Mask: net.CIDRMask(24, 32)}}))
	must(t, h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.ParseIP("10.200.2.0"), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.99.0.2"), LinkIndex: eth0.Attrs().Index}))
	must(t, h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("10.99.0.2"), HardwareAddr: peerMAC, State: netlink.NUD_PERMANENT}))
	must(t, h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("10.99.0.200"), HardwareAddr: clientMAC, State: netlink.NUD_PERMANENT}))
	must(t, netnsutil.Do(f.ns, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }))
	node := netip.MustParseAddr("10.99.0.1")
	client := netip.MustParseAddr("10.99.0.200")
	remote := netip.MustParseAddr("10.200.2.5")
	must(t, f.dp.SetConfig(RuntimeConfig{NodeIPv4: node}))
	must(t, f.dp.UpsertBackend(1, Backend{Addr: remote, Port: 80, Proto: 6}))
	must(t, f.dp.UpsertBackend(2, Backend{Addr: podB4, Port: 80, Proto: 6}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30080, Proto: 6}, RevNat: 1, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30081, Proto: 6}, RevNat: 2, Flags: ServiceNodePort, Backends: []uint32{2}}, 0))
	must(t, f.dp.UpsertRevNat(1, node, 30080))

	run := func(pkt []byte) RunResult {
		t.Helper()
		var res RunResult
		must(t, netnsutil.Do(f.ns, func() error {
			var err error
			res, err = f.dp.RunXDP(eth0.Attrs().Index, pkt)
			return err
		}))
		return res
	}
	const xdpPass, xdpTX = 2, 3
	res := run(Packet{SrcMAC: clientMAC, DstMAC: eth0.Attrs().HardwareAddr, Src: client, Dst: node, Proto: 6, SrcPort: 6000, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes())
	if res.Verdict != xdpTX {
		t.Fatalf("NodePort to a remote backend: XDP verdict %d, want XDP_TX", res.Verdict)
	}
	src, sport := srcOf(res.Data)
	dst, dport := dstOf(res.Data)
	if src != node || sport < 32768 || dst != remote || dport != 80 || !bytes.Equal(res.Data[0:6], peerMAC) {
		t.Fatalf("XDP sent %s:%d -> %s:%d to %x", src, sport, dst, dport, res.Data[0:6])
	}
	if !VerifyL4Checksum(res.Data) || IPv4Checksum(res.Data[14:34]) != binary.BigEndian.Uint16(res.Data[24:26]) {
		t.Error("checksums broken by the XDP translation")
	}
	reply := run(Packet{SrcMAC: peerMAC, DstMAC: eth0.Attrs().HardwareAddr, Src: remote, Dst: node, Proto: 6, SrcPort: 80, DstPort: sport, TTL: 64, TCPFlags: 0x12}.Bytes())
	if reply.Verdict != xdpTX {
		t.Fatalf("reply: XDP verdict %d, want XDP_TX", reply.Verdict)
	}
	src, sport = srcOf(reply.Data)
	dst, dport = dstOf(reply.Data)
	if src != node || sport != 30080 || dst != client || dport != 6000 || !bytes.Equal(reply.Data[0:6], clientMAC) || !VerifyL4Checksum(reply.Data) {
		t.Errorf("reply sent %s:%d -> %s:%d to %x", src, sport, dst, dport, reply.Data[0:6])
	}
	// Local backends and other traffic go on to tc.
	if res := run(Packet{SrcMAC: clientMAC, DstMAC: eth0.Attrs().HardwareAddr, Src: client, Dst: node, Proto: 6, SrcPort: 6001, DstPort: 30081, TTL: 64, TCPFlags: 0x02}.Bytes()); res.Verdict != xdpPass {
		t.Errorf("NodePort to a local backend: XDP verdict %d, want XDP_PASS", res.Verdict)
	}
	if res := run(Packet{SrcMAC: clientMAC, DstMAC: eth0.Attrs().HardwareAddr, Src: client, Dst: node, Proto: 6, SrcPort: 6002, DstPort: 22, TTL: 64, TCPFlags: 0x02}.Bytes()); res.Verdict != xdpPass {
		t.Errorf("not a service: XDP verdict %d, want XDP_PASS", res.Verdict)
	}
	// The counters tell what XDP did: one packet each way, one left to tc
	// (the local backend; not the non-service packet).
	st, err := f.dp.XDPStats()
	must(t, err)
	if st.ForwardTX.Packets != 1 || st.ReplyTX.Packets != 1 || st.ToTC.Packets != 1 || st.ForwardRedirect.Packets+st.ReplyRedirect.Packets != 0 || st.ForwardTX.Bytes == 0 {
		t.Errorf("XDP counters %+v, want 1 forwarded, 1 reply (XDP_TX), 1 to tc", st)
	}
	// DSR mode: tc adds the option, XDP leaves the packet alone.
	must(t, f.dp.SetConfig(RuntimeConfig{NodeIPv4: node, DSR: true}))
	if res := run(Packet{SrcMAC: clientMAC, DstMAC: eth0.Attrs().HardwareAddr, Src: client, Dst: node, Proto: 6, SrcPort: 6003, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes()); res.Verdict != xdpPass {
		t.Errorf("DSR mode: XDP verdict %d, want XDP_PASS", res.Verdict)
	}
	if st, _ := f.dp.XDPStats(); st.ToTC.Packets != 2 || st.ForwardTX.Packets != 1 {
		t.Errorf("DSR mode: XDP counters %+v, want the packet left to tc", st)
	}
}

// TestServiceReusedClientPort: a client port reused towards a second
// service with the same backend gives the same 5-tuple after DNAT as the
// first connection; its replies must come from the second frontend (they
// came from the first, which the client drops: seen as a UDP NodePort
// flake in the lab).
func TestServiceReusedClientPort(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	vip := netip.MustParseAddr("10.96.0.10")
	must(t, f.dp.UpsertBackend(7, Backend{Addr: podB4, Port: 5353, Proto: 17}))
	for i, port := range []uint16{53, 54} {
		id := uint32(3 + i)
		must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: vip, Port: port, Proto: 17, Scope: ScopeExternal}, RevNat: id, Backends: []uint32{7}}, 0))
		must(t, f.dp.UpsertRevNat(id, vip, port))
	}
	for _, vport := range []uint16{53, 54, 53} {
		pkt := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA4, Dst: vip, Proto: 17, SrcPort: 40000, DstPort: vport, TTL: 64, Payload: []byte("q")}.Bytes()
		if res := f.run(HookFromContainer, "lxca", pkt); res.Verdict != tcActRedirect {
			t.Fatalf("to %s:%d: verdict %d", vip, vport, res.Verdict)
		}
		reply := Packet{SrcMAC: podBMAC, DstMAC: hostBMAC, Src: podB4, Dst: podA4, Proto: 17, SrcPort: 5353, DstPort: 40000, TTL: 64, Payload: []byte("a")}.Bytes()
		res := f.run(HookToContainer, "lxca", reply)
		if res.Verdict != tcActOK {
			t.Fatalf("reply: verdict %d", res.Verdict)
		}
		if src, sport := srcOf(res.Data); src != vip || sport != vport {
			t.Errorf("client port reused towards %s:%d: reply from %s:%d", vip, vport, src, sport)
		}
	}
}
