package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Options choose where the configuration comes from.
type Options struct {
	// ConfigFile is the Cilium 1.11 ConfigMap (--bgp-config-path); it is
	// read again when it changes.
	ConfigFile string
	// Announce is what the ConfigMap's routers export.
	Announce AnnounceOptions
	// ControlPlane follows CiliumBGPPeeringPolicy objects in the store
	// (--enable-bgp-control-plane).
	ControlPlane bool
	// Interval is how often the controller converges (default 1s).
	Interval time.Duration
	// ReadyTimeout bounds the wait for Sources.Ready before the first
	// announcement (default 30s).
	ReadyTimeout time.Duration
}

// Enabled reports whether BGP is configured at all.
func (o Options) Enabled() bool { return o.ConfigFile != "" || o.ControlPlane }

// Sources are what the controller reads from the rest of the agent.
type Sources struct {
	// NodeLabels are matched by node selectors.
	NodeLabels map[string]string
	// NodeIPs are the next hops of announced routes (and the IPv4 address
	// is the default router id).
	NodeIPs func() (v4, v6 netip.Addr)
	// PodCIDRs are the node's pod CIDRs.
	PodCIDRs []netip.Prefix
	// Frontends lists the frontends the datapath serves (lbsync): a
	// service address is announced only once this node serves it.
	Frontends func() []api.Service
	// Ready reports that Frontends reflects the store; until then (or
	// ReadyTimeout) nothing is announced, so that a restarted agent does
	// not send its End-of-RIB with half of its routes.
	Ready func() bool
	// Services and Policies (CiliumBGPPeeringPolicies) are state tables;
	// nil: none.
	Services, Policies *state.Table[*resource.Object]
}

// Controller turns the configuration and the node's state into the
// speaker's desired state, and keeps the speaker converged.
type Controller struct {
	opts    Options
	src     Sources
	log     *slog.Logger
	speaker *Speaker

	mu         sync.Mutex
	file       *FileConfig
	fileStamp  fileStamp
	fileErr    error
	policies   map[string]*PeeringPolicy // by store key
	policyErrs map[string]error
	services   map[string]*lb.Service // by store key
	// revisions of the tables services and policies were decoded from
	svcRev, policyRev uint64
	configErr         error // from resolving the configuration for this node
	applyErr          error
	notes             []string // what could not be announced
	policyName        string
	started           time.Time
	routerCount       int
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewController checks the configuration file (if any) and returns a
// controller; nothing connects before Run.
func NewController(opts Options, src Sources, log *slog.Logger, gobgpLevel *slog.LevelVar) (*Controller, error) {
	if opts.Interval == 0 {
		opts.Interval = time.Second
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.ConfigFile != "" && opts.ControlPlane {
		return nil, errors.New("bgp-config-path and enable-bgp-control-plane: choose one (the ConfigMap form or CiliumBGPPeeringPolicy)")
	}
	c := &Controller{
		opts: opts, src: src, log: log, speaker: NewSpeaker(log, gobgpLevel),
		policies: map[string]*PeeringPolicy{}, policyErrs: map[string]error{}, services: map[string]*lb.Service{},
		started: time.Now(),
	}
	if opts.ConfigFile != "" {
		fc, st, err := loadFile(opts.ConfigFile)
		if err != nil {
			return nil, err
		}
		c.file, c.fileStamp = fc, st
	}
	return c, nil
}

func loadFile(path string) (*FileConfig, fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("bgp-config-path: %w", err)
	}
	fc, err := LoadConfigMap(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	return fc, fileStamp{fi.ModTime(), fi.Size()}, nil
}

// Run follows the configuration and the services until ctx ends, then
// leaves the sessions the way a crash would (see Speaker.Close), so that
// the routers keep the routes while the agent restarts.
func (c *Controller) Run(ctx context.Context) {
	var inputs []reconcile.Input
	if c.src.Services != nil {
		inputs = append(inputs, c.src.Services)
	}
	if c.opts.ControlPlane && c.src.Policies != nil {
		inputs = append(inputs, c.src.Policies)
	}
	// The speaker's timers, the file and lbsync's frontends are polled
	// every Interval besides the tables' changes.
	tick := make(chan struct{}, 1)
	loop := reconcile.New(reconcile.Config{
		Name: "bgp", Inputs: inputs, Triggers: []<-chan struct{}{tick},
		Reconcile: func(ctx context.Context) error {
			c.reloadFile()
			return c.converge(ctx)
		},
		MinBackoff: min(100*time.Millisecond, c.opts.Interval), MaxBackoff: c.opts.Interval, Log: c.log,
	})
	go func() {
		t := time.NewTicker(c.opts.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tick <- struct{}{}:
				default:
				}
			}
		}
	}()
	loop.Run(ctx)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c.speaker.Close(closeCtx, true)
	cancel()
}

