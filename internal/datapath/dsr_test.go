package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

// skbMarkContext is the head of struct __sk_buff with the mark, which
// BPF_PROG_TEST_RUN takes in and gives back.
type skbMarkContext struct {
	Len, PktType, Mark uint32
	_                  [6]uint32
	IngressIfindex     uint32
	Ifindex            uint32
}

const markDSR = 0x4c440000

// runMark runs hook's program with skb->mark set to mark and returns the
// verdict, the packet and the mark the program left.
func (f *fixture) runMark(h Hook, dev string, pkt []byte, mark uint32) (RunResult, uint32) {
	f.t.Helper()
	prog := f.dp.Program(h)
	in := skbMarkContext{Mark: mark, IngressIfindex: uint32(f.ifindex(dev)), Ifindex: uint32(f.ifindex(dev))}
	var out [64]uint32 // the whole __sk_buff comes back
	data := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: data, Context: in, ContextOut: &out}
	var ret uint32
	err := netnsutil.Do(f.ns, func() error {
		var err error
		ret, err = prog.Run(opts)
		return err
	})
	if err != nil {
		f.t.Fatalf("running program: %v", err)
	}
	return RunResult{Verdict: ret, Data: data[:len(opts.DataOut)]}, out[2]
}

// dsrNode gives a fixture's eth0 an address of each family, forwarding,
// and permanent neighbours.
func (f *fixture) dsrNode(addrs []string, neigh map[string]net.HardwareAddr, routes map[string]string) {
	f.t.Helper()
	h, err := netlink.NewHandleAt(f.ns)
	must(f.t, err)
	defer h.Close()
	eth0 := f.devs["eth0"]
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(a)
		must(f.t, err)
		must(f.t, h.AddrAdd(eth0, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}))
	}
	for ip, mac := range neigh {
		must(f.t, h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP(ip), HardwareAddr: mac, State: netlink.NUD_PERMANENT}))
	}
	for dst, gw := range routes {
		_, ipn, err := net.ParseCIDR(dst)
		must(f.t, err)
		must(f.t, h.RouteAdd(&netlink.Route{Dst: ipn, Gw: net.ParseIP(gw), LinkIndex: eth0.Attrs().Index}))
	}
	must(f.t, netnsutil.Do(f.ns, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}))
}

func (f *fixture) snatEntries() int {
	f.t.Helper()
	n := 0
	var k lxcSnatRevKey
	var v lxcSnatRevValue
	it := f.dp.lxc.LumenSnatRev.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	must(f.t, it.Err())
	return n
}

var (
	dsrPeerMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xd, 2}
	dsrClientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xd, 9}
	dsrNodeA4    = netip.MustParseAddr("10.99.0.1")
	dsrNodeA6    = netip.MustParseAddr("fd00:10:99::1")
	dsrClient4   = netip.MustParseAddr("10.99.0.200")
	dsrClient6   = netip.MustParseAddr("fd00:10:99::200")
	dsrBackend4  = netip.MustParseAddr("10.200.2.5")
	dsrBackend6  = netip.MustParseAddr("fd00:10:200:2::5")
	dsrPodMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0xe, 1}
	dsrHostMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xe, 2}
)

