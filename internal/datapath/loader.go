package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// Trace levels of the datapath (Config.TraceLevel).
const (
	TraceNone    = bpfconst.TraceNone    // drops only
	TraceControl = bpfconst.TraceControl // TCP SYN/FIN/RST and every non-TCP packet
	TraceAll     = bpfconst.TraceAll
)

// Options configure Load.
type Options struct {
	// BPFFS is a bpffs mount private to this agent; maps are pinned in
	// BPFFS/maps and links in BPFFS/links.
	BPFFS string
	// EventsRingSize is the size of the events ring buffer in bytes (a
	// power of two, multiple of the page size); 0 keeps the default 4 MiB.
	EventsRingSize uint32
	// MaglevSize is the number of entries of each Maglev table (a prime);
	// 0 keeps the default 16381.
	MaglevSize uint32
}

// Datapath holds the loaded programs and the shared, pinned maps.
type Datapath struct {
	opts    Options
	lxc     lxcObjects
	host    hostObjects
	overlay overlayObjects
	sock    sockObjects
	xdp     xdpObjects

	maglevInner *ebpf.MapSpec

	Endpoints *ebpf.Map
	IPCache   *ebpf.Map
	Metrics   *ebpf.Map
	Events    *ebpf.Map
	Config    *ebpf.Map
}

const bpfFSMagic = 0xcafe4a11

// MountBPFFS mounts a bpffs at dir unless one is already there.
func MountBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating bpffs dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && uint32(st.Type) == bpfFSMagic {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", dir, err)
	}
	return nil
}

// Load loads every program, reusing maps pinned by an earlier agent so that
// state survives restarts. Programs already attached keep running until
// Attach* replaces them in place.
func Load(opts Options) (*Datapath, error) {
	if err := MountBPFFS(opts.BPFFS); err != nil {
		return nil, err
	}
	pinDir := filepath.Join(opts.BPFFS, "maps")
	for _, d := range []string{pinDir, filepath.Join(opts.BPFFS, "links")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	copts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	d := &Datapath{opts: opts}

	spec, err := loadLxc()
	if err != nil {
		return nil, fmt.Errorf("loading lxc spec: %w", err)
	}
	if opts.EventsRingSize != 0 {
		spec.Maps["lumen_events"].MaxEntries = opts.EventsRingSize
	}
	if opts.MaglevSize != 0 {
		spec.Maps["lumen_lb_maglev"].InnerMap.MaxEntries = opts.MaglevSize
	}
	d.maglevInner = spec.Maps["lumen_lb_maglev"].InnerMap.Copy()
	// Every object declares the shared maps: their specs must be identical
	// for the pins to be shared.
	shared := func(other *ebpf.CollectionSpec) {
		other.Maps["lumen_events"].MaxEntries = spec.Maps["lumen_events"].MaxEntries
		other.Maps["lumen_lb_maglev"].InnerMap.MaxEntries = spec.Maps["lumen_lb_maglev"].InnerMap.MaxEntries
	}
	if err := loadWithRecreate(spec, &d.lxc, copts, pinDir); err != nil {
		return nil, fmt.Errorf("loading lxc programs: %w", err)
	}
	// The other objects share the lxc object's pinned maps.
	for _, o := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
		obj  any
	}{
		{"host", loadHost, &d.host},
		{"overlay", loadOverlay, &d.overlay},
		{"socket load-balancing", loadSock, &d.sock},
		{"XDP", loadXdp, &d.xdp},
	} {
		ospec, err := o.load()
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("loading %s spec: %w", o.name, err)
		}
		shared(ospec)
		if err := ospec.LoadAndAssign(o.obj, copts); err != nil {
			d.Close()
			return nil, fmt.Errorf("loading %s programs: %w", o.name, err)
		}
	}
	m := d.lxc.lxcMaps
	d.Endpoints, d.IPCache, d.Metrics, d.Events, d.Config = m.LumenEndpoints, m.LumenIpcache, m.LumenMetrics, m.LumenEvents, m.LumenConfig
	return d, nil
}

