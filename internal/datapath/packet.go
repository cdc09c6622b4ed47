package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Packet describes a test or benchmark packet for RunProgram.
type Packet struct {
	SrcMAC, DstMAC   net.HardwareAddr
	Src, Dst         netip.Addr
	Proto            uint8  // 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6
	SrcPort, DstPort uint16 // ICMP: SrcPort is the echo identifier
	TTL              uint8
	TCPFlags         uint8
	ICMPType         uint8
	ICMPCode         uint8
	Payload          []byte
}

// Bytes serialises p as an Ethernet frame with valid IPv4 header and TCP/UDP
// checksums, so tests can check that rewrites keep them valid.
func (p Packet) Bytes() []byte {
	var l4 []byte
	switch p.Proto {
	case 6:
		l4 = make([]byte, 20)
		l4[12] = 5 << 4
		l4[13] = p.TCPFlags
	case 17:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(p.Payload)))
	case 1, 58:
		l4 = make([]byte, 8)
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		binary.BigEndian.PutUint16(l4[4:], p.SrcPort)
	default:
		l4 = make([]byte, 12)
	}
	if p.Proto != 1 && p.Proto != 58 {
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
	}
	l4 = append(l4, p.Payload...)
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}

	eth := make([]byte, 14)
	copy(eth[0:6], p.DstMAC)
	copy(eth[6:12], p.SrcMAC)
	var l3 []byte
	if p.Src.Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		l3 = make([]byte, 20)
		l3[0] = 0x45
		binary.BigEndian.PutUint16(l3[2:], uint16(20+len(l4)))
		l3[8] = ttl
		l3[9] = p.Proto
		s, d := p.Src.As4(), p.Dst.As4()
		copy(l3[12:], s[:])
		copy(l3[16:], d[:])
		binary.BigEndian.PutUint16(l3[10:], IPv4Checksum(l3))
	} else {
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		l3 = make([]byte, 40)
		l3[0] = 0x60
		binary.BigEndian.PutUint16(l3[4:], uint16(len(l4)))
		l3[6] = p.Proto
		l3[7] = ttl
		s, d := p.Src.As16(), p.Dst.As16()
		copy(l3[8:], s[:])
		copy(l3[24:], d[:])
	}
	if p.Proto == 6 || p.Proto == 17 {
		off := 16
		if p.Proto == 17 {
			off = 6
		}
		binary.BigEndian.PutUint16(l4[off:], L4Checksum(p.Src, p.Dst, p.Proto, l4))
	}
	out := append(eth, l3...)
	return append(out, l4...)
}

// L4Checksum computes the TCP/UDP checksum of segment (whose checksum
// field must be zero) with its pseudo header.
func L4Checksum(src, dst netip.Addr, proto uint8, segment []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += uint32(proto) + uint32(len(segment))
	add(segment)
	for sum > 0xffff {
		sum = (sum >> 16) + (sum & 0xffff)
	}
	c := ^uint16(sum)
	if c == 0 && proto == 17 {
		c = 0xffff
	}
	return c
}

// VerifyL4Checksum checks the TCP/UDP checksum of an Ethernet frame.
func VerifyL4Checksum(frame []byte) bool {
	var src, dst netip.Addr
	var proto uint8
	var seg []byte
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		ihl := int(frame[14]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(frame[26:30])), netip.AddrFrom4([4]byte(frame[30:34]))
		proto = frame[23]
		seg = frame[14+ihl:]
	case 0x86dd:
		src, dst = netip.AddrFrom16([16]byte(frame[22:38])), netip.AddrFrom16([16]byte(frame[38:54]))
		proto = frame[20]
		seg = frame[54:]
	default:
		return false
	}
	off := 16
	if proto == 17 {
		off = 6
	}
	cp := append([]byte(nil), seg...)
	got := binary.BigEndian.Uint16(cp[off:])
	cp[off], cp[off+1] = 0, 0
	return L4Checksum(src, dst, proto, cp) == got
}

// IPv4Checksum computes the header checksum (the checksum field counts as
// whatever it holds: a valid header sums to 0).
func IPv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i == 10 {
			continue
		}
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = (sum >> 16) + (sum & 0xffff)
	}
	return ^uint16(sum)
}

// skbContext is the head of struct __sk_buff that BPF_PROG_TEST_RUN accepts.
type skbContext struct {
	_              [9]uint32
	IngressIfindex uint32
	Ifindex        uint32
}

// RunResult is what a program did with one packet.
type RunResult struct {
	Verdict uint32 // TC_ACT_*: 0 pass, 2 drop, 7 redirect
	Data    []byte
}

// RunProgram runs hook's program once on pkt as if it arrived on ifindex
// (BPF_PROG_TEST_RUN), in the calling thread's network namespace.
func (d *Datapath) RunProgram(h Hook, ifindex int, pkt []byte) (RunResult, error) {
	prog, _, _ := d.hook(h)
	out := make([]byte, len(pkt)+256)
	ctx := skbContext{IngressIfindex: uint32(ifindex), Ifindex: uint32(ifindex)}
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx}
	ret, err := prog.Run(opts)
	if err != nil {
		return RunResult{}, err
	}
	return RunResult{Verdict: ret, Data: out[:len(opts.DataOut)]}, nil
}

// Program returns hook's loaded program (for benchmarks).
func (d *Datapath) Program(h Hook) *ebpf.Program {
	p, _, _ := d.hook(h)
	return p
}
