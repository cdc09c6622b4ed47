package bgp

import (
	"context"
	"log/slog"

	"github.com/lumen-net/lumen/internal/api"
)

// Subsystem is the agent's BGP control plane: a Controller when BGP is
// configured, else an off switch answering with empty lists.
type Subsystem struct{ c *Controller }

// NewSubsystem returns the control plane opts ask for (off when
// !opts.Enabled()). Sessions come up in Run, in the background of the
// agent: a router that is down or slow never holds it up.
func NewSubsystem(opts Options, src Sources, log *slog.Logger, gobgpLevel *slog.LevelVar) (*Subsystem, error) {
	if !opts.Enabled() {
		return &Subsystem{}, nil
	}
	c, err := NewController(opts, src, log, gobgpLevel)
	if err != nil {
		return nil, err
	}
	return &Subsystem{c: c}, nil
}

// Run runs the controller until ctx ends (at once when BGP is off).
func (s *Subsystem) Run(ctx context.Context) error {
	if s.c != nil {
		s.c.Run(ctx)
	}
	return nil
}

// Health is the "bgp" subsystem's status.
func (s *Subsystem) Health() api.SubsystemStatus {
	if s.c == nil {
		return api.SubsystemStatus{Name: "bgp", State: api.StateDisabled, Message: "--bgp-config-path or --enable-bgp-control-plane not set"}
	}
	return s.c.Health()
}

// Peers lists the sessions (none when BGP is off).
func (s *Subsystem) Peers(ctx context.Context) []api.BGPPeer {
	if s.c == nil {
		return []api.BGPPeer{}
	}
	return s.c.Peers(ctx)
}

// Routes lists the announced routes (none when BGP is off).
func (s *Subsystem) Routes(ctx context.Context) []api.BGPRoute {
	if s.c == nil {
		return []api.BGPRoute{}
	}
	return s.c.Routes(ctx)
}
