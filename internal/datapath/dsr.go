package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
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

// LoadDSR reads the DSR flows from the maps an agent pinned under its
// bpffs (for tools and tests outside the agent).
func LoadDSR(bpffs string) ([]DSREntry, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(bpffs, "maps", "lumen_dsr"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("opening the DSR flows: %w", err)
	}
	defer m.Close()
	now := monotonicNow()
	var out []DSREntry
	var k lxcDsrKey
	var v lxcDsrValue
	it := m.Iterate()
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

// SNATEntry is a NodePort flow this node translated to reach a backend on
// another node (SNAT mode): the node's Source stands in for Client.
type SNATEntry struct {
	Proto   uint8
	Source  netip.AddrPort // this node's address and the port it picked
	Backend netip.AddrPort
	Client  netip.AddrPort
	RevNat  uint32
}

// LoadSNAT reads the SNAT flows from the maps an agent pinned under its
// bpffs (for tools and tests outside the agent).
func LoadSNAT(bpffs string) ([]SNATEntry, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(bpffs, "maps", "lumen_snat_rev"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("opening the SNAT flows: %w", err)
	}
	defer m.Close()
	var out []SNATEntry
	var k lxcSnatRevKey
	var v lxcSnatRevValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, SNATEntry{
			Proto:   k.Proto,
			Source:  netip.AddrPortFrom(addrOf(k.Family, k.Addr), hostPort(k.Port)),
			Backend: netip.AddrPortFrom(addrOf(k.Family, k.Peer), hostPort(k.PeerPort)),
			Client:  netip.AddrPortFrom(addrOf(k.Family, v.Client), hostPort(v.ClientPort)),
			RevNat:  v.RevNat,
		})
	}
	return out, it.Err()
}