// dsrNodes makes node A (the frontends, DSR mode, backends on node B) and
// node B (the backends' pods, no DSR flag: it answers DSR flows anyway).
func dsrNodes(t testing.TB) (a, b *fixture) {
	a = newFixture(t)
	a.dsrNode([]string{"10.99.0.1/24", "fd00:10:99::1/64"},
		map[string]net.HardwareAddr{"10.99.0.2": dsrPeerMAC, "fd00:10:99::2": dsrPeerMAC},
		map[string]string{"10.200.2.0/24": "10.99.0.2", "fd00:10:200:2::/64": "fd00:10:99::2"})
	must(t, a.dp.SetConfig(RuntimeConfig{NodeIPv4: dsrNodeA4, NodeIPv6: dsrNodeA6, DSR: true}))
	must(t, a.dp.UpsertBackend(1, Backend{Addr: dsrBackend4, Port: 80, Proto: 6}))
	must(t, a.dp.UpsertBackend(2, Backend{Addr: dsrBackend6, Port: 80, Proto: 6}))
	must(t, a.dp.UpsertBackend(3, Backend{Addr: dsrBackend4, Port: 80, Proto: 17}))
	for i, fe := range []Frontend{{Addr: dsrNodeA4, Port: 30080, Proto: 6}, {Addr: dsrNodeA6, Port: 30080, Proto: 6}, {Addr: dsrNodeA4, Port: 30053, Proto: 17}} {
		id := uint32(i + 1)
		must(t, a.dp.UpsertService(ServiceEntry{Frontend: fe, RevNat: id, Flags: ServiceNodePort, Backends: []uint32{id}}, 0))
		must(t, a.dp.UpsertRevNat(id, fe.Addr, fe.Port))
	}

	b = newFixture(t)
	b.dsrNode([]string{"10.99.0.2/24", "fd00:10:99::2/64"},
		map[string]net.HardwareAddr{"10.99.0.200": dsrClientMAC, "fd00:10:99::200": dsrClientMAC}, nil)
	must(t, b.dp.SetConfig(RuntimeConfig{NodeIPv4: netip.MustParseAddr("10.99.0.2"), NodeIPv6: netip.MustParseAddr("fd00:10:99::2")}))
	for _, ip := range []netip.Addr{dsrBackend4, dsrBackend6} {
		must(t, b.dp.UpsertEndpoint(ip, EndpointInfo{IfIndex: uint32(b.ifindex("lxcb")), ID: 21, Identity: 2001, MAC: dsrPodMAC, HostMAC: dsrHostMAC}))
	}
	return a, b
}

