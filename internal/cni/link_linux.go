package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
)

// HostIfName is the name of the host side of a container's veth (see
// api.HostIfName: the agent accepts no other).
func HostIfName(containerID string) string { return api.HostIfName(containerID) }

// tmpIfName names the pod side while it is still in the node namespace, where
// CNI_IFNAME (usually eth0) may well be taken.
func tmpIfName(containerID string) string {
	return "tmp" + idHash(containerID)
}

func idHash(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return hex.EncodeToString(sum[:])[:11]
}

// podAddr is one pod address and the gateway the pod reaches everything through.
type podAddr struct {
	IP net.IP
	GW net.IP
}

func (a podAddr) is4() bool { return a.IP.To4() != nil }

// hostNet returns the address as a host prefix (/32 or /128).
func (a podAddr) hostNet() *net.IPNet { return hostPrefix(a.IP) }

func hostPrefix(ip net.IP) *net.IPNet {
	if ip4 := ip.To4(); ip4 != nil {
		return &net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

func defaultNet(v4 bool) *net.IPNet {
	if v4 {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// plugSpec says how to plug one pod.
type plugSpec struct {
	ContainerID string
	IfName      string // inside the pod
	MTU         int    // 0 keeps the kernel default
	Addrs       []podAddr
}

// plugged is what plug created.
type plugged struct {
	HostName  string
	HostIndex int
	HostMAC   net.HardwareAddr
	PodMAC    net.HardwareAddr
	PodIndex  int
}

// plug creates the veth pair in the current (node) namespace, moves its peer
// into podNS as spec.IfName and configures both sides. On error it removes
// the pair it created, and only that.
func plug(spec plugSpec, podNS ns.NetNS) (_ *plugged, err error) {
	hostName, tmpName := HostIfName(spec.ContainerID), tmpIfName(spec.ContainerID)
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: spec.MTU},
		PeerName:  tmpName,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating veth %s (peer %s): an interface with one of these names already exists", hostName, tmpName)
		}
		return nil, fmt.Errorf("creating veth %s (peer %s): %w", hostName, tmpName, err)
	}
	defer func() {
		if err != nil {
			if derr := deleteLink(hostName); derr != nil {
				err = fmt.Errorf("%w (and removing %s again: %v)", err, hostName, derr)
			}
		}
	}()

	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("looking up new veth %s: %w", hostName, err)
	}
	peer, err := netlink.LinkByName(tmpName)
	if err != nil {
		return nil, fmt.Errorf("looking up new veth peer %s: %w", tmpName, err)
	}
	if err := netlink.LinkSetNsFd(peer, int(podNS.Fd())); err != nil {
		return nil, fmt.Errorf("moving %s into netns %s: %w", tmpName, podNS.Path(), err)
	}

	// The host side must take IPv6 (the datapath forwards it) but never
	// configure itself from router advertisements.
	wantV6 := slices.ContainsFunc(spec.Addrs, func(a podAddr) bool { return !a.is4() })
	if err := setIPv6Sysctls(hostName, map[string]string{"accept_ra": "0", "disable_ipv6": "0"}, wantV6); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("setting %s up: %w", hostName, err)
	}
	p := &plugged{HostName: hostName, HostIndex: host.Attrs().Index, HostMAC: host.Attrs().HardwareAddr}

	err = podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(tmpName)
		if err != nil {
			return fmt.Errorf("looking up %s in the pod: %w", tmpName, err)
		}
		if err := netlink.LinkSetName(link, spec.IfName); err != nil {
			return fmt.Errorf("renaming %s to %s in the pod: %w", tmpName, spec.IfName, err)
		}
		if err := setIPv6Sysctls(spec.IfName, map[string]string{"disable_ipv6": "0"}, wantV6); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up in the pod: %w", spec.IfName, err)
		}
		idx := link.Attrs().Index
		p.PodIndex, p.PodMAC = idx, link.Attrs().HardwareAddr
		for _, a := range spec.Addrs {
			addr := &netlink.Addr{IPNet: a.hostNet()}
			if !a.is4() {
				// No DAD: the address is ours alone and must work at once.
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("adding address %s to %s in the pod: %w", addr.IPNet, spec.IfName, err)
			}
		}
		for _, a := range spec.Addrs {
			gwRoute := &netlink.Route{LinkIndex: idx, Dst: hostPrefix(a.GW), Scope: netlink.SCOPE_LINK}
			if err := netlink.RouteAdd(gwRoute); err != nil {
				return fmt.Errorf("adding route %s dev %s scope link in the pod: %w", gwRoute.Dst, spec.IfName, err)
			}
			def := &netlink.Route{LinkIndex: idx, Dst: defaultNet(a.is4()), Gw: a.GW}
			if err := netlink.RouteAdd(def); err != nil {
				return fmt.Errorf("adding default route via %s dev %s in the pod: %w", a.GW, spec.IfName, err)
			}
			// Nothing answers ARP/ND for the gateway: the datapath takes every
			// frame sent to the host side, so point the gateway at that MAC for good.
			family := unix.AF_INET6
			if a.is4() {
				family = unix.AF_INET
			}
			neigh := &netlink.Neigh{
				LinkIndex:    idx,
				Family:       family,
				State:        netlink.NUD_PERMANENT,
				IP:           a.GW,
				HardwareAddr: p.HostMAC,
			}
			if err := netlink.NeighSet(neigh); err != nil {
				return fmt.Errorf("adding permanent neighbour %s lladdr %s dev %s in the pod: %w", a.GW, p.HostMAC, spec.IfName, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// setIPv6Sysctls writes net.ipv6.conf.<ifName>.* in the calling thread's
// namespace. Without IPv6 in the kernel this is only an error when the pod
// needs IPv6.
func setIPv6Sysctls(ifName string, values map[string]string, required bool) error {
	dir := filepath.Join("/proc/sys/net/ipv6/conf", ifName)
	if _, err := os.Stat(dir); err != nil {
		if required {
			return fmt.Errorf("enabling IPv6 on %s: %w", ifName, err)
		}
		return nil
	}
	for _, k := range []string{"accept_ra", "disable_ipv6"} {
		v, ok := values[k]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting net.ipv6.conf.%s.%s=%s: %w", ifName, k, v, err)
		}
	}
	return nil
}

// deleteLink removes the named interface from the current namespace; a
// missing interface is not an error.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// unplugPod removes the pod side of the veth from the namespace at netnsPath.
// A namespace that is already gone, or an interface that is, is fine. Only a
// veth is removed: anything else named ifName is not ours.
func unplugPod(netnsPath, ifName string) (removed bool, err error) {
	err = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			if isLinkNotFound(err) {
				return nil
			}
			return fmt.Errorf("looking up %s in netns %s: %w", ifName, netnsPath, err)
		}
		if link.Type() != "veth" {
			return fmt.Errorf("%s in netns %s is a %s, not the veth lumen-cni creates; leaving it alone", ifName, netnsPath, link.Type())
		}
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("deleting %s in netns %s: %w", ifName, netnsPath, err)
		}
		removed = true
		return nil
	})
	if err != nil && isNetNSGone(err) {
		return false, nil
	}
	return removed, err
}

