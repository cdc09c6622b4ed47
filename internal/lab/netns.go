package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

// InNamedNS runs fn on a thread switched into the named namespace.
func InNamedNS(name string, fn func() error) error {
	return netnsutil.DoPath(labpath.NSPath(name), fn)
}

// netnsShared records that labpath.NetnsDir was made a shared mount point.
var netnsShared struct {
	sync.Mutex
	done bool
}

// errWouldHide: the directory is not a mount point and holds mounts that a
// bind mount over it would hide.
var errWouldHide = errors.New("not a mount point, and binding it over itself would hide the namespace mounts in it")

// shareMountDir makes dir a shared mount point, as iproute2's `ip netns
// add` does: make it shared, and if it is not a mount point yet, bind it
// over itself first. Namespace mounts made in it afterwards stay visible
// (and removable) whoever binds or shares it later: iproute2 finds a mount
// point and only makes it shared. Were iproute2 the first to bind it, every
// namespace mounted before would be hidden under its bind mount, and
// removing its file would fail with EBUSY. The same would happen to other
// users' namespaces if this bound dir while they are in it, so it does not
// then (errWouldHide).
func shareMountDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	under, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	if len(under) > 0 {
		return fmt.Errorf("%s: %w (%d of them)", dir, errWouldHide, len(under))
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s over itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	return nil
}

// mountInfo is one line of /proc/thread-self/mountinfo: the mount point
// and whether the mount is shared.
type mountInfo struct {
	point  string
	shared bool
}

// mounts lists the calling thread's mount namespace.
func mounts() ([]mountInfo, error) {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountInfo
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		m := mountInfo{point: unescapeMount(f[4])}
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			m.shared = m.shared || strings.HasPrefix(opt, "shared:")
		}
		out = append(out, m)
	}
	return out, nil
}

// mountsBelow lists the mount points strictly below dir in the calling
// thread's mount namespace.
func mountsBelow(dir string) ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.point, filepath.Clean(dir)+"/") {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// ensureNetnsShared makes labpath.NetnsDir a shared mount point before the first
// namespace is bound in it (once; retried while other namespaces there
// keep it from being done safely).
func ensureNetnsShared() error {
	netnsShared.Lock()
	defer netnsShared.Unlock()
	if netnsShared.done {
		return nil
	}
	err := shareMountDir(labpath.NetnsDir)
	if errors.Is(err, errWouldHide) {
		return nil // as before: iproute2 may still hide ours later
	}
	netnsShared.done = err == nil
	return err
}

// CreateNS creates a network namespace bound at /run/netns/<name>, after
// making /run/netns a shared mount point (see shareMountDir).
func CreateNS(name string) error {
	if err := ensureNetnsShared(); err != nil {
		return err
	}
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		return err
	}
	ns.Close()
	return nil
}

// DeleteNS unbinds a named namespace; the namespace itself goes away with its
// last process. A missing namespace is not an error.
func DeleteNS(name string) error {
	p := labpath.NSPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting namespace %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("removing namespace %s: %w: its file is still mounted below a mount over %s (made by `ip netns add` after the namespace was created)", name, err, labpath.NetnsDir)
		}
		return fmt.Errorf("removing namespace %s: %w", name, err)
	}
	return nil
}

// ListNS returns the named namespaces whose names start with prefix.
func ListNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(labpath.NetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// NSExists reports whether a named namespace is bound.
func NSExists(name string) bool {
	_, err := os.Stat(labpath.NSPath(name))
	return err == nil
}

// WriteSysctl writes /proc/sys/<key> (dots or slashes) as seen from the
// named namespace. /proc/sys/net resolves against the writing thread's
// network namespace, so this never changes the host's value.
func WriteSysctl(nsName, key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return InNamedNS(nsName, func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s=%s in %s: %w", key, value, nsName, err)
		}
		return nil
	})
}

