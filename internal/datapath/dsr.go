package datapath

import (
	"errors"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// DSREntry is a flow a backend on this node answers directly (direct
// server return): the client reached Frontend on another node, which
// forwarded it here untranslated at the source.
type DSREntry struct {
	Proto    uint8
	Backend  netip.AddrPort // the local backend
	Client   netip.AddrPort
	Frontend netip.AddrPort // the replies' source
	Idle     time.Duration
}

func dsrEntry(k lxcDsrKey, v lxcDsrValue, now uint64) DSREntry {
	e := DSREntry{
		Proto:    k.Proto,
		Backend:  netip.AddrPortFrom(addrOf(k.Family, k.Backend), hostPort(k.BackendPort)),
		Client:   netip.AddrPortFrom(addrOf(k.Family, k.Client), hostPort(k.ClientPort)),
		Frontend: netip.AddrPortFrom(addrOf(v.Family, v.Addr), hostPort(v.Port)),
	}
	if now > v.LastSeen {
		e.Idle = time.Duration(now - v.LastSeen)
	}
	return e
}

// ListDSR returns the DSR flows this node's backends answer.
func (d *Datapath) ListDSR() ([]DSREntry, error) {
	now := monotonicNow()
	var out []DSREntry
	var k lxcDsrKey
	var v lxcDsrValue
	it := d.lxc.LumenDsr.Iterate()
	for it.Next(&k, &v) {
		out = append(out, dsrEntry(k, v, now))
	}
	return out, it.Err()
}

// gcDSR deletes DSR flows whose connection tracking entry is gone and that
// have been idle for longer than idle (the entry is written just before
// the connection's, so a fresh one is never taken for stale).
func (d *Datapath) gcDSR(idle time.Duration) (int, error) {
	now := monotonicNow()
	var stale []lxcDsrKey
	var k lxcDsrKey
	var v lxcDsrValue
	it := d.lxc.LumenDsr.Iterate()
	for it.Next(&k, &v) {
		if dsrEntry(k, v, now).Idle <= idle {
			continue
		}
		ck := lxcCtKey{Family: k.Family, Proto: k.Proto, Dir: 1, Sport: hostPort(k.ClientPort), Dport: hostPort(k.BackendPort), Saddr: k.Client, Daddr: k.Backend}
		var ce lxcCtEntry
		if err := d.lxc.LumenCt.Lookup(&ck, &ce); err == nil {
			continue
		}
		stale = append(stale, k)
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	n := 0
	for i := range stale {
		if err := d.lxc.LumenDsr.Delete(&stale[i]); err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, err
		}
	}
	return n, nil
}
