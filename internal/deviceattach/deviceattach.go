// Package deviceattach keeps from_netdev/to_netdev (and, with
// acceleration, the XDP program) on the node's selected devices as the
// device watcher reports them.
package deviceattach

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/devices"
)

// Deps are what the attacher works with.
type Deps struct {
	Datapath *datapath.Datapath
	// Initial is the first device list (attached by New); Updates the
	// following ones, closed when the watch ends.
	Initial []devices.Device
	Updates <-chan []devices.Device
	// XDP attaches xdp_nodeport too (--bpf-lb-acceleration=native).
	XDP bool
	Log *slog.Logger
}

// Attacher is the set of devices carrying from_netdev (and, with
// acceleration, the XDP program).
type Attacher struct {
	dp      *datapath.Datapath
	updates <-chan []devices.Device
	log     *slog.Logger

	mu   sync.Mutex
	devs map[int]string
	err  error
	xdp  bool
}

// New attaches the programs to deps.Initial before returning, so that a
// link prune after it keeps them.
func New(deps Deps) *Attacher {
	s := &Attacher{dp: deps.Datapath, updates: deps.Updates, log: deps.Log, xdp: deps.XDP}
	s.attach(deps.Initial)
	return s
}

// Run follows the device list until the watch ends.
func (s *Attacher) Run(ctx context.Context) error {
	for d := range s.updates {
		s.attach(d)
	}
	return nil
}

// Has reports whether the device with ifindex carries the programs.
func (s *Attacher) Has(ifindex int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.devs[ifindex]
	return ok
}

// Names are the devices' names.
func (s *Attacher) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{}
	for _, n := range s.devs {
		out = append(out, n)
	}
	return out
}

// Health is the "devices" subsystem's status.
func (s *Attacher) Health() api.SubsystemStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return api.SubsystemStatus{Name: "devices", State: api.StateDegraded, Message: s.err.Error()}
	case len(s.devs) == 0:
		return api.SubsystemStatus{Name: "devices", State: api.StateDegraded, Message: "no device with a global route"}
	}
	names := []string{}
	for _, n := range s.devs {
		names = append(names, n)
	}
	return api.SubsystemStatus{Name: "devices", State: api.StateOK, Message: strings.Join(names, ", ")}
}

// attach puts from_netdev on every device of devs and takes it off the
// devices that left the list.
func (s *Attacher) attach(devs []devices.Device) {
	dp, log := s.dp, s.log
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[int]string{}
	s.err = nil
	for _, d := range devs {
		if err := dp.Attach(datapath.HookFromNetdev, d.Index); err != nil {
			log.Error("attaching to device", "device", d.Name, "err", err)
			s.err = err
			continue
		}
		if err := dp.Attach(datapath.HookToNetdev, d.Index); err != nil {
			log.Error("attaching to device", "device", d.Name, "err", err)
			s.err = err
			continue
		}
		if s.xdp {
			if err := dp.AttachXDP(d.Index); err != nil {
				log.Error("XDP acceleration", "device", d.Name, "err", err)
				s.err = err
			}
		} else if err := dp.DetachXDP(d.Index); err != nil {
			log.Warn("removing XDP", "device", d.Name, "err", err)
		}
		next[d.Index] = d.Name
	}
	for idx, name := range s.devs {
		if _, ok := next[idx]; !ok {
			_ = dp.Detach(datapath.HookFromNetdev, idx)
			_ = dp.Detach(datapath.HookToNetdev, idx)
			_ = dp.DetachXDP(idx)
			log.Info("device removed", "device", name)
		}
	}
	s.devs = next
	log.Info("devices", "selected", devices.Names(devs))
}