// TestNodePortDSR follows one connection per family through both nodes'
// programs: A DNATs without SNAT and adds the frontend option, B records
// it, delivers to the pod, and the pod's reply leaves B from the frontend.
func TestNodePortDSR(t *testing.T) {
	a, b := dsrNodes(t)
	for _, c := range []struct {
		name                      string
		client, frontend, backend netip.Addr
	}{
		{"ipv4", dsrClient4, dsrNodeA4, dsrBackend4},
		{"ipv6", dsrClient6, dsrNodeA6, dsrBackend6},
	} {
		t.Run(c.name, func(t *testing.T) {
			syn := Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: c.client, Dst: c.frontend, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x02, Payload: []byte("hi")}.Bytes()
			res, _ := a.runMark(HookFromNetdev, "eth0", syn, 0)
			if res.Verdict != tcActRedirect || !bytes.Equal(res.Data[0:6], dsrPeerMAC) {
				t.Fatalf("node A: verdict %d, to %x; want a redirect to node B %s", res.Verdict, res.Data[0:6], dsrPeerMAC)
			}
			wire := res.Data
			src, sport, dst, dport, opt := parseDSRFrame(t, wire)
			if src != c.client || sport != 5555 || dst != c.backend || dport != 80 {
				t.Errorf("node A sent %s:%d -> %s:%d, want the client %s:5555 (no SNAT) -> the backend %s:80", src, sport, dst, dport, c.client, c.backend)
			}
			if want := netip.AddrPortFrom(c.frontend, 30080); opt != want {
				t.Errorf("node A's DSR option carries %s, want the frontend %s", opt, want)
			}
			if n := a.snatEntries(); n != 0 {
				t.Errorf("node A made %d SNAT entries in DSR mode", n)
			}
			if len(wire) != len(syn)+dsrGrowth(c.client) {
				t.Errorf("node A's packet is %d bytes, want %d (+ the option)", len(wire), len(syn)+dsrGrowth(c.client))
			}
			// Later packets of the connection travel without the option.
			ack, _ := a.runMark(HookFromNetdev, "eth0", Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: c.client, Dst: c.frontend, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x10}.Bytes(), 0)
			if _, _, dst, _, opt := parseDSRFrame(t, ack.Data); ack.Verdict != tcActRedirect || opt.IsValid() || dst != c.backend {
				t.Errorf("node A, ACK: verdict %d, to %s, option %v; want a redirect to the backend without option", ack.Verdict, dst, opt)
			}

			// Node B: delivered to the pod, flow recorded, marked for to_container.
			res, mark := b.runMark(HookFromNetdev, "eth0", wire, 0)
			if res.Verdict != tcActRedirect || !bytes.Equal(res.Data[0:6], dsrPodMAC) {
				t.Fatalf("node B: verdict %d, to %x; want a redirect to the pod", res.Verdict, res.Data[0:6])
			}
			if mark != markDSR {
				t.Errorf("node B: mark %#x for to_container, want %#x", mark, markDSR)
			}
			src, sport, dst, dport, opt = parseDSRFrame(t, res.Data)
			if src != c.client || sport != 5555 || dst != c.backend || dport != 80 {
				t.Errorf("node B delivered %s:%d -> %s:%d", src, sport, dst, dport)
			}
			if c.client.Is4() {
				// IPv4: the option stays (the pod's kernel ignores it).
				if opt != netip.AddrPortFrom(c.frontend, 30080) || IPv4Checksum(res.Data[14:14+28]) != binary.BigEndian.Uint16(res.Data[24:26]) {
					t.Errorf("node B: IPv4 option %v, header checksum %#x; want the option kept and a valid checksum", opt, binary.BigEndian.Uint16(res.Data[24:26]))
				}
			} else if opt.IsValid() || len(res.Data) != len(syn) || res.Data[20] != 6 || binary.BigEndian.Uint16(res.Data[18:20]) != uint16(len(syn)-54) {
				t.Errorf("node B: IPv6 extension header not removed: next header %d, payload length %d, frame %d bytes (want %d)", res.Data[20], binary.BigEndian.Uint16(res.Data[18:20]), len(res.Data), len(syn))
			}
			if !VerifyL4Checksum(stripIPv4Options(res.Data)) {
				t.Error("node B: L4 checksum broken")
			}
			entries, err := b.dp.ListDSR()
			must(t, err)
			if !hasDSR(entries, 6, netip.AddrPortFrom(c.backend, 80), netip.AddrPortFrom(c.client, 5555), netip.AddrPortFrom(c.frontend, 30080)) {
				t.Errorf("node B's DSR flows %+v lack %s -> %s (frontend %s)", entries, netip.AddrPortFrom(c.backend, 80), netip.AddrPortFrom(c.client, 5555), netip.AddrPortFrom(c.frontend, 30080))
			}
			res, _ = b.runMark(HookToContainer, "lxcb", res.Data, mark)
			if res.Verdict != tcActOK {
				t.Fatalf("node B to_container: verdict %d", res.Verdict)
			}

			// The pod's reply leaves node B from the frontend, to the client.
			reply := Packet{SrcMAC: dsrPodMAC, DstMAC: dsrHostMAC, Src: c.backend, Dst: c.client, Proto: 6, SrcPort: 80, DstPort: 5555, TTL: 64, TCPFlags: 0x12, Payload: []byte("hello")}.Bytes()
			res, _ = b.runMark(HookFromContainer, "lxcb", reply, 0)
			if res.Verdict != tcActRedirect || !bytes.Equal(res.Data[0:6], dsrClientMAC) {
				t.Fatalf("node B, reply: verdict %d, to %x; want a redirect straight to the client %s", res.Verdict, res.Data[0:6], dsrClientMAC)
			}
			src, sport = srcOf(res.Data)
			dst, dport = dstOf(res.Data)
			if src != c.frontend || sport != 30080 || dst != c.client || dport != 5555 {
				t.Errorf("node B's reply %s:%d -> %s:%d, want the frontend %s:30080 -> %s:5555", src, sport, dst, dport, c.frontend, c.client)
			}
			if !VerifyL4Checksum(res.Data) || (c.client.Is4() && IPv4Checksum(res.Data[14:34]) != binary.BigEndian.Uint16(res.Data[24:26])) {
				t.Error("node B's reply: checksums broken by the source translation")
			}
		})
	}

	// UDP: every datagram carries the option.
	for i := range 2 {
		dg := Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 17, SrcPort: 7000, DstPort: 30053, TTL: 64, Payload: []byte("q")}.Bytes()
		res, _ := a.runMark(HookFromNetdev, "eth0", dg, 0)
		_, _, dst, dport, opt := parseDSRFrame(t, res.Data)
		if res.Verdict != tcActRedirect || dst != dsrBackend4 || dport != 80 || opt != netip.AddrPortFrom(dsrNodeA4, 30053) {
			t.Errorf("UDP datagram %d: verdict %d, to %s:%d, option %v", i, res.Verdict, dst, dport, opt)
		}
		if !VerifyL4Checksum(stripIPv4Options(res.Data)) {
			t.Errorf("UDP datagram %d: checksum broken", i)
		}
	}
	// A datagram the option would push over the MTU is dropped (Cilium's
	// reason 136); one that still fits passes.
	big := Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 17, SrcPort: 7001, DstPort: 30053, TTL: 64, Payload: make([]byte, 1500-28)}.Bytes()
	if res, _ := a.runMark(HookFromNetdev, "eth0", big, 0); res.Verdict != tcActShot || a.dropCount(136) != 1 {
		t.Errorf("1500-byte datagram: verdict %d, FRAG_NEEDED drops %d; want a drop", res.Verdict, a.dropCount(136))
	}
	fits := Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 17, SrcPort: 7002, DstPort: 30053, TTL: 64, Payload: make([]byte, 1492-28)}.Bytes()
	if res, _ := a.runMark(HookFromNetdev, "eth0", fits, 0); res.Verdict != tcActRedirect {
		t.Errorf("1492-byte datagram: verdict %d, want a redirect", res.Verdict)
	}

	// A LoadBalancer address (not the node's own) travels the same way.
	lbIP := netip.MustParseAddr("192.0.2.10")
	must(t, a.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: lbIP, Port: 80, Proto: 6}, RevNat: 7, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, a.dp.UpsertRevNat(7, lbIP, 80))
	res, _ := a.runMark(HookFromNetdev, "eth0", Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: lbIP, Proto: 6, SrcPort: 5700, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes(), 0)
	if src, _, dst, _, opt := parseDSRFrame(t, res.Data); res.Verdict != tcActRedirect || src != dsrClient4 || dst != dsrBackend4 || opt != netip.AddrPortFrom(lbIP, 80) {
		t.Errorf("LoadBalancer address: verdict %d, %s -> %s, option %v; want the client to the backend with option %s:80", res.Verdict, src, dst, opt, lbIP)
	}
	res, mark := b.runMark(HookFromNetdev, "eth0", res.Data, 0)
	b.runMark(HookToContainer, "lxcb", res.Data, mark)
	res, _ = b.runMark(HookFromContainer, "lxcb", Packet{SrcMAC: dsrPodMAC, DstMAC: dsrHostMAC, Src: dsrBackend4, Dst: dsrClient4, Proto: 6, SrcPort: 80, DstPort: 5700, TTL: 64, TCPFlags: 0x12}.Bytes(), 0)
	if src, sport := srcOf(res.Data); src != lbIP || sport != 80 {
		t.Errorf("LoadBalancer address: the reply leaves node B from %s:%d, want %s:80", src, sport, lbIP)
	}

	// The same node in SNAT mode translates the source as before.
	must(t, a.dp.SetConfig(RuntimeConfig{NodeIPv4: dsrNodeA4, NodeIPv6: dsrNodeA6}))
	res, _ = a.runMark(HookFromNetdev, "eth0", Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 6, SrcPort: 5600, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes(), 0)
	if src, _, _, _, opt := parseDSRFrame(t, res.Data); src != dsrNodeA4 || opt.IsValid() {
		t.Errorf("SNAT mode: source %s, option %v; want the node %s and no option", src, opt, dsrNodeA4)
	}
}

