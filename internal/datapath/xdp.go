package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// ErrXDPBond says XDP cannot be attached to a bond here: the kernel has no
// bonding (or no XDP support in it).
var ErrXDPBond = errors.New("XDP on a bond device needs the kernel's bonding driver with XDP support, which this kernel lacks")

// AttachXDP attaches the NodePort accelerator to a device in native
// (driver) mode through a pinned link, updated in place by a restarted
// agent. Bonds get a clear error where the kernel cannot do it.
func (d *Datapath) AttachXDP(ifindex int) error {
	l0, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("XDP: device %d: %w", ifindex, err)
	}
	if l0.Type() == "bond" {
		if _, err := os.Stat("/sys/module/bonding"); err != nil {
			return fmt.Errorf("device %s: %w", l0.Attrs().Name, ErrXDPBond)
		}
	}
	pin := d.linkPin(ifindex, xdpProgram)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		err = l.Update(d.xdp.XdpNodeport)
		l.Close()
		if err == nil {
			return nil
		}
		_ = os.Remove(pin)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.xdp.XdpNodeport, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attaching XDP to %s: %w", l0.Attrs().Name, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning XDP link of %s: %w", l0.Attrs().Name, err)
	}
	return nil
}

// DetachXDP removes the accelerator from a device (no error if absent).
func (d *Datapath) DetachXDP(ifindex int) error {
	return unpinLink(d.linkPin(ifindex, xdpProgram))
}

// XDPPassProgram is an XDP program that passes everything: veth peers
// need one to receive XDP_TX/XDP_REDIRECT frames.
func (d *Datapath) XDPPassProgram() *ebpf.Program { return d.xdp.XdpPass }

// RunXDP runs the accelerator once on pkt as if received on ifindex.
func (d *Datapath) RunXDP(ifindex int, pkt []byte) (RunResult, error) {
	out := make([]byte, len(pkt)+256)
	ctx := xdpContext{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx}
	ret, err := d.xdp.XdpNodeport.Run(opts)
	if err != nil {
		return RunResult{}, err
	}
	return RunResult{Verdict: ret, Data: out[:len(opts.DataOut)]}, nil
}

// xdpContext is struct xdp_md as BPF_PROG_TEST_RUN takes it.
type xdpContext struct {
	Data, DataEnd, DataMeta uint32
	IngressIfindex          uint32
	RxQueueIndex            uint32
	EgressIfindex           uint32
}

// XDPCount is packets and bytes of one XDP action.
type XDPCount struct {
	Packets, Bytes uint64
}

// XDPStats is what the NodePort accelerator did (lumen_xdp_stats).
type XDPStats struct {
	ForwardTX       XDPCount // to a backend on another node, back out of the device it came in
	ForwardRedirect XDPCount // to a backend, through another device
	ReplyTX         XDPCount // a backend's reply to the client, same device
	ReplyRedirect   XDPCount // a backend's reply, another device
	ToTC            XDPCount // service packets left to tc: local backend, DSR mode, no route
}

// XDPStats sums the accelerator's per-CPU counters.
func (d *Datapath) XDPStats() (XDPStats, error) { return readXDPStats(d.xdp.LumenXdpStats) }

// LoadXDPStats reads the accelerator's counters from the maps an agent
// pinned under its bpffs (for tools and tests outside the agent).
func LoadXDPStats(bpffs string) (XDPStats, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(bpffs, "maps", "lumen_xdp_stats"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return XDPStats{}, fmt.Errorf("opening the XDP counters: %w", err)
	}
	defer m.Close()
	return readXDPStats(m)
}

func readXDPStats(m *ebpf.Map) (XDPStats, error) {
	var s XDPStats
	for i, dst := range []*XDPCount{&s.ForwardTX, &s.ForwardRedirect, &s.ReplyTX, &s.ReplyRedirect, &s.ToTC} {
		var vs []xdpMetricsValue
		if err := m.Lookup(uint32(i), &vs); err != nil {
			return s, fmt.Errorf("reading XDP counter %d: %w", i, err)
		}
		for _, v := range vs {
			dst.Packets += v.Packets
			dst.Bytes += v.Bytes
		}
	}
	return s, nil
}