// decodeInputs decodes the tables' services and policies again when they
// changed. An object that does not decode keeps its previous version
// (services) or is reported (policies). Called with mu held.
func (c *Controller) decodeInputs() {
	if t := c.src.Services; t != nil && t.Revision() != c.svcRev {
		c.svcRev = t.Revision()
		services := map[string]*lb.Service{}
		for key, obj := range t.All() {
			svc, err := lb.ServiceOf(obj)
			if err != nil {
				c.log.Warn("BGP: skipping malformed object in the store", "key", key, "err", err)
				if old, ok := c.services[key]; ok {
					services[key] = old
				}
				continue
			}
			services[key] = svc
		}
		c.services = services
	}
	if t := c.src.Policies; t != nil && c.opts.ControlPlane && t.Revision() != c.policyRev {
		c.policyRev = t.Revision()
		clear(c.policies)
		clear(c.policyErrs)
		for key, obj := range t.All() {
			p, err := PolicyOf(obj)
			if err != nil {
				c.policyErrs[key] = err
				c.log.Warn("BGP: skipping malformed object in the store", "key", key, "err", err)
				continue
			}
			c.policies[key] = p
		}
	}
}

// reloadFile reads the configuration file again when it changed; a bad
// new version keeps the previous one in force and is reported.
func (c *Controller) reloadFile() {
	if c.opts.ConfigFile == "" {
		return
	}
	fi, err := os.Stat(c.opts.ConfigFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.fileErr = fmt.Errorf("bgp-config-path: %w (keeping the last good configuration)", err)
		return
	}
	if (fileStamp{fi.ModTime(), fi.Size()}) == c.fileStamp {
		return
	}
	fc, st, err := loadFile(c.opts.ConfigFile)
	if err != nil {
		if c.fileErr == nil || c.fileErr.Error() != err.Error() {
			c.log.Error("BGP configuration rejected, keeping the last good one", "file", c.opts.ConfigFile, "err", err)
		}
		c.fileErr = err
		return
	}
	c.log.Info("BGP configuration reloaded", "file", c.opts.ConfigFile)
	c.file, c.fileStamp, c.fileErr = fc, st, nil
}

// routers resolves the configuration for this node.
func (c *Controller) routers() ([]VirtualRouter, error) {
	if c.file != nil {
		return c.file.Routers(c.src.NodeLabels, c.opts.Announce, "ConfigMap "+c.opts.ConfigFile), nil
	}
	if !c.opts.ControlPlane {
		return nil, nil
	}
	keys := make([]string, 0, len(c.policies))
	for k := range c.policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ps := make([]*PeeringPolicy, len(keys))
	for i, k := range keys {
		ps[i] = c.policies[k]
	}
	name, vrs, err := ResolvePolicies(ps, c.src.NodeLabels)
	c.policyName = name
	return vrs, err
}

// ready reports whether the inputs are complete enough to announce.
func (c *Controller) ready() bool {
	if c.src.Services != nil && !c.src.Services.IsSynced() || c.opts.ControlPlane && c.src.Policies != nil && !c.src.Policies.IsSynced() {
		return false
	}
	if c.src.Ready != nil && !c.src.Ready() && time.Since(c.started) < c.opts.ReadyTimeout {
		return false
	}
	return true
}

// converge applies the desired state to the speaker; the error is the
// speaker's (retried with back-off).
func (c *Controller) converge(ctx context.Context) error {
	c.mu.Lock()
	if !c.ready() {
		c.mu.Unlock()
		return nil
	}
	c.decodeInputs()
	vrs, err := c.routers()
	c.configErr = err
	specs, notes := c.desired(vrs)
	c.notes = notes
	c.mu.Unlock()

	// The speaker has its own lock: status calls never wait for the store.
	err = c.speaker.Apply(ctx, specs)
	c.speaker.Tick(ctx)
	c.mu.Lock()
	if err != nil && (c.applyErr == nil || c.applyErr.Error() != err.Error()) {
		c.log.Warn("BGP: could not apply everything", "err", err)
	}
	c.applyErr = err
	c.routerCount = len(specs)
	c.mu.Unlock()
	return err
}

// serviceLabels are a service's labels plus the names Cilium lets
// selectors match on.
func serviceLabels(s *lb.Service) map[string]string {
	out := map[string]string{"io.kubernetes.service.namespace": s.Namespace, "io.kubernetes.service.name": s.Name}
	for k, v := range s.Labels {
		out[k] = v
	}
	return out
}