// TestNodePortDSRTunnelFallsBack: a backend behind the tunnel gets SNAT
// (the agent refuses DSR with VXLAN; the datapath stays safe anyway).
func TestNodePortDSRTunnelFallsBack(t *testing.T) {
	a, _ := dsrNodes(t)
	remote := netip.MustParseAddr("10.200.3.5")
	must(t, a.dp.SetConfig(RuntimeConfig{NodeIPv4: dsrNodeA4, DSR: true, VXLANIfIndex: uint32(a.ifindex("lxca"))}))
	must(t, a.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.MustParsePrefix("10.200.3.0/24"), Identity: 6, Tunnel: netip.MustParseAddr("10.99.0.3")}))
	must(t, a.dp.UpsertBackend(9, Backend{Addr: remote, Port: 80, Proto: 6}))
	must(t, a.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: dsrNodeA4, Port: 30090, Proto: 6}, RevNat: 9, Flags: ServiceNodePort, Backends: []uint32{9}}, 0))
	res, _ := a.runMark(HookFromNetdev, "eth0", Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 6, SrcPort: 5555, DstPort: 30090, TTL: 64, TCPFlags: 0x02}.Bytes(), 0)
	src, _, dst, _, opt := parseDSRFrame(t, res.Data)
	if res.Verdict != tcActRedirect || src != dsrNodeA4 || dst != remote || opt.IsValid() {
		t.Errorf("tunnelled backend: verdict %d, %s -> %s, option %v; want SNAT to the node %s", res.Verdict, src, dst, opt, dsrNodeA4)
	}
}

