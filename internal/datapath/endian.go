package datapath

import "encoding/binary"

// The kernel stores tunnel_ip4 as the raw bytes of the address; bpf2go maps
// the field to a uint32 in host (little-endian) order.
func nativeEndianU32(b [4]byte) uint32 { return binary.NativeEndian.Uint32(b[:]) }

func nativeEndianBytes(v uint32) [4]byte {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return b
}