// loadWithRecreate loads spec; when a pinned map no longer matches its spec
// (an upgrade changed it) and holds only soft state, the pin is replaced.
// The events ring is the only such map: endpoint and ipcache state is
// rebuilt by the agent anyway, but their incompatibility is reported
// rather than silently discarded.
func loadWithRecreate(spec *ebpf.CollectionSpec, obj any, copts *ebpf.CollectionOptions, pinDir string) error {
	err := spec.LoadAndAssign(obj, copts)
	if err == nil || !errors.Is(err, ebpf.ErrMapIncompatible) {
		return err
	}
	if rmErr := os.Remove(filepath.Join(pinDir, "lumen_events")); rmErr != nil && !os.IsNotExist(rmErr) {
		return err
	}
	return spec.LoadAndAssign(obj, copts)
}

// Close releases the agent's handles. Pinned maps and links stay, so the
// datapath keeps forwarding while no agent runs.
func (d *Datapath) Close() error {
	return errors.Join(d.lxc.Close(), d.host.Close(), d.overlay.Close(), d.sock.Close(), d.xdp.Close())
}

// Hook names a program attachment.
type Hook int

// The attachment points.
const (
	HookFromContainer Hook = iota
	HookToContainer
	HookFromNetdev
	HookFromOverlay
	HookToNetdev
)

func (d *Datapath) hook(h Hook) (*ebpf.Program, ebpf.AttachType, string) {
	switch h {
	case HookFromContainer:
		return d.lxc.FromContainer, ebpf.AttachTCXIngress, hookName(h)
	case HookToContainer:
		return d.lxc.ToContainer, ebpf.AttachTCXEgress, hookName(h)
	case HookFromNetdev:
		return d.host.FromNetdev, ebpf.AttachTCXIngress, hookName(h)
	case HookToNetdev:
		return d.host.ToNetdev, ebpf.AttachTCXEgress, hookName(h)
	default:
		return d.overlay.FromOverlay, ebpf.AttachTCXIngress, hookName(HookFromOverlay)
	}
}

// hookName names hook's program in its link pin.
func hookName(h Hook) string {
	switch h {
	case HookFromContainer:
		return "from_container"
	case HookToContainer:
		return "to_container"
	case HookFromNetdev:
		return "from_netdev"
	case HookToNetdev:
		return "to_netdev"
	default:
		return "from_overlay"
	}
}

func (d *Datapath) linkPin(ifindex int, name string) string {
	return filepath.Join(d.opts.BPFFS, "links", fmt.Sprintf("%d_%s", ifindex, name))
}

// Attach attaches hook's program to the device with ifindex through a TCX
// link pinned in bpffs. If a pinned link is already there (an earlier agent
// made it) the program is swapped in place: the device is never without a
// program, so restarts open no gap.
func (d *Datapath) Attach(h Hook, ifindex int) error {
	prog, typ, name := d.hook(h)
	pin := d.linkPin(ifindex, name)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if err := l.Update(prog); err == nil {
			return nil
		}
		// The device went away and came back: the old link is defunct.
		_ = l.Unpin()
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ})
	if err != nil {
		return fmt.Errorf("attaching %s to ifindex %d: %w", name, ifindex, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning %s link of ifindex %d: %w", name, ifindex, err)
	}
	return nil
}

// Detach removes hook's program from the device (no error if absent).
func (d *Datapath) Detach(h Hook, ifindex int) error {
	_, _, name := d.hook(h)
	return unpinLink(d.linkPin(ifindex, name))
}

func unpinLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		// A link whose device is gone may not load: drop the pin itself.
		return os.Remove(pin)
	}
	defer l.Close()
	return l.Unpin()
}

// Attached lists the pinned links as "<ifindex>_<program>" names.
func (d *Datapath) Attached() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.opts.BPFFS, "links"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}