// TestDSRFlowsCollected: a DSR flow goes when its connection has gone.
func TestDSRFlowsCollected(t *testing.T) {
	a, b := dsrNodes(t)
	syn := Packet{SrcMAC: dsrClientMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrNodeA4, Proto: 6, SrcPort: 5555, DstPort: 30080, TTL: 64, TCPFlags: 0x02}.Bytes()
	res, _ := a.runMark(HookFromNetdev, "eth0", syn, 0)
	res, mark := b.runMark(HookFromNetdev, "eth0", res.Data, 0)
	b.runMark(HookToContainer, "lxcb", res.Data, mark)
	if _, err := b.dp.GCConntrack(DefaultCTLifetimes); err != nil {
		t.Fatal(err)
	}
	if e, _ := b.dp.ListDSR(); len(e) != 1 {
		t.Fatalf("after a GC with the connection alive: DSR flows %+v, want 1", e)
	}
	// Zero lifetimes: the connection is idle too long, then its flow.
	if _, err := b.dp.GCConntrack(CTLifetimes{}); err != nil {
		t.Fatal(err)
	}
	if e, _ := b.dp.ListDSR(); len(e) != 0 {
		t.Errorf("after the connection expired: DSR flows %+v, want none", e)
	}
}

func hasDSR(es []DSREntry, proto uint8, backend, client, frontend netip.AddrPort) bool {
	for _, e := range es {
		if e.Proto == proto && e.Backend == backend && e.Client == client && e.Frontend == frontend {
			return true
		}
	}
	return false
}

func dsrGrowth(a netip.Addr) int {
	if a.Is4() {
		return 8
	}
	return 24
}

