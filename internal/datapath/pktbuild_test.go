package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
)

// IPv6 extension header types the adversarial tests build.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extESP      = 50
	extAuth     = 51
	extNoNext   = 59
	extDestOpts = 60
)

// ext is one IPv6 extension header: its type and total length in bytes
// (a multiple of 8). Routing headers carry segLeft; fragment headers
// (always 8 bytes) fragOff (bytes, multiple of 8), more and id.
type ext struct {
	typ     uint8
	size    int
	segLeft uint8
	fragOff int
	more    bool
	id      uint32
	// lenField, when set, overrides the header's length byte (truncation).
	lenField int
}

func (e ext) String() string {
	return fmt.Sprintf("%d/%dB", e.typ, e.size)
}

// encode serialises e with next header nh. Options are Pad1 (zeros).
func (e ext) encode(nh uint8) []byte {
	size := e.size
	if e.typ == extFragment {
		size = 8
	}
	b := make([]byte, size)
	b[0] = nh
	switch e.typ {
	case extAuth:
		b[1] = uint8(size/4 - 2)
	case extFragment:
		v := uint16(e.fragOff) &^ 7
		if e.more {
			v |= 1
		}
		binary.BigEndian.PutUint16(b[2:], v)
		binary.BigEndian.PutUint32(b[4:], e.id)
	default:
		b[1] = uint8(size/8 - 1)
	}
	if e.typ == extRouting {
		b[2] = 4 // segment routing
		b[3] = e.segLeft
	}
	if e.lenField != 0 {
		b[1] = uint8(e.lenField)
	}
	return b
}

// withExt inserts chain after the fixed header of an IPv6 frame built by
// Packet.Bytes (the L4 checksum does not cover extension headers).
func withExt(frame []byte, chain ...ext) []byte {
	if len(chain) == 0 {
		return frame
	}
	nh := frame[20]
	var hdrs []byte
	for i := len(chain) - 1; i >= 0; i-- {
		hdrs = append(chain[i].encode(nh), hdrs...)
		nh = chain[i].typ
	}
	out := append([]byte(nil), frame[:54]...)
	out[20] = nh
	binary.BigEndian.PutUint16(out[18:], binary.BigEndian.Uint16(frame[18:])+uint16(len(hdrs)))
	out = append(out, hdrs...)
	return append(out, frame[54:]...)
}

// repeat returns n copies of e.
func repeat(e ext, n int) []ext {
	out := make([]ext, n)
	for i := range out {
		out[i] = e
	}
	return out
}

// fragment splits an IPv4 or IPv6 frame (IPv6: everything after the fixed
// header is the fragmentable part) into fragments of at most chunk payload
// bytes (a multiple of 8), in order.
func fragment(frame []byte, chunk int, id uint32) [][]byte {
	if binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
		ihl := int(frame[14]&0xf) * 4
		hdr, payload := frame[:14+ihl], frame[14+ihl:]
		var out [][]byte
		for off := 0; off < len(payload); off += chunk {
			end := min(off+chunk, len(payload))
			f := append(append([]byte(nil), hdr...), payload[off:end]...)
			ip := f[14:]
			binary.BigEndian.PutUint16(ip[2:], uint16(ihl+end-off))
			binary.BigEndian.PutUint16(ip[4:], uint16(id))
			fo := uint16(off / 8)
			if end < len(payload) {
				fo |= 0x2000
			}
			binary.BigEndian.PutUint16(ip[6:], fo)
			binary.BigEndian.PutUint16(ip[10:], IPv4Checksum(ip[:ihl]))
			out = append(out, f)
		}
		return out
	}
	payload := frame[54:]
	var out [][]byte
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		f := append([]byte(nil), frame[:54]...)
		f[20] = extFragment
		f = append(f, ext{typ: extFragment, fragOff: off, more: end < len(payload), id: id}.encode(frame[20])...)
		f = append(f, payload[off:end]...)
		binary.BigEndian.PutUint16(f[18:], uint16(8+end-off))
		out = append(out, f)
	}
	return out
}

// reassembled is a datagram put back together from fragment frames.
type reassembled struct {
	src, dst netip.Addr
	proto    uint8
	l4       []byte
}

// reassemble joins frames (IPv4 fragments, or IPv6 fragments with the
// fragment header right after the fixed header) as a receiver would,
// checking that they agree on addresses.
func reassemble(frames [][]byte) (reassembled, error) {
	type piece struct {
		off  int
		data []byte
	}
	var r reassembled
	var pieces []piece
	for i, f := range frames {
		var src, dst netip.Addr
		var proto uint8
		var p piece
		if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
			ihl := int(f[14]&0xf) * 4
			src, dst = netip.AddrFrom4([4]byte(f[26:30])), netip.AddrFrom4([4]byte(f[30:34]))
			proto = f[23]
			p = piece{int(binary.BigEndian.Uint16(f[20:])&0x1fff) * 8, f[14+ihl : 14+int(binary.BigEndian.Uint16(f[16:]))]}
			if IPv4Checksum(f[14:14+ihl]) != binary.BigEndian.Uint16(f[24:]) {
				return r, fmt.Errorf("fragment %d: IPv4 header checksum broken", i)
			}
		} else {
			if f[20] != extFragment {
				return r, fmt.Errorf("fragment %d: next header %d, want a fragment header", i, f[20])
			}
			src, dst = netip.AddrFrom16([16]byte(f[22:38])), netip.AddrFrom16([16]byte(f[38:54]))
			proto = f[54]
			p = piece{int(binary.BigEndian.Uint16(f[56:]) &^ 7), f[62 : 54+int(binary.BigEndian.Uint16(f[18:]))]}
		}
		if i == 0 {
			r.src, r.dst, r.proto = src, dst, proto
		} else if src != r.src || dst != r.dst || proto != r.proto {
			return r, fmt.Errorf("fragment %d: %s -> %s proto %d, first %s -> %s proto %d", i, src, dst, proto, r.src, r.dst, r.proto)
		}
		pieces = append(pieces, p)
	}
	sort.Slice(pieces, func(i, j int) bool { return pieces[i].off < pieces[j].off })
	for _, p := range pieces {
		if p.off != len(r.l4) {
			return r, fmt.Errorf("hole or overlap at %d (have %d bytes)", p.off, len(r.l4))
		}
		r.l4 = append(r.l4, p.data...)
	}
	return r, nil
}

// checksumOK verifies the reassembled TCP/UDP checksum.
func (r reassembled) checksumOK() bool {
	off := 16
	if r.proto == 17 {
		off = 6
	}
	if len(r.l4) < off+2 {
		return false
	}
	cp := append([]byte(nil), r.l4...)
	got := binary.BigEndian.Uint16(cp[off:])
	cp[off], cp[off+1] = 0, 0
	return L4Checksum(r.src, r.dst, r.proto, cp) == got
}

func (r reassembled) ports() (uint16, uint16) {
	return binary.BigEndian.Uint16(r.l4[0:]), binary.BigEndian.Uint16(r.l4[2:])
}
