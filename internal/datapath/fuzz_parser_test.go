package datapath

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/policy"
)

// FuzzParserAgainstPolicy sends random packets (any IPv6 extension header
// chain, any IPv4 fragment fields, any L4 bytes) through from_container
// and to_container under an enforced policy, and checks each verdict
// against the policy engine's own lookup (policy.Lookup, what `policy
// explain` answers) applied to what the receiving kernel would deliver:
// the protocol and port after the extension headers, the first fragment's
// for later fragments. No packet the model denies may pass. (Dropping
// more than the model, fail closed, is allowed.)
//
// Input: [0] flags (bit 0 IPv6, bit 1 egress hook), [1] IPv4 protocol /
// IPv6 next header, [2:4] IPv4 fragment field, [4:6] IPv4 id, [6:] the
// bytes after the fixed IP header.
func FuzzParserAgainstPolicy(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	fx := newFixture(f)
	fx.addPolicyPods(EndpointEgressEnforced, EndpointIngressEnforced)
	model := fuzzPolicy()
	pm, err := fx.dp.Policy()
	must(f, err)
	for _, ep := range []struct {
		id     uint16
		egress bool
	}{{11, true}, {12, false}} {
		var entries []PolicyEntry
		for _, e := range model.Entries {
			if e.Egress == ep.egress {
				entries = append(entries, PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
			}
		}
		must(f, pm.Sync(ep.id, entries))
	}
	// First fragments the model has seen, per hook: lumen_frag entries are
	// per device, and a receiver gets a datagram's fragments all through
	// the same last hook.
	firsts := map[bool]map[fragID]l4view{false: {}, true: {}}

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 6 || len(in) > 2048 { // PROG_TEST_RUN takes about a page
			return
		}
		v6, egress := in[0]&1 != 0, in[0]&2 != 0
		src, dst := podA4, podB4
		if v6 {
			src, dst = podA6, podB6
		}
		frame := rawFrame(src, dst, in[1], binary.BigEndian.Uint16(in[2:]), binary.BigEndian.Uint16(in[4:]), in[6:])
		hook, dev, peer := HookToContainer, "lxcb", uint32(1001)
		if egress {
			hook, dev, peer = HookFromContainer, "lxca", 1002
		}
		var res RunResult
		must(t, netnsutil.Do(fx.ns, func() error {
			var err error
			res, err = fx.dp.RunProgram(hook, fx.ifindex(dev), frame)
			return err
		}))

		view := kernelView(src, dst, in, firsts[egress])
		allowed := view.ok && policy.Lookup(model, peer, egress, view.proto, view.dport).Allowed
		if res.Verdict != tcActShot && !allowed {
			t.Fatalf("passed (verdict %d) but the model denies it: kernel view %+v, egress %v, frame %x", res.Verdict, view, egress, frame)
		}
	})
}

// fuzzPolicy: B's ingress is issue 11's (the cluster allowed, TCP/81 and
// UDP/80 denied); A's egress allows B on TCP/80, UDP/1024-2047 and ICMP.
func fuzzPolicy() *policy.EndpointPolicy {
	ep := &policy.EndpointPolicy{IngressEnforced: true, EgressEnforced: true}
	add := func(k policy.Key, deny bool) { ep.Entries = append(ep.Entries, policy.Entry{Key: k, Deny: deny}) }
	add(policy.Key{Identity: 1001}, false)
	add(policy.Key{Proto: 6, Port: 81, PortBits: 16}, true)
	add(policy.Key{Proto: 17, Port: 80, PortBits: 16}, true)
	add(policy.Key{Identity: 1002, Egress: true, Proto: 6, Port: 80, PortBits: 16}, false)
	add(policy.Key{Identity: 1002, Egress: true, Proto: 17, Port: 1024, PortBits: 6}, false)
	add(policy.Key{Identity: 1002, Egress: true, Proto: 1}, false)
	add(policy.Key{Identity: 1002, Egress: true, Proto: 58}, false)
	slices.SortFunc(ep.Entries, func(a, b policy.Entry) int {
		bi := func(x bool) int {
			if x {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(bi(a.Egress), bi(b.Egress)), cmp.Compare(a.Identity, b.Identity), cmp.Compare(a.Proto, b.Proto),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.PortBits, b.PortBits))
	})
	return ep
}

// rawFrame builds Ethernet + a fixed IP header (lengths and checksum
// right) + rest.
func rawFrame(src, dst netip.Addr, proto uint8, fragOff, id uint16, rest []byte) []byte {
	eth := make([]byte, 14)
	copy(eth[0:6], hostAMAC)
	copy(eth[6:12], podAMAC)
	if src.Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(rest)))
		binary.BigEndian.PutUint16(ip[4:], id)
		binary.BigEndian.PutUint16(ip[6:], fragOff)
		ip[8], ip[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], IPv4Checksum(ip))
		return append(append(eth, ip...), rest...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x86dd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(rest)))
	ip[6], ip[7] = proto, 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(eth, ip...), rest...)
}

