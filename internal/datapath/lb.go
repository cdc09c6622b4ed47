package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Load-balancer scopes of a frontend.
const (
	ScopeExternal = 0
	ScopeInternal = 1
)

// Service flags.
const (
	ServiceMaglev   = 1 << 0
	ServiceAffinity = 1 << 1
	ServiceNodePort = 1 << 2
)

// Frontend identifies a service address.
type Frontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
	Scope uint8
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s/%d scope %d", netip.AddrPortFrom(f.Addr, f.Port), f.Proto, f.Scope)
}

// ServiceEntry is a frontend with its active backends in slot order.
type ServiceEntry struct {
	Frontend
	RevNat          uint32
	Flags           uint32
	AffinityTimeout uint32 // seconds
	Backends        []uint32
}

// Backend is one backend address.
type Backend struct {
	Addr        netip.Addr
	Port        uint16
	Proto       uint8
	Terminating bool
}

func bePort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func hostPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func lbKey(f Frontend, slot uint32) lxcLbKey {
	k := ipKey(f.Addr)
	return lxcLbKey{Family: k.Family, Proto: f.Proto, Dport: bePort(f.Port), Slot: slot, Addr: k.Addr, Scope: f.Scope}
}

// UpsertBackend writes one backend.
func (d *Datapath) UpsertBackend(id uint32, b Backend) error {
	if id == 0 {
		return errors.New("backend id 0 is reserved")
	}
	k := ipKey(b.Addr)
	v := lxcLbBackend{Addr: k.Addr, Port: bePort(b.Port), Proto: b.Proto, Family: k.Family}
	if b.Terminating {
		v.Flags = 1
	}
	if err := d.lxc.LumenLbBackends.Update(&id, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing backend %d: %w", id, err)
	}
	return nil
}

// DeleteBackend removes a backend (no error if absent).
func (d *Datapath) DeleteBackend(id uint32) error {
	if err := d.lxc.LumenLbBackends.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting backend %d: %w", id, err)
	}
	return nil
}

// Backends lists the backend map.
func (d *Datapath) Backends() (map[uint32]Backend, error) {
	out := map[uint32]Backend{}
	var id uint32
	var v lxcLbBackend
	it := d.lxc.LumenLbBackends.Iterate()
	for it.Next(&id, &v) {
		out[id] = Backend{Addr: addrOf(v.Family, v.Addr), Port: hostPort(v.Port), Proto: v.Proto, Terminating: v.Flags&1 != 0}
	}
	return out, it.Err()
}

// UpsertService writes a frontend and its backend slots. Slots are written
// before the count that makes them reachable, and slots beyond the new
// count are removed after it: a lookup never lands on a missing slot.
func (d *Datapath) UpsertService(s ServiceEntry, oldCount uint32) error {
	m := d.lxc.LumenLbServices
	for i, id := range s.Backends {
		k := lbKey(s.Frontend, uint32(i+1))
		v := lxcLbValue{BackendId: id}
		if err := m.Update(&k, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing slot %d of %s: %w", i+1, s.Frontend, err)
		}
	}
	k := lbKey(s.Frontend, 0)
	v := lxcLbValue{Count: uint32(len(s.Backends)), RevNat: s.RevNat, Flags: s.Flags, AffinityTimeout: s.AffinityTimeout}
	if err := m.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing service %s: %w", s.Frontend, err)
	}
	for slot := uint32(len(s.Backends)) + 1; slot <= oldCount; slot++ {
		k := lbKey(s.Frontend, slot)
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting slot %d of %s: %w", slot, s.Frontend, err)
		}
	}
	return nil
}

// DeleteService removes a frontend: its master entry first (no new
// lookups), then its slots.
func (d *Datapath) DeleteService(f Frontend, count uint32) error {
	m := d.lxc.LumenLbServices
	for slot := uint32(0); slot <= count; slot++ {
		k := lbKey(f, slot)
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting %s slot %d: %w", f, slot, err)
		}
	}
	return nil
}

// Services lists the frontends with their slots.
func (d *Datapath) Services() ([]ServiceEntry, error) {
	masters := map[lxcLbKey]*ServiceEntry{}
	slots := map[lxcLbKey]map[uint32]uint32{}
	var k lxcLbKey
	var v lxcLbValue
	it := d.lxc.LumenLbServices.Iterate()
	for it.Next(&k, &v) {
		mk := k
		mk.Slot = 0
		if k.Slot == 0 {
			masters[mk] = &ServiceEntry{
				Frontend: Frontend{Addr: addrOf(k.Family, k.Addr), Port: hostPort(k.Dport), Proto: k.Proto, Scope: k.Scope},
				RevNat:   v.RevNat, Flags: v.Flags, AffinityTimeout: v.AffinityTimeout,
			}
			continue
		}
		if slots[mk] == nil {
			slots[mk] = map[uint32]uint32{}
		}
		slots[mk][k.Slot] = v.BackendId
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	var out []ServiceEntry
	for mk, s := range masters {
		var count lxcLbValue
		kk := mk
		if err := d.lxc.LumenLbServices.Lookup(&kk, &count); err == nil {
			for i := uint32(1); i <= count.Count; i++ {
				s.Backends = append(s.Backends, slots[mk][i])
			}
		}
		out = append(out, *s)
	}
	return out, nil
}

// UpsertRevNat records the frontend of a service id, for reverse NAT.
func (d *Datapath) UpsertRevNat(id uint32, addr netip.Addr, port uint16) error {
	k := ipKey(addr)
	v := lxcLbRevnat{Addr: k.Addr, Port: bePort(port), Family: k.Family}
	if err := d.lxc.LumenLbRevnat.Update(&id, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing reverse NAT %d: %w", id, err)
	}
	return nil
}

// DeleteRevNat removes a service id's reverse NAT entry.
func (d *Datapath) DeleteRevNat(id uint32) error {
	if err := d.lxc.LumenLbRevnat.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// SetMaglev installs a service's Maglev lookup table (backend ids; its
// length must be the configured table size). The new table replaces the
// old one atomically.
func (d *Datapath) SetMaglev(revNat uint32, table []uint32) error {
	spec := d.maglevInner
	if uint32(len(table)) != spec.MaxEntries {
		return fmt.Errorf("maglev table of service %d has %d entries, the datapath is configured for %d", revNat, len(table), spec.MaxEntries)
	}
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("creating maglev table: %w", err)
	}
	defer inner.Close()
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := inner.BatchUpdate(keys, table, nil); err != nil {
		for i := range table {
			if err := inner.Update(uint32(i), table[i], ebpf.UpdateAny); err != nil {
				return fmt.Errorf("filling maglev table: %w", err)
			}
		}
	}
	if err := d.lxc.LumenLbMaglev.Update(revNat, inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("installing maglev table of service %d: %w", revNat, err)
	}
	return nil
}

// DeleteMaglev removes a service's Maglev table.
func (d *Datapath) DeleteMaglev(revNat uint32) error {
	if err := d.lxc.LumenLbMaglev.Delete(revNat); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}
