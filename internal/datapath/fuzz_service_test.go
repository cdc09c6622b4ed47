package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/policy"
)

// fuzzService: ClusterIP frontends of pod B (backend port), chosen so that
// pod A's egress policy (fuzzPolicy: B on TCP/80, UDP/1024-2047, ICMP)
// allows some translations and denies others.
var fuzzService = []struct {
	proto        uint8
	port, bePort uint16
}{
	{6, 80, 80},     // allowed as is
	{17, 53, 1500},  // allowed after translation only
	{6, 8080, 81},   // denied after translation
	{17, 1500, 999}, // allowed before translation, denied after
}

var (
	fuzzVIP4 = netip.MustParseAddr("10.96.0.10")
	fuzzVIP6 = netip.MustParseAddr("fd00:96::10")
)

// FuzzServiceTranslation is FuzzParserAgainstPolicy for pod A's packets to
// a service frontend (from_container's per-packet DNAT, raw sockets or
// pods without socket-level translation): the verdict must be the
// policy's for what the receiving kernel gets after translation (the
// backend's port; a later fragment its first fragment's translation), and
// a packet let through must leave translated: addressed to the backend,
// never the frontend, with the backend's port and a checksum as valid as
// it came. Same input encoding as FuzzParserAgainstPolicy; flags bit 2
// addresses the frontend, else pod B directly (bit 1 is ignored: the
// egress hook always).
func FuzzServiceTranslation(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
		f.Add(append([]byte{s[0] | 4}, s[1:]...))
	}
	for _, sv := range fuzzService {
		for _, v6 := range []bool{false, true} {
			vip, src := fuzzVIP4, podA4
			if v6 {
				vip, src = fuzzVIP6, podA6
			}
			whole := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: vip, Proto: sv.proto, SrcPort: 4000, DstPort: sv.port, TTL: 64, TCPFlags: 0x02, Payload: make([]byte, 300)}.Bytes()
			l3, flags := 20, byte(4)
			if v6 {
				l3, flags = 40, 5
			}
			f.Add(append([]byte{flags, sv.proto, 0, 0, 0, 0}, whole[14+l3:]...))
			for _, fr := range fragment(whole, 128, 77) {
				if v6 {
					f.Add(append([]byte{flags, extFragment, 0, 0, 0, 0}, fr[14+l3:]...))
				} else {
					f.Add(append([]byte{flags, sv.proto, fr[20], fr[21], 0, 77}, fr[14+l3:]...))
				}
			}
		}
	}
	fx := newFixture(f)
	fx.addPolicyPods(EndpointEgressEnforced, EndpointIngressEnforced)
	model := fuzzPolicy()
	pm, err := fx.dp.Policy()
	must(f, err)
	var entries []PolicyEntry
	for _, e := range model.Entries {
		if e.Egress {
			entries = append(entries, PolicyEntry{Identity: e.Identity, Egress: true, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
		}
	}
	must(f, pm.Sync(11, entries))
	for i, sv := range fuzzService {
		for _, fam := range []struct{ vip, be netip.Addr }{{fuzzVIP4, podB4}, {fuzzVIP6, podB6}} {
			id := uint32(100 + 2*i)
			if fam.vip.Is6() {
				id++
			}
			must(f, fx.dp.UpsertBackend(id, Backend{Addr: fam.be, Port: sv.bePort, Proto: sv.proto}))
			must(f, fx.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: fam.vip, Port: sv.port, Proto: sv.proto, Scope: ScopeInternal}, RevNat: id, Backends: []uint32{id}}, 0))
			must(f, fx.dp.UpsertRevNat(id, fam.vip, sv.port))
		}
	}
	firsts := map[fragID]l4view{}

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 6 || len(in) > 2048 {
			return
		}
		v6, toVIP := in[0]&1 != 0, in[0]&4 != 0
		src, dst, be := podA4, podB4, podB4
		if v6 {
			src, dst, be = podA6, podB6, podB6
		}
		if toVIP {
			dst = fuzzVIP4
			if v6 {
				dst = fuzzVIP6
			}
		}
		frame := rawFrame(src, dst, in[1], binary.BigEndian.Uint16(in[2:]), binary.BigEndian.Uint16(in[4:]), in[6:])
		var res RunResult
		must(t, netnsutil.Do(fx.ns, func() error {
			var err error
			res, err = fx.dp.RunProgram(HookFromContainer, fx.ifindex("lxca"), frame)
			return err
		}))

		view := kernelView(src, dst, in, firsts)
		translated := false
		if toVIP && view.ok {
			for _, sv := range fuzzService {
				if sv.proto == view.proto && sv.port == view.dport {
					view.dport, translated = sv.bePort, true
					break
				}
			}
			// A frontend address with no frontend on that port is no
			// pod: the world, which A's egress does not allow.
			view.ok = translated
		}
		allowed := view.ok && policy.Lookup(model, 1002, true, view.proto, view.dport).Allowed
		if res.Verdict == tcActShot {
			return
		}
		if !allowed {
			t.Fatalf("passed (verdict %d) but the model denies it: kernel view %+v, frame %x", res.Verdict, view, frame)
		}
		if !translated {
			return
		}
		out := res.Data
		var gotDst netip.Addr
		if v6 {
			gotDst = netip.AddrFrom16([16]byte(out[38:54]))
		} else {
			gotDst = netip.AddrFrom4([4]byte(out[30:34]))
		}
		if gotDst != be {
			t.Fatalf("left for %s, want the backend %s: frame %x, out %x", gotDst, be, frame, out)
		}
		// A whole TCP/UDP packet straight after the fixed header: the
		// backend's port, the checksum still as valid as it came.
		fo := binary.BigEndian.Uint16(in[2:])
		if (in[1] != 6 && in[1] != 17) || (!v6 && fo&0x3fff != 0) {
			return
		}
		l3 := 20
		if v6 {
			l3 = 40
		}
		if got := binary.BigEndian.Uint16(out[14+l3+2:]); got != view.dport {
			t.Fatalf("left with port %d, want the backend's %d: out %x", got, view.dport, out)
		}
		if l4ChecksumValid(src, dst, in[1], frame[14+l3:]) && !l4ChecksumValid(src, be, in[1], out[14+l3:]) {
			t.Fatalf("checksum broken by the translation: frame %x, out %x", frame, out)
		}
	})
}

// l4ChecksumValid tells whether a TCP/UDP segment's checksum is right
// (0 and 0xffff are the same in one's complement; UDP over IPv4 may carry
// none).
func l4ChecksumValid(src, dst netip.Addr, proto uint8, l4 []byte) bool {
	off := 16
	if proto == 17 {
		off = 6
	}
	if len(l4) < off+2 {
		return false
	}
	cp := append([]byte(nil), l4...)
	stored := binary.BigEndian.Uint16(cp[off:])
	cp[off], cp[off+1] = 0, 0
	want := L4Checksum(src, dst, proto, cp)
	return stored == want || (stored|want == 0xffff && (stored == 0 || want == 0))
}
