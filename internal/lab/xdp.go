package lab

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// XDP acceleration (--bpf-lb-acceleration=native) sends frames back out of
// a node's eth0 with XDP_TX or XDP_REDIRECT. A veth hands such frames to
// its peer only when the peer runs an XDP program itself (or has GRO on):
// otherwise they are dropped. So when the agents accelerate, the lab gives
// the underlay end of every node's veth a program that passes everything,
// attached through netlink so that it stays without this process, until
// the namespace goes.
//
// A veth also hands over packets whose TCP/UDP checksum is only partial
// (the sender's checksum offload, completed by whatever NIC sends it to a
// wire). An XDP program cannot tell, and a frame it sends back out has lost
// that state: the receiver sees a wrong checksum. On a real network the
// accelerator sees complete checksums, so the lab's pods and external
// clients compute theirs in software when the agents accelerate.

// WantsXDPPeers reports whether agents started with args attach XDP to
// their devices (--bpf-lb-acceleration=native, as one or two arguments).
func WantsXDPPeers(args []string) bool {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "bpf-lb-acceleration" || !strings.HasPrefix(a, "-") {
			continue
		}
		if !hasVal && i+1 < len(args) {
			val = args[i+1]
		}
		return val == "native"
	}
	return false
}

// attachXDPPass attaches an XDP_PASS program in driver mode to ifName in
// the named namespace.
func attachXDPPass(nsName, ifName string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "lab_xdp_pass",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("loading an XDP_PASS program for %s: %w", ifName, err)
	}
	// The device keeps its own reference once attached.
	defer prog.Close()
	return InNamedNS(nsName, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("finding %s in %s: %w", ifName, nsName, err)
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
			return fmt.Errorf("attaching XDP_PASS to %s in %s: %w", ifName, nsName, err)
		}
		return nil
	})
}

// ethtool ioctl (SIOCETHTOOL) request to set TX checksumming.
const ethtoolSTxCsum = 0x00000017

type ethtoolValue struct {
	cmd, data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// txChecksumOff turns off TX checksum offload of ifName in the named
// namespace: the kernel then writes complete checksums.
func txChecksumOff(nsName, ifName string) error {
	return InNamedNS(nsName, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket for ethtool in %s: %w", nsName, err)
		}
		defer unix.Close(fd)
		v := &ethtoolValue{cmd: ethtoolSTxCsum}
		req := &ifreqData{data: unsafe.Pointer(v)}
		copy(req.name[:unix.IFNAMSIZ-1], ifName)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(req)))
		runtime.KeepAlive(v)
		runtime.KeepAlive(req)
		if errno != 0 {
			return fmt.Errorf("turning TX checksum offload of %s in %s off: %w", ifName, nsName, errno)
		}
		return nil
	})
}
