// Package ipam hands out pod addresses from a node's pod CIDRs. The first
// address of each CIDR is the pods' gateway. Allocations are persisted in
// a file so that an agent restart keeps every pod's address.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// ErrExhausted says a pod CIDR has no free address left.
var ErrExhausted = errors.New("pod CIDR exhausted")

// Allocation is the pair of addresses of one owner (container).
type Allocation struct {
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

// IPAM allocates from one IPv4 and/or one IPv6 CIDR.
type IPAM struct {
	mu     sync.Mutex
	v4, v6 netip.Prefix
	file   string
	owners map[string]Allocation
	used   map[netip.Addr]string
}

// New returns an allocator for the given CIDRs (either may be invalid to
// disable that family), restoring allocations from file if it exists.
func New(v4, v6 netip.Prefix, file string) (*IPAM, error) {
	if v4.IsValid() && (!v4.Addr().Is4() || v4.Bits() > 30) {
		return nil, fmt.Errorf("ipv4 pod CIDR %s: must be an IPv4 prefix of /30 or larger", v4)
	}
	if v6.IsValid() && (!v6.Addr().Is6() || v6.Bits() > 126) {
		return nil, fmt.Errorf("ipv6 pod CIDR %s: must be an IPv6 prefix of /126 or larger", v6)
	}
	if !v4.IsValid() && !v6.IsValid() {
		return nil, errors.New("no pod CIDR configured")
	}
	m := &IPAM{v4: v4.Masked(), v6: v6.Masked(), file: file, owners: map[string]Allocation{}, used: map[netip.Addr]string{}}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

// Gateways returns the pods' gateway of each family (invalid if disabled).
func (m *IPAM) Gateways() (v4, v6 netip.Addr) {
	if m.v4.IsValid() {
		v4 = m.v4.Addr().Next()
	}
	if m.v6.IsValid() {
		v6 = m.v6.Addr().Next()
	}
	return
}

// CIDRs returns the configured pod CIDRs.
func (m *IPAM) CIDRs() (v4, v6 netip.Prefix) { return m.v4, m.v6 }

// Allocate gives owner one address per configured family. Allocating
// again for the same owner returns the same addresses.
func (m *IPAM) Allocate(owner string) (Allocation, error) {
	if owner == "" {
		return Allocation{}, errors.New("owner: must not be empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.owners[owner]; ok {
		return a, nil
	}
	var a Allocation
	var err error
	if m.v4.IsValid() {
		if a.IPv4, err = m.next(m.v4); err != nil {
			return Allocation{}, err
		}
	}
	if m.v6.IsValid() {
		if a.IPv6, err = m.next(m.v6); err != nil {
			return Allocation{}, err
		}
	}
	m.set(owner, a)
	if err := m.save(); err != nil {
		m.release(owner)
		return Allocation{}, err
	}
	return a, nil
}

// Release frees owner's addresses; false if it had none.
func (m *IPAM) Release(owner string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.owners[owner]; !ok {
		return false, nil
	}
	m.release(owner)
	return true, m.save()
}

// Owners returns a copy of all allocations.
func (m *IPAM) Owners() map[string]Allocation {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Allocation, len(m.owners))
	for k, v := range m.owners {
		out[k] = v
	}
	return out
}

func (m *IPAM) set(owner string, a Allocation) {
	m.owners[owner] = a
	if a.IPv4.IsValid() {
		m.used[a.IPv4] = owner
	}
	if a.IPv6.IsValid() {
		m.used[a.IPv6] = owner
	}
}

func (m *IPAM) release(owner string) {
	a := m.owners[owner]
	delete(m.used, a.IPv4)
	delete(m.used, a.IPv6)
	delete(m.owners, owner)
}

// next finds the lowest free address after the gateway. Linear, but pod
// CIDRs are small and allocation is rare next to packet processing.
func (m *IPAM) next(p netip.Prefix) (netip.Addr, error) {
	gw := p.Addr().Next()
	for a := gw.Next(); p.Contains(a); a = a.Next() {
		if a.Is4() && !p.Contains(a.Next()) {
			break // broadcast address
		}
		if _, taken := m.used[a]; !taken {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: %w", p, ErrExhausted)
}

type fileState struct {
	Owners map[string]Allocation `json:"owners"`
}

func (m *IPAM) load() error {
	if m.file == "" {
		return nil
	}
	b, err := os.ReadFile(m.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading IPAM state: %w", err)
	}
	var st fileState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("parsing IPAM state %s: %w", m.file, err)
	}
	for owner, a := range st.Owners {
		// Addresses outside today's CIDRs (the node was reconfigured) are dropped.
		if a.IPv4.IsValid() && !m.v4.Contains(a.IPv4) {
			a.IPv4 = netip.Addr{}
		}
		if a.IPv6.IsValid() && !m.v6.Contains(a.IPv6) {
			a.IPv6 = netip.Addr{}
		}
		m.set(owner, a)
	}
	return nil
}

func (m *IPAM) save() error {
	if m.file == "" {
		return nil
	}
	b, err := json.Marshal(fileState{Owners: m.owners})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.file), 0o700); err != nil {
		return err
	}
	tmp := m.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing IPAM state: %w", err)
	}
	return os.Rename(tmp, m.file)
}
