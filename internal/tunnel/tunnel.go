// Package tunnel manages the overlay device of vxlan routing mode and the MTU
// arithmetic that goes with it.
//
// Lumen uses one collect-metadata ("external", FlowBased) vxlan device per
// node: the VNI and the remote node are not configured on the device but set
// per packet by the BPF programs (bpf_skb_set_tunnel_key), and decapsulated
// packets carry their tunnel metadata into from_overlay.
//
// Functions take a *netlink.Handle, which chooses the network namespace.
package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"unicode"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults of the overlay device (Cilium's port).
const (
	DefaultVXLANName = "lumen_vxlan"
	DefaultVXLANPort = 8472
)

// Encapsulation overhead of VXLAN: outer IP + UDP (8) + VXLAN (8) + inner
// Ethernet (14).
const (
	VXLANOverheadIPv4 = 20 + 8 + 8 + 14 // 50
	VXLANOverheadIPv6 = 40 + 8 + 8 + 14 // 70
)

// Bounds of MTUs Lumen configures. Pods always get IPv6, which needs 1280.
const (
	MinMTU = 1280
	MaxMTU = 65535
)

// Overhead returns the VXLAN encapsulation overhead for the underlay family.
func Overhead(ipv6Underlay bool) int {
	if ipv6Underlay {
		return VXLANOverheadIPv6
	}
	return VXLANOverheadIPv4
}

// OverlayMTU returns the MTU of the vxlan device and of the pods for an
// underlay device MTU: the underlay MTU minus the encapsulation overhead.
func OverlayMTU(underlayMTU int, ipv6Underlay bool) (int, error) {
	if underlayMTU < MinMTU || underlayMTU > MaxMTU {
		return 0, fmt.Errorf("tunnel: underlay MTU %d out of range [%d, %d]", underlayMTU, MinMTU, MaxMTU)
	}
	mtu := underlayMTU - Overhead(ipv6Underlay)
	if mtu < MinMTU {
		return 0, fmt.Errorf("tunnel: underlay MTU %d leaves %d after %d bytes of VXLAN overhead, less than the %d IPv6 needs",
			underlayMTU, mtu, Overhead(ipv6Underlay), MinMTU)
	}
	return mtu, nil
}

// EnsureVXLAN makes sure a collect-metadata vxlan device called name exists
// with UDP port port, is up and, if mtu is not 0, has that MTU. An empty name
// and port 0 mean the defaults. A vxlan device of that name with other
// settings is recreated; a device of another type is an error and left alone.
// It returns the device as the kernel reports it.
func EnsureVXLAN(h *netlink.Handle, name string, port, mtu int) (*netlink.Vxlan, error) {
	if h == nil {
		return nil, errors.New("tunnel: netlink handle is nil")
	}
	if name == "" {
		name = DefaultVXLANName
	}
	if port == 0 {
		port = DefaultVXLANPort
	}
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("tunnel: vxlan port %d out of range [1, 65535]", port)
	}
	if mtu != 0 && (mtu < MinMTU || mtu > MaxMTU) {
		return nil, fmt.Errorf("tunnel: vxlan MTU %d out of range [%d, %d]", mtu, MinMTU, MaxMTU)
	}
	log := slog.With("subsys", "tunnel", "device", name)

	link, err := linkByName(h, name)
	if err != nil {
		return nil, err
	}
	if link != nil {
		vx, ok := link.(*netlink.Vxlan)
		if !ok {
			return nil, fmt.Errorf("tunnel: device %q exists and is a %s, not a vxlan; not touching it", name, link.Type())
		}
		if why := mismatch(vx, port); why != "" {
			log.Info("Recreating vxlan device", "reason", why)
			if err := h.LinkDel(vx); err != nil && !errors.Is(err, unix.ENODEV) {
				return nil, fmt.Errorf("tunnel: deleting vxlan device %q: %w", name, err)
			}
			link = nil
		}
	}
	if link == nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu},
			FlowBased: true,
			Port:      port,
		}
		if err := h.LinkAdd(vx); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("tunnel: creating vxlan device %q on port %d: %w (another collect-metadata vxlan device may use the port)", name, port, err)
			}
			return nil, fmt.Errorf("tunnel: creating vxlan device %q on port %d: %w", name, port, err)
		}
		log.Info("Created vxlan device", "port", port, "mtu", mtu)
		if link, err = linkByName(h, name); err != nil {
			return nil, err
		}
		if link == nil {
			return nil, fmt.Errorf("tunnel: vxlan device %q vanished after creation", name)
		}
	}
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("tunnel: setting MTU %d on %q: %w", mtu, name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("tunnel: setting %q up: %w", name, err)
		}
	}
	if link, err = linkByName(h, name); err != nil {
		return nil, err
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("tunnel: device %q was replaced by a %s", name, link.Type())
	}
	return vx, nil
}

// mismatch says why an existing vxlan device does not fit, or "".
func mismatch(vx *netlink.Vxlan, port int) string {
	switch {
	case !vx.FlowBased:
		return "not in collect-metadata (external) mode"
	case vx.Port != port:
		return fmt.Sprintf("port %d, want %d", vx.Port, port)
	case vx.VtepDevIndex != 0:
		return "bound to an underlay device"
	case vx.Group != nil && !vx.Group.IsUnspecified():
		return fmt.Sprintf("has remote/group %s", vx.Group)
	}
	return ""
}

// DeleteVXLAN removes the vxlan device called name (default if empty). A
// missing device is not an error; a device of another type is.
func DeleteVXLAN(h *netlink.Handle, name string) error {
	if h == nil {
		return errors.New("tunnel: netlink handle is nil")
	}
	if name == "" {
		name = DefaultVXLANName
	}
	if err := validName(name); err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	link, err := linkByName(h, name)
	if err != nil || link == nil {
		return err
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("tunnel: device %q is a %s, not a vxlan; not deleting it", name, link.Type())
	}
	if err := h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("tunnel: deleting vxlan device %q: %w", name, err)
	}
	return nil
}

// linkByName returns the link or nil if there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("tunnel: looking up device %q: %w", name, err)
	}
	return link, nil
}

// validName applies the kernel's rules for interface names.
func validName(name string) error {
	switch {
	case len(name) > 15:
		return fmt.Errorf("device name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("device name %q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || r == 0 || r > unicode.MaxASCII {
			return fmt.Errorf("device name %q contains invalid character %q", name, r)
		}
	}
	return nil
}