type fragID struct {
	v6       bool
	src, dst netip.Addr
	proto    uint8
	id       uint32
}

// l4view is what a receiver delivers a datagram as.
type l4view struct {
	ok     bool // deliverable at all
	proto  uint8
	dport  uint16
	hdrEnd int // fragmentable part's bytes up to the end of the L4 header
}

// l4Of reads the upper-layer header at b (the receiving stack's view:
// headers cut short are not delivered).
func l4Of(proto uint8, b []byte) l4view {
	need := map[uint8]int{6: 20, 17: 8, 132: 12, 1: 8, 58: 8}[proto]
	if len(b) < need {
		return l4view{}
	}
	v := l4view{ok: true, proto: proto, hdrEnd: need}
	switch proto {
	case 6, 17, 132:
		v.dport = binary.BigEndian.Uint16(b[2:])
	}
	return v
}

// kernelView is the reference model of what the receiving kernel makes of
// the fuzz input: written from RFC 791/8200 and Linux's behaviour, not
// from the BPF code. Fragments are judged by their datagram's first
// fragment (firsts remembers those seen); a later fragment without one, or
// one overlapping the L4 header, never becomes a datagram Lumen let
// through: the model denies it.
func kernelView(src, dst netip.Addr, in []byte, firsts map[fragID]l4view) l4view {
	rest := in[6:]
	if src.Is4() {
		fo := binary.BigEndian.Uint16(in[2:])
		key := fragID{src: src, dst: dst, proto: in[1], id: uint32(binary.BigEndian.Uint16(in[4:]))}
		off, more := int(fo&0x1fff)*8, fo&0x2000 != 0
		if off == 0 {
			v := l4Of(in[1], rest)
			if more && v.ok {
				firsts[key] = v
			}
			return v
		}
		first, ok := firsts[key]
		if !ok || off < first.hdrEnd {
			return l4view{}
		}
		return first
	}
	nh, pos := in[1], 0
	var key *fragID
	fragStart := 0
	for {
		switch nh {
		case 0, 43, 60, 51, 44:
		default:
			v := l4Of(nh, rest[pos:])
			if key != nil && v.ok {
				v.hdrEnd += pos - fragStart
				firsts[*key] = v
			}
			return v
		}
		if len(rest) < pos+8 {
			return l4view{}
		}
		h := rest[pos:]
		switch nh {
		case 44:
			fo := binary.BigEndian.Uint16(h[2:])
			pos += 8
			if fo&0xfff9 == 0 {
				break // atomic
			}
			if key != nil {
				return l4view{} // nested
			}
			key = &fragID{v6: true, src: src, dst: dst, proto: h[0], id: binary.BigEndian.Uint32(h[4:])}
			fragStart = pos
			if off := int(fo &^ 7); off > 0 {
				first, ok := firsts[*key]
				if !ok || off < first.hdrEnd {
					return l4view{}
				}
				return first
			}
		case 51:
			pos += (int(h[1]) + 2) * 4
		case 43:
			if h[3] != 0 {
				return l4view{} // not for this node: forwarded, or dropped
			}
			pos += (int(h[1]) + 1) * 8
		default:
			pos += (int(h[1]) + 1) * 8
		}
		if pos > len(rest) {
			return l4view{}
		}
		nh = h[0]
	}
}

// fuzzSeeds are the adversarial suite's shapes in the fuzz encoding.
func fuzzSeeds() [][]byte {
	seed := func(flags, proto uint8, fo, id uint16, frame []byte, l3 int) []byte {
		b := []byte{flags, proto, byte(fo >> 8), byte(fo), byte(id >> 8), byte(id)}
		return append(b, frame[14+l3:]...)
	}
	var out [][]byte
	for _, egress := range []uint8{0, 2} {
		for _, dport := range []uint16{80, 81, 1500} {
			t4 := tcpPort(podA4, podB4, 1, dport, 0x02)
			out = append(out, seed(egress, 6, 0, 0, t4, 20))
			for _, chain := range [][]ext{{{typ: extDestOpts, size: 8}}, {{typ: extHopByHop, size: 8}, {typ: extRouting, size: 24}, {typ: extAuth, size: 16}}, {{typ: extFragment}}} {
				f := withExt(tcpPort(podA6, podB6, 1, dport, 0x02), chain...)
				out = append(out, seed(1|egress, f[20], 0, 0, f, 40))
			}
			for _, fr := range fragment(udpFrame(podA4, podB4, 2, dport, 300), 128, 7) {
				out = append(out, seed(egress, 17, binary.BigEndian.Uint16(fr[20:]), 7, fr, 20))
			}
			for _, fr := range fragment(udpFrame(podA6, podB6, 2, dport, 300), 128, 9) {
				out = append(out, seed(1|egress, extFragment, 0, 0, fr, 40))
			}
		}
	}
	return out
}
