// Package neighbor keeps managed neighbour (ARP/NDP) entries for the next
// hops towards other nodes, so the datapath's FIB lookups find a resolved
// MAC (bpf_redirect_neigh) without waiting for resolution on the first packet.
//
// Entries are created with NTF_EXT_LEARNED and NTF_EXT_MANAGED in state
// NUD_NONE ("managed extern_learn" in iproute2): the kernel resolves them on
// its own and keeps re-probing them, so they stay REACHABLE, and they are
// exempt from garbage collection. Lumen owns exactly the entries that carry
// both flags; Sync never touches any other entry. A PERMANENT entry found for
// a desired next hop (left by older setups or by hand) is migrated: it is
// replaced by a managed one.
//
// All functions take a *netlink.Handle, which chooses the network namespace.
package neighbor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Entry is a next hop on a link.
type Entry struct {
	LinkIndex int
	IP        net.IP
}

func (e Entry) String() string { return fmt.Sprintf("%s dev ifindex %d", e.IP, e.LinkIndex) }

func (e Entry) key() string { return fmt.Sprintf("%d/%s", e.LinkIndex, e.IP) }

// IsOwned reports whether n is an entry Lumen manages.
func IsOwned(n *netlink.Neigh) bool {
	return n.Flags&netlink.NTF_EXT_LEARNED != 0 && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0
}

// isStatic reports whether n is a hand-made entry the kernel never updates.
func isStatic(n *netlink.Neigh) bool {
	return n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
}

// Ensure makes sure a managed entry exists for ip on the link.
func Ensure(h *netlink.Handle, linkIndex int, ip net.IP) error {
	e, err := validate(h, linkIndex, ip)
	if err != nil {
		return err
	}
	if err := checkLink(h, e.LinkIndex); err != nil {
		return err
	}
	existing, err := lookup(h, e)
	if err != nil {
		return err
	}
	return ensure(h, e, existing)
}

// Remove deletes Lumen's entry for ip on the link. Entries Lumen does not own
// are left alone; a missing entry is not an error.
func Remove(h *netlink.Handle, linkIndex int, ip net.IP) error {
	e, err := validate(h, linkIndex, ip)
	if err != nil {
		return err
	}
	existing, err := lookup(h, e)
	if err != nil {
		return err
	}
	if existing == nil || !IsOwned(existing) {
		return nil
	}
	return del(h, existing)
}

// Owned lists the entries Lumen owns, IPv4 and IPv6, on all links.
func Owned(h *netlink.Handle) ([]Entry, error) {
	if h == nil {
		return nil, errors.New("neighbor: netlink handle is nil")
	}
	all, err := list(h, 0)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for i := range all {
		if IsOwned(&all[i]) {
			out = append(out, Entry{LinkIndex: all[i].LinkIndex, IP: all[i].IP})
		}
	}
	return out, nil
}

// Sync makes the owned entries equal to desired: it ensures every desired
// entry (migrating PERMANENT ones) and deletes owned entries not desired.
// Invalid entries are reported and skipped; the others are still synced.
func Sync(h *netlink.Handle, desired []Entry) error {
	if h == nil {
		return errors.New("neighbor: netlink handle is nil")
	}
	var errs []error
	want := make(map[string]Entry, len(desired))
	for _, d := range desired {
		e, err := validate(h, d.LinkIndex, d.IP)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[e.key()] = e
	}
	all, err := list(h, 0)
	if err != nil {
		return err
	}
	have := make(map[string]*netlink.Neigh, len(all))
	for i := range all {
		n := &all[i]
		k := Entry{LinkIndex: n.LinkIndex, IP: n.IP}.key()
		have[k] = n
		if _, ok := want[k]; !ok && IsOwned(n) {
			if err := del(h, n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	links := map[int]error{}
	for k, e := range want {
		lerr, seen := links[e.LinkIndex]
		if !seen {
			lerr = checkLink(h, e.LinkIndex)
			links[e.LinkIndex] = lerr
		}
		if lerr != nil {
			errs = append(errs, fmt.Errorf("neighbor %s: %w", e, lerr))
			continue
		}
		if err := ensure(h, e, have[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validate checks the arguments and normalises the IP (IPv4 as 4 bytes).
func validate(h *netlink.Handle, linkIndex int, ip net.IP) (Entry, error) {
	if h == nil {
		return Entry{}, errors.New("neighbor: netlink handle is nil")
	}
	if linkIndex <= 0 {
		return Entry{}, fmt.Errorf("neighbor %s: link index %d is not a valid ifindex", ip, linkIndex)
	}
	switch {
	case ip == nil:
		return Entry{}, fmt.Errorf("neighbor on ifindex %d: IP is nil", linkIndex)
	case len(ip) != net.IPv4len && len(ip) != net.IPv6len:
		return Entry{}, fmt.Errorf("neighbor on ifindex %d: IP %q has invalid length %d", linkIndex, []byte(ip), len(ip))
	case ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.Equal(net.IPv4bcast):
		return Entry{}, fmt.Errorf("neighbor on ifindex %d: IP %s is not a unicast next hop", linkIndex, ip)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return Entry{LinkIndex: linkIndex, IP: slices.Clone(ip)}, nil
}

func checkLink(h *netlink.Handle, index int) error {
	if _, err := h.LinkByIndex(index); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("link index %d not found", index)
		}
		return fmt.Errorf("looking up link index %d: %w", index, err)
	}
	return nil
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// list returns the IPv4 and IPv6 neighbours of one link (0: all links).
func list(h *netlink.Handle, linkIndex int) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var ns []netlink.Neigh
		var err error
		for range 5 { // a dump interrupted by changes is partial: redo it
			ns, err = h.NeighList(linkIndex, fam)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("listing neighbours: %w", err)
		}
		out = append(out, ns...)
	}
	return out, nil
}

// lookup finds the entry for e, or nil.
func lookup(h *netlink.Handle, e Entry) (*netlink.Neigh, error) {
	ns, err := list(h, e.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("neighbor %s: %w", e, err)
	}
	for i := range ns {
		if ns[i].LinkIndex == e.LinkIndex && ns[i].IP.Equal(e.IP) {
			return &ns[i], nil
		}
	}
	return nil, nil
}

// ensure creates or converts the entry; existing is the current one or nil.
func ensure(h *netlink.Handle, e Entry, existing *netlink.Neigh) error {
	if existing != nil && IsOwned(existing) {
		return nil
	}
	if existing != nil && isStatic(existing) {
		// NeighSet with the managed flag drops NUD_PERMANENT in place and the
		// kernel resolves the real MAC: no window without an entry.
		slog.Info("Migrating static neighbour entry to a managed one",
			"subsys", "neighbor", "ip", e.IP, "ifindex", e.LinkIndex, "mac", existing.HardwareAddr.String())
	}
	n := &netlink.Neigh{
		LinkIndex: e.LinkIndex,
		Family:    family(e.IP),
		IP:        e.IP,
		State:     netlink.NUD_NONE,
		Flags:     netlink.NTF_EXT_LEARNED,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
	}
	// NeighSet (create or replace) also converts a static entry or one the
	// kernel created for traffic to this next hop.
	if err := h.NeighSet(n); err != nil {
		return fmt.Errorf("adding managed neighbour %s: %w", e, err)
	}
	return nil
}

func del(h *netlink.Handle, n *netlink.Neigh) error {
	d := &netlink.Neigh{LinkIndex: n.LinkIndex, Family: family(n.IP), IP: n.IP}
	if err := h.NeighDel(d); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting neighbour %s dev ifindex %d: %w", n.IP, n.LinkIndex, err)
	}
	return nil
}
