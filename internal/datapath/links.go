package datapath

import (
	"errors"
	"fmt"
	"path/filepath"
)

// xdpProgram names the XDP accelerator's links.
const xdpProgram = "xdp_nodeport"

// WantedLinks says which devices are which; the datapath knows which
// programs each kind of device carries.
type WantedLinks struct {
	// Endpoint reports whether ifindex is an endpoint's host-side device
	// (from_container, to_container).
	Endpoint func(ifindex int) bool
	// Device reports whether ifindex is a selected host device
	// (from_netdev, to_netdev).
	Device func(ifindex int) bool
	// XDP keeps the accelerator on the host devices.
	XDP bool
	// Overlay is the tunnel device's ifindex (from_overlay); 0: none.
	Overlay int
}

// wants reports whether the pinned link of program on ifindex is wanted.
func (w WantedLinks) wants(ifindex int, program string) bool {
	switch program {
	case hookName(HookFromContainer), hookName(HookToContainer):
		return w.Endpoint != nil && w.Endpoint(ifindex)
	case hookName(HookFromNetdev), hookName(HookToNetdev):
		return w.Device != nil && w.Device(ifindex)
	case xdpProgram:
		return w.XDP && w.Device != nil && w.Device(ifindex)
	case hookName(HookFromOverlay):
		return w.Overlay != 0 && ifindex == w.Overlay
	}
	return false
}

// PruneLinks detaches every pinned link that w does not want: devices and
// pods gone while no agent ran, programs switched off. Socket
// load-balancing links (cgroup_*) are dropped too: AttachSocketLB makes
// them again on the cgroup it is given, which may not be the old one.
func (d *Datapath) PruneLinks(w WantedLinks) error {
	names, err := d.Attached()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		var ifindex int
		var prog string
		if _, err := fmt.Sscanf(n, "%d_%s", &ifindex, &prog); err != nil || !w.wants(ifindex, prog) {
			errs = append(errs, unpinLink(filepath.Join(d.opts.BPFFS, "links", n)))
		}
	}
	return errors.Join(errs...)
}
