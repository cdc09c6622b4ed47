package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
)

// PolicyEntry is one row of an endpoint's policy, as the datapath sees it.
type PolicyEntry struct {
	Identity uint32 // 0: any identity
	Egress   bool
	Proto    uint8  // 0: any protocol (then the port must be any too)
	Port     uint16 // host order
	PortBits uint8  // prefix length of Port: 16 exact, 0 any port
	Deny     bool
}

func (e PolicyEntry) String() string {
	dir := "ingress"
	if e.Egress {
		dir = "egress"
	}
	verdict := "allow"
	if e.Deny {
		verdict = "deny"
	}
	port := "any"
	if e.Proto != 0 && e.PortBits > 0 {
		port = fmt.Sprintf("%d/%d", e.Port, e.PortBits)
	}
	return fmt.Sprintf("%s identity=%d proto=%d port=%s %s", dir, e.Identity, e.Proto, port, verdict)
}

type policyRow struct {
	key lxcPolicyKey
	val lxcPolicyValue
}

// PolicyMap keeps the policy entries of every endpoint in the shared LPM
// map, with a mirror in memory so that updates are diffs.
type PolicyMap struct {
	mu     sync.Mutex
	m      *ebpf.Map
	mirror map[uint16]map[lxcPolicyKey]lxcPolicyValue
}

// Policy returns the policy map, loading the current content (after a
// restart the entries of the previous agent are adopted, not flushed).
func (d *Datapath) Policy() (*PolicyMap, error) {
	pm := &PolicyMap{m: d.lxc.LumenPolicy, mirror: map[uint16]map[lxcPolicyKey]lxcPolicyValue{}}
	var k lxcPolicyKey
	var v lxcPolicyValue
	it := pm.m.Iterate()
	for it.Next(&k, &v) {
		if pm.mirror[k.EpId] == nil {
			pm.mirror[k.EpId] = map[lxcPolicyKey]lxcPolicyValue{}
		}
		pm.mirror[k.EpId][k] = v
	}
	return pm, it.Err()
}

func policyKey(epID uint16, e PolicyEntry) lxcPolicyKey {
	k := lxcPolicyKey{Prefixlen: 64, EpId: epID, Identity: e.Identity}
	if e.Egress {
		k.Egress = 1
	}
	if e.Proto != 0 {
		bits := min(e.PortBits, 16)
		k.Proto = e.Proto
		k.Prefixlen = 64 + 16 + uint32(bits)
		port := e.Port
		if bits < 16 {
			port &^= (1 << (16 - bits)) - 1
		}
		// The map key holds the port in network order: LPM compares bytes.
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], port)
		k.Dport = binary.NativeEndian.Uint16(b[:])
	}
	return k
}

func entryOf(k lxcPolicyKey, v lxcPolicyValue) PolicyEntry {
	e := PolicyEntry{Identity: k.Identity, Egress: k.Egress == 1, Proto: k.Proto, Deny: v.Deny == 1}
	if k.Prefixlen > 80 {
		e.PortBits = uint8(k.Prefixlen - 80)
		var b [2]byte
		binary.NativeEndian.PutUint16(b[:], k.Dport)
		e.Port = binary.BigEndian.Uint16(b[:])
	}
	return e
}

// ExpandAnyProto turns "any protocol, some port" entries into one entry per
// port-carrying protocol (TCP, UDP, SCTP): the map can only wildcard the
// protocol together with the port.
func ExpandAnyProto(entries []PolicyEntry) []PolicyEntry {
	out := make([]PolicyEntry, 0, len(entries))
	for _, e := range entries {
		if e.Proto == 0 && e.PortBits > 0 {
			for _, p := range []uint8{6, 17, 132} {
				x := e
				x.Proto = p
				out = append(out, x)
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// Sync makes endpoint epID's entries equal to entries, in an order that
// never allows, even for an instant, what both the old and the new policy
// deny, nor denies what both allow: new denies first, then new allows, then
// removal of stale allows, then of stale denies. (Within an identity group
// no allow sits under a deny of the same policy, so while old and new
// entries coexist the longest match always agrees with one of the two.)
func (pm *PolicyMap) Sync(epID uint16, entries []PolicyEntry) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	want := map[lxcPolicyKey]lxcPolicyValue{}
	for _, e := range ExpandAnyProto(entries) {
		k := policyKey(epID, e)
		v := lxcPolicyValue{}
		if e.Deny {
			v.Deny = 1
		}
		if old, ok := want[k]; ok && old.Deny == 1 {
			continue // deny wins over a duplicate allow
		}
		want[k] = v
	}
	have := pm.mirror[epID]
	if have == nil {
		have = map[lxcPolicyKey]lxcPolicyValue{}
		pm.mirror[epID] = have
	}
	// Each phase is one batch syscall where the kernel supports it.
	put := func(deny uint8) error {
		var ks []lxcPolicyKey
		var vs []lxcPolicyValue
		for k, v := range want {
			if cur, ok := have[k]; v.Deny == deny && (!ok || cur != v) {
				ks, vs = append(ks, k), append(vs, v)
			}
		}
		if len(ks) == 0 {
			return nil
		}
		if _, err := pm.m.BatchUpdate(ks, vs, nil); err != nil {
			for i := range ks {
				if err := pm.m.Update(&ks[i], &vs[i], ebpf.UpdateAny); err != nil {
					return fmt.Errorf("writing policy entry of endpoint %d: %w", epID, err)
				}
			}
		}
		for i := range ks {
			have[ks[i]] = vs[i]
		}
		return nil
	}
	del := func(onlyAllows bool) error {
		var ks []lxcPolicyKey
		for k, v := range have {
			if _, ok := want[k]; !ok && (!onlyAllows || v.Deny == 0) {
				ks = append(ks, k)
			}
		}
		if len(ks) == 0 {
			return nil
		}
		if _, err := pm.m.BatchDelete(ks, nil); err != nil {
			for i := range ks {
				if err := pm.m.Delete(&ks[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("deleting policy entry of endpoint %d: %w", epID, err)
				}
			}
		}
		for _, k := range ks {
			delete(have, k)
		}
		return nil
	}
	if err := put(1); err != nil {
		return err
	}
	if err := put(0); err != nil {
		return err
	}
	if err := del(true); err != nil {
		return err
	}
	if err := del(false); err != nil {
		return err
	}
	if len(have) == 0 {
		delete(pm.mirror, epID)
	}
	return nil
}

// Delete removes every entry of endpoint epID.
func (pm *PolicyMap) Delete(epID uint16) error { return pm.Sync(epID, nil) }

// Endpoints returns the endpoint IDs that have entries.
func (pm *PolicyMap) Endpoints() []uint16 {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	var out []uint16
	for id := range pm.mirror {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Dump reads endpoint epID's entries from the kernel map itself (not the
// mirror), sorted: what `lumen bpf policy get` shows.
func (pm *PolicyMap) Dump(epID uint16) ([]PolicyEntry, error) {
	var out []PolicyEntry
	var k lxcPolicyKey
	var v lxcPolicyValue
	it := pm.m.Iterate()
	for it.Next(&k, &v) {
		if k.EpId == epID {
			out = append(out, entryOf(k, v))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Egress != b.Egress {
			return !a.Egress
		}
		if a.Identity != b.Identity {
			return a.Identity < b.Identity
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port < b.Port
	})
	return out, it.Err()
}
