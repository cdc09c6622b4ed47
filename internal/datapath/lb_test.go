package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
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
