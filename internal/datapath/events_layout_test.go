package datapath

import (
	"testing"
	"unsafe"
)

// The hand-written decoder must follow the C layout bpf2go mirrored.
func TestEventLayout(t *testing.T) {
	var e lxcEvent
	checks := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"ts", unsafe.Offsetof(e.Ts), 0},
		{"type", unsafe.Offsetof(e.Type), 8},
		{"family", unsafe.Offsetof(e.Family), 10},
		{"ep_id", unsafe.Offsetof(e.EpId), 14},
		{"ifindex", unsafe.Offsetof(e.Ifindex), 16},
		{"len", unsafe.Offsetof(e.Len), 28},
		{"sport", unsafe.Offsetof(e.Sport), 32},
		{"saddr", unsafe.Offsetof(e.Saddr), 36},
		{"daddr", unsafe.Offsetof(e.Daddr), 52},
		{"flags", unsafe.Offsetof(e.Flags), 68},
		{"flags size", unsafe.Sizeof(e.Flags), 2},
		{"icmp_type", unsafe.Offsetof(e.IcmpType), 70},
		{"icmp_code", unsafe.Offsetof(e.IcmpCode), 71},
		{"size", unsafe.Sizeof(e), 72},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s at %d, decoder assumes %d", c.name, c.got, c.want)
		}
	}
}
