package datapath

import (
	"errors"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// CTEntry is one connection tracking entry.
type CTEntry struct {
	Ingress     bool // accepted by the endpoint (else opened by it)
	Service     bool // client -> service frontend entry, remembering the backend
	BackendID   uint32
	RevNat      uint32
	Proto       uint8
	Src, Dst    netip.Addr
	SrcPort     uint16
	DstPort     uint16
	Packets     uint64
	Bytes       uint64
	SrcIdentity uint32
	SeenReply   bool
	Closing     bool
	Idle        time.Duration
}

// CTLifetimes says how long idle entries live.
type CTLifetimes struct {
	TCP, TCPClosing, Other time.Duration
}

// DefaultCTLifetimes follows Cilium's defaults.
var DefaultCTLifetimes = CTLifetimes{TCP: 6 * time.Hour, TCPClosing: 10 * time.Second, Other: time.Minute}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func ctEntry(k lxcCtKey, v lxcCtEntry, now uint64) CTEntry {
	e := CTEntry{
		Ingress: k.Dir == 1, Service: k.Dir == 2, BackendID: v.BackendId, RevNat: v.RevNat, Proto: k.Proto,
		Src: addrOf(k.Family, k.Saddr), Dst: addrOf(k.Family, k.Daddr), SrcPort: k.Sport, DstPort: k.Dport,
		Packets: v.Packets, Bytes: v.Bytes, SrcIdentity: v.SrcIdentity,
		SeenReply: v.Flags&1 != 0, Closing: v.Flags&2 != 0,
	}
	if now > v.LastSeen {
		e.Idle = time.Duration(now - v.LastSeen)
	}
	return e
}

// ListCT returns the connection tracking table.
func (d *Datapath) ListCT() ([]CTEntry, error) {
	now := monotonicNow()
	var out []CTEntry
	var k lxcCtKey
	var v lxcCtEntry
	it := d.lxc.LumenCt.Iterate()
	for it.Next(&k, &v) {
		out = append(out, ctEntry(k, v, now))
	}
	return out, it.Err()
}

// GCConntrack deletes entries idle for longer than their lifetime, and
// the DSR flows of connections gone, and returns how many it removed.
func (d *Datapath) GCConntrack(l CTLifetimes) (int, error) {
	now := monotonicNow()
	var stale []lxcCtKey
	var k lxcCtKey
	var v lxcCtEntry
	it := d.lxc.LumenCt.Iterate()
	for it.Next(&k, &v) {
		e := ctEntry(k, v, now)
		life := l.Other
		if e.Proto == 6 {
			life = l.TCP
			if e.Closing {
				life = l.TCPClosing
			}
		}
		if e.Idle > life {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	n := 0
	for i := range stale {
		if err := d.lxc.LumenCt.Delete(&stale[i]); err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, err
		}
	}
	// DSR flows live as long as their connection.
	dn, err := d.gcDSR(l.Other)
	return n + dn, err
}

// FlushConntrack deletes every connection tracking entry (as `cilium bpf ct
// flush`): established connections are then evaluated as new.
func (d *Datapath) FlushConntrack() (int, error) {
	var keys []lxcCtKey
	var k lxcCtKey
	var v lxcCtEntry
	it := d.lxc.LumenCt.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	n := 0
	for i := range keys {
		if err := d.lxc.LumenCt.Delete(&keys[i]); err == nil {
			n++
		}
	}
	return n, nil
}