// ReadSysctl reads /proc/sys/<key> as seen from the named namespace.
func ReadSysctl(nsName, key string) (string, error) {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	var v string
	err := InNamedNS(nsName, func() error {
		b, err := os.ReadFile(p)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// nlHandle opens a netlink handle for the named namespace.
func nlHandle(nsName string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(labpath.NSPath(nsName))
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", nsName, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsName, err)
	}
	return h, nil
}

// underlayBridge is the bridge in the underlay namespace.
const underlayBridge = "br0"

// setupUnderlay creates the underlay namespace with lo and the bridge up.
func setupUnderlay(nsName string) error {
	if err := CreateNS(nsName); err != nil {
		return err
	}
	h, err := nlHandle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: underlayBridge}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("underlay: adding bridge %s: %w", underlayBridge, err)
	}
	if err := linkUp(h, underlayBridge); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	return nil
}

// underlayPort names the bridge port of node i in the underlay.
func underlayPort(node string, i int) string {
	if n := "to-" + node; len(n) <= 15 {
		return n
	}
	return fmt.Sprintf("node%d", i)
}

// NodeDevice is the node's underlay interface.
const NodeDevice = "eth0"

// setupNode creates node i's namespace, joins it to the underlay bridge with
// a veth (eth0 inside the node), addresses it and enables forwarding.
func setupNode(underlayNS, nodeNS, node string, i int) error {
	if err := CreateNS(nodeNS); err != nil {
		return err
	}
	uh, err := nlHandle(underlayNS)
	if err != nil {
		return err
	}
	defer uh.Close()
	nh, err := nlHandle(nodeNS)
	if err != nil {
		return err
	}
	defer nh.Close()
	nodeFd, err := unix.Open(labpath.NSPath(nodeNS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", nodeNS, err)
	}
	defer unix.Close(nodeFd)

	port := underlayPort(node, i)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      NodeDevice,
		PeerNamespace: netlink.NsFd(nodeFd),
	}
	if err := uh.LinkAdd(veth); err != nil {
		return fmt.Errorf("node %s: adding veth %s/%s: %w", node, port, NodeDevice, err)
	}
	br, err := uh.LinkByName(underlayBridge)
	if err != nil {
		return fmt.Errorf("node %s: finding bridge: %w", node, err)
	}
	pl, err := uh.LinkByName(port)
	if err != nil {
		return fmt.Errorf("node %s: finding %s: %w", node, port, err)
	}
	if err := uh.LinkSetMaster(pl, br); err != nil {
		return fmt.Errorf("node %s: attaching %s to the bridge: %w", node, port, err)
	}
	if err := uh.LinkSetUp(pl); err != nil {
		return fmt.Errorf("node %s: setting %s up: %w", node, port, err)
	}

	if err := linkUp(nh, "lo"); err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	eth, err := nh.LinkByName(NodeDevice)
	if err != nil {
		return fmt.Errorf("node %s: finding %s: %w", node, NodeDevice, err)
	}
	for _, pfx := range []string{NodeIPv4(i).String(), NodeIPv6(i).String()} {
		ipn, err := netlink.ParseIPNet(pfx)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipn}
		if ipn.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nh.AddrAdd(eth, addr); err != nil {
			return fmt.Errorf("node %s: adding %s to %s: %w", node, pfx, NodeDevice, err)
		}
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("node %s: setting %s up: %w", node, NodeDevice, err)
	}
	for _, s := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"}} {
		if err := WriteSysctl(nodeNS, s[0], s[1]); err != nil {
			return fmt.Errorf("node %s: %w", node, err)
		}
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// nsInode returns the inode of a namespace file, used to tell which
// namespace a process is in.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ifaceAddrs lists the addresses of a namespace's interface (for tests and status).
func ifaceAddrs(nsName, ifName string) ([]net.IPNet, error) {
	h, err := nlHandle(nsName)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in %s: %w", ifName, nsName, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s in %s: %w", ifName, nsName, err)
	}
	out := make([]net.IPNet, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, *a.IPNet)
	}
	return out, nil
}
