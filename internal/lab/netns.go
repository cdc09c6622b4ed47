package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNS runs fn on a fresh OS thread switched into ns. The calling goroutine
// never changes namespace. If the thread cannot be switched back, it is left
// locked so that the Go runtime throws it away when the goroutine ends,
// instead of reusing a thread that sits in the wrong namespace.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting the thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("switching thread into namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("switching thread back: %w", err))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNamedNS runs fn on a thread switched into the named namespace.
func InNamedNS(name string, fn func() error) error {
	ns, err := netns.GetFromPath(NSPath(name))
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", name, err)
	}
	defer ns.Close()
	return inNS(ns, fn)
}

// CreateNS creates a network namespace bound at /run/netns/<name>.
func CreateNS(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting the thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		// NewNamed switches the thread into the new namespace (also when
		// binding it fails), so switch back whatever happened.
		ns, nerr := netns.NewNamed(name)
		if nerr == nil {
			ns.Close()
		}
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(nerr, fmt.Errorf("switching thread back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if nerr != nil {
			nerr = fmt.Errorf("creating namespace %s: %w", name, nerr)
		}
		errc <- nerr
	}()
	return <-errc
}

// DeleteNS unbinds a named namespace; the namespace itself goes away with its
// last process. A missing namespace is not an error.
func DeleteNS(name string) error {
	p := NSPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting namespace %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing namespace %s: %w", name, err)
	}
	return nil
}

// ListNS returns the named namespaces whose names start with prefix.
func ListNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
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
	_, err := os.Stat(NSPath(name))
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
	ns, err := netns.GetFromPath(NSPath(nsName))
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
	nodeFd, err := unix.Open(NSPath(nodeNS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
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