func isNetNSGone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	return errors.As(err, &notExist) || errors.As(err, &notNS)
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// podState is what CHECK finds on the pod interface.
type podState struct {
	Addrs  []net.IP
	Neighs []netlink.Neigh
	Routes []netlink.Route
}

// inspectPod reads the addresses, neighbours and routes of ifName in the pod.
func inspectPod(podNS ns.NetNS, ifName string) (*podState, error) {
	st := &podState{}
	err := podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			if isLinkNotFound(err) {
				return newError(ErrCheck, "interface %s is missing in netns %s", ifName, podNS.Path())
			}
			return fmt.Errorf("looking up %s in netns %s: %w", ifName, podNS.Path(), err)
		}
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("listing addresses of %s in netns %s: %w", ifName, podNS.Path(), err)
		}
		for _, a := range addrs {
			st.Addrs = append(st.Addrs, a.IP)
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			neighs, err := retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(link.Attrs().Index, fam) })
			if err != nil {
				return fmt.Errorf("listing neighbours of %s in netns %s: %w", ifName, podNS.Path(), err)
			}
			st.Neighs = append(st.Neighs, neighs...)
			routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(link, fam) })
			if err != nil {
				return fmt.Errorf("listing routes of %s in netns %s: %w", ifName, podNS.Path(), err)
			}
			st.Routes = append(st.Routes, routes...)
		}
		return nil
	})
	return st, err
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile (netlink then returns partial results).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 5 {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}
