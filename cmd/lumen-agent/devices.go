package main

import (
	"log/slog"
	"strings"
	"sync"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/devices"
)

// deviceState is the set of devices carrying from_netdev (and, with
// acceleration, the XDP program).
type deviceState struct {
	mu   sync.Mutex
	devs map[int]string
	err  error
	xdp  bool
}

func (s *deviceState) has(ifindex int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.devs[ifindex]
	return ok
}

func (s *deviceState) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{}
	for _, n := range s.devs {
		out = append(out, n)
	}
	return out
}

func (s *deviceState) health() api.SubsystemStatus {
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

// attachDevices puts from_netdev on every device of devs and takes it off
// the devices that left the list.
func attachDevices(dp *datapath.Datapath, s *deviceState, devs []devices.Device, log *slog.Logger) {
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