// desired computes the routers' specs: the pod CIDRs (exportPodCIDR) and
// the load balancer addresses of selected services that this node serves
// (with externalTrafficPolicy Local: that it has a ready local backend
// for, as Cilium does), next hops being the node's addresses.
func (c *Controller) desired(vrs []VirtualRouter) ([]RouterSpec, []string) {
	var v4, v6 netip.Addr
	if c.src.NodeIPs != nil {
		v4, v6 = c.src.NodeIPs()
	}
	nextHop := func(a netip.Addr) netip.Addr {
		if a.Is4() {
			return v4
		}
		return v6
	}
	// What the datapath serves: LoadBalancer frontends by service and address.
	type feKey struct {
		service string
		addr    netip.Addr
	}
	served := map[feKey]bool{}    // any external frontend
	withLocal := map[feKey]bool{} // with an active backend
	if c.src.Frontends != nil {
		for _, f := range c.src.Frontends() {
			if f.Type != string(lb.FrontendLoadBalancer) || f.Scope != lb.ScopeExternal.String() {
				continue
			}
			ap, err := netip.ParseAddrPort(f.Frontend)
			if err != nil {
				continue
			}
			k := feKey{f.Service, ap.Addr().Unmap()}
			served[k] = true
			for _, b := range f.Backends {
				if b.State == lb.StateActive.String() {
					withLocal[k] = true
				}
			}
		}
	}
	var notes []string
	note := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		if !slices.Contains(notes, s) {
			notes = append(notes, s)
		}
	}
	svcKeys := make([]string, 0, len(c.services))
	for k := range c.services {
		svcKeys = append(svcKeys, k)
	}
	sort.Strings(svcKeys)

	var specs []RouterSpec
	for _, vr := range vrs {
		sp := RouterSpec{ASN: vr.LocalASN, RouterID: vr.RouterID, Neighbors: vr.Neighbors, Source: vr.Source}
		if !sp.RouterID.IsValid() {
			sp.RouterID = v4
		}
		add := func(p netip.Prefix, origin string) {
			nh := nextHop(p.Addr())
			if !nh.IsValid() {
				note("%s not announced: the node has no address of its family for the next hop", p)
				return
			}
			sp.Routes = append(sp.Routes, Route{Prefix: p.Masked(), NextHop: nh, Origin: origin})
		}
		if vr.ExportPodCIDR {
			for _, p := range c.src.PodCIDRs {
				add(p, "pod-cidr")
			}
		}
		if vr.ServiceSelector != nil {
			for _, key := range svcKeys {
				svc := c.services[key]
				if svc.Spec.Type != lb.TypeLoadBalancer || !vr.ServiceSelector.Matches(serviceLabels(svc)) {
					continue
				}
				for _, a := range svc.LoadBalancerAddrs() {
					a = a.Unmap()
					if vr.Pools != nil && !poolContains(vr.Pools, a) {
						note("%s of service %s not announced: outside the bgp address pools", a, svc.Key())
						continue
					}
					k := feKey{svc.Key(), a}
					switch {
					case !served[k]:
						continue // not (yet) programmed on this node
					case svc.Spec.ExternalTrafficPolicy == lb.PolicyLocal && !withLocal[k]:
						continue // no local backend: traffic would be dropped here
					}
					add(netip.PrefixFrom(a, a.BitLen()), "service "+svc.Key())
				}
			}
		}
		specs = append(specs, sp)
	}
	return specs, notes
}

// Peers describes every session.
func (c *Controller) Peers(ctx context.Context) []api.BGPPeer { return c.speaker.Peers(ctx) }

// Routes lists what the node announces.
func (c *Controller) Routes(ctx context.Context) []api.BGPRoute { return c.speaker.Routes(ctx) }

// Health reports the control plane for GET /v1/status. Peers that are down
// do not make it degraded (the routers are not part of the node), but the
// message says so; bad configuration does.
func (c *Controller) Health() api.SubsystemStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, established, peers, routes := c.speaker.Summary(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := api.SubsystemStatus{Name: "bgp", State: api.StateOK}
	var problems []string
	if c.fileErr != nil {
		problems = append(problems, c.fileErr.Error())
	}
	if c.configErr != nil {
		problems = append(problems, c.configErr.Error())
	}
	for _, k := range sortedKeys(c.policyErrs) {
		problems = append(problems, c.policyErrs[k].Error())
	}
	if c.applyErr != nil {
		problems = append(problems, c.applyErr.Error())
	}
	switch {
	case !c.ready():
		st.Message = "waiting for services and policies"
	case c.routerCount == 0 && c.opts.ControlPlane:
		st.Message = "no CiliumBGPPeeringPolicy selects this node"
	default:
		st.Message = fmt.Sprintf("%d/%d peers established, %d routes announced", established, peers, routes)
		if c.policyName != "" {
			st.Message += " (CiliumBGPPeeringPolicy " + c.policyName + ")"
		}
	}
	if len(c.notes) > 0 {
		st.Message += "; " + strings.Join(c.notes, "; ")
	}
	if len(problems) > 0 {
		st.State = api.StateDegraded
		st.Message = strings.Join(problems, "; ") + "; " + st.Message
	}
	return st
}