// parseDSRFrame reads addresses and ports of a frame that may carry the
// DSR IPv4 option or IPv6 destination option, and the frontend in it.
func parseDSRFrame(t *testing.T, f []byte) (src netip.Addr, sport uint16, dst netip.Addr, dport uint16, opt netip.AddrPort) {
	t.Helper()
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ihl := int(f[14]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(f[26:30])), netip.AddrFrom4([4]byte(f[30:34]))
		if ihl >= 28 && f[34] == 0x9a && f[35] == 8 {
			opt = netip.AddrPortFrom(netip.AddrFrom4([4]byte(f[38:42])), binary.BigEndian.Uint16(f[36:]))
		}
		l4 := 14 + ihl
		return src, binary.BigEndian.Uint16(f[l4:]), dst, binary.BigEndian.Uint16(f[l4+2:]), opt
	case 0x86dd:
		src, dst = netip.AddrFrom16([16]byte(f[22:38])), netip.AddrFrom16([16]byte(f[38:54]))
		l4 := 54
		if f[20] == 60 {
			if f[55] != 2 || f[56] != 0x1b || f[57] != 20 {
				t.Fatalf("IPv6 destination options header %x is not Lumen's", f[54:78])
			}
			opt = netip.AddrPortFrom(netip.AddrFrom16([16]byte(f[58:74])), binary.BigEndian.Uint16(f[74:]))
			l4 += 24
		}
		return src, binary.BigEndian.Uint16(f[l4:]), dst, binary.BigEndian.Uint16(f[l4+2:]), opt
	}
	t.Fatalf("not IP: %x", f[:14])
	return
}

// stripIPv4Options returns the frame without IPv4 options (so that the
// checksum helpers, which expect a 20-byte header, can check it).
func stripIPv4Options(f []byte) []byte {
	if binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14]&0xf == 5 {
		return f
	}
	ihl := int(f[14]&0xf) * 4
	out := append([]byte(nil), f[:34]...)
	out[14] = 0x45
	return append(out, f[14+ihl:]...)
}

// FuzzDSROption: node B records a flow only for a well-formed option and
// decodes its frontend; any other option bytes leave the packet alone.
func FuzzDSROption(f *testing.F) {
	f.Add([]byte{0x9a, 8, 0x75, 0x85, 10, 99, 0, 1})
	f.Add([]byte{0x9a, 7, 0x75, 0x85, 10, 99, 0, 1})
	f.Add([]byte{0x94, 4, 0, 0, 1, 1, 1, 1}) // router alert, then NOPs
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	_, b := dsrNodes(f)
	client := netip.AddrPortFrom(dsrClient4, 6000)
	f.Fuzz(func(t *testing.T, opt []byte) {
		if len(opt) != 8 {
			return
		}
		b.t = t
		clearDSR(t, b)
		pkt := Packet{SrcMAC: dsrPeerMAC, DstMAC: hostAMAC, Src: dsrClient4, Dst: dsrBackend4, Proto: 6, SrcPort: 6000, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
		frame := append(append(append([]byte(nil), pkt[:34]...), opt...), pkt[34:]...)
		frame[14] = 0x47
		binary.BigEndian.PutUint16(frame[16:], uint16(len(frame)-14))
		binary.BigEndian.PutUint16(frame[24:], IPv4Checksum(frame[14:42]))
		res, mark := b.runMark(HookFromNetdev, "eth0", frame, 0)
		if res.Verdict != tcActRedirect {
			t.Fatalf("option %x: verdict %d, want delivery to the pod", opt, res.Verdict)
		}
		entries, err := b.dp.ListDSR()
		must(t, err)
		if opt[0] != 0x9a || opt[1] != 8 {
			if mark != 0 || len(entries) != 0 {
				t.Fatalf("option %x is not Lumen's: mark %#x, flows %+v", opt, mark, entries)
			}
			return
		}
		want := netip.AddrPortFrom(netip.AddrFrom4([4]byte(opt[4:8])), binary.BigEndian.Uint16(opt[2:4]))
		if mark != markDSR || !hasDSR(entries, 6, netip.AddrPortFrom(dsrBackend4, 80), client, want) {
			t.Fatalf("option %x: mark %#x, flows %+v; want the frontend %s", opt, mark, entries, want)
		}
	})
}

func clearDSR(t *testing.T, f *fixture) {
	var k lxcDsrKey
	var v lxcDsrValue
	var keys []lxcDsrKey
	it := f.dp.lxc.LumenDsr.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	must(t, it.Err())
	for i := range keys {
		must(t, f.dp.lxc.LumenDsr.Delete(&keys[i]))
	}
}
