// Package cni is lumen-cni, the CNI plugin that plugs pods into a Lumen node.
//
// The runtime runs it in the node's network namespace. ADD asks the agent for
// the pod's addresses, creates a veth pair whose peer becomes the pod's
// interface, configures the pod (host addresses, a gateway reached on-link
// through a permanent neighbour entry, default routes) and registers the
// endpoint with the agent, which attaches the datapath. DEL undoes all of it
// and is idempotent; CHECK verifies it. IPAM and the datapath live in the
// agent; the plugin talks to it only through internal/api.
package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/api"
)

// Versions are the CNI spec versions lumen-cni speaks.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// opTimeout bounds one plugin invocation so a hung agent cannot hang the runtime.
const opTimeout = 2 * time.Minute

// Main runs the plugin: it reads the CNI environment and stdin, runs the
// command and prints the result or a CNI error on stdout.
func Main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return run("ADD", a, cmdAdd) },
		Del:    func(a *skel.CmdArgs) error { return run("DEL", a, cmdDel) },
		Check:  func(a *skel.CmdArgs) error { return run("CHECK", a, cmdCheck) },
		Status: func(a *skel.CmdArgs) error { return run("STATUS", a, cmdStatus) },
		GC:     func(a *skel.CmdArgs) error { return run("GC", a, cmdGC) },
	}, Versions, "lumen-cni: the Lumen CNI plugin")
}

type command func(ctx context.Context, c *Config, a *skel.CmdArgs, log *slog.Logger) error

func run(name string, args *skel.CmdArgs, fn command) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog, err := openLog(conf)
	if err != nil {
		return err
	}
	defer closeLog()
	log = log.With("cmd", name, "containerID", args.ContainerID, "netns", args.Netns, "ifName", args.IfName)
	log.Info("start", "agentSocket", conf.AgentSocket, "args", args.Args)

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	start := time.Now()
	err = asCNIError(fn(ctx, conf, args, log))
	if err != nil {
		log.Error("failed", "err", err, "duration", time.Since(start))
	} else {
		log.Info("done", "duration", time.Since(start))
	}
	return err
}

// openLog opens the configured log file for appending; without one, logs are
// dropped. Never stdout: that is where the result goes.
func openLog(c *Config) (*slog.Logger, func(), error) {
	if c.LogFile == "" {
		return slog.New(slog.DiscardHandler), func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err != nil {
		return nil, nil, newError(types.ErrInvalidNetworkConfig, "invalid network config: field \"logFile\": %q: %v", c.LogFile, err)
	}
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, newError(types.ErrInvalidNetworkConfig, "invalid network config: field \"logFile\": %q: %v", c.LogFile, err)
	}
	h := slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), func() { _ = f.Close() }, nil
}

func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, newError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, newError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS=%q: %v", path, err)
	}
	return n, nil
}

func cmdAdd(ctx context.Context, conf *Config, args *skel.CmdArgs, log *slog.Logger) error {
	pa, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	// skel makes this check only after ADD has run; the node's own namespace
	// must be refused before anything is created in it.
	if same, terr := cnins.CheckNetNS(args.Netns); terr != nil {
		return terr
	} else if same {
		return newError(types.ErrInvalidNetNS, "CNI_NETNS=%q is the plugin's own (node) network namespace, not a pod's", args.Netns)
	}
	client := api.NewClient(conf.AgentSocket)
	id := args.ContainerID
	hostName := HostIfName(id)

	// A second ADD must not touch the attachment the first one made.
	ep, err := client.Endpoint(ctx, id)
	switch {
	case err == nil:
		return newError(ErrDuplicateAdd, "duplicate ADD for container %s: the agent already has endpoint %d (host interface %s, IPv4 %q, IPv6 %q); DEL it first",
			id, ep.ID, ep.HostIfName, ep.IPv4, ep.IPv6)
	case !errors.Is(err, api.ErrNotFound):
		return agentError(fmt.Sprintf("looking up endpoint of container %s", id), err)
	}
	if _, err := netlink.LinkByName(hostName); err == nil {
		return newError(ErrInterface, "host interface %s for container %s already exists (left over from an earlier ADD?); DEL the container first", hostName, id)
	}
	if err := podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(args.IfName); err == nil {
			return newError(ErrInterface, "interface %s already exists in netns %s", args.IfName, args.Netns)
		}
		return nil
	}); err != nil {
		return err
	}

	ipam, err := client.AllocateIPs(ctx, id)
	if err != nil {
		return agentError(fmt.Sprintf("allocating addresses for container %s", id), err)
	}
	log.Info("allocated addresses", "ipv4", ipam.IPv4, "ipv6", ipam.IPv6, "mtu", ipam.MTU)

	var p *plugged
	endpointTried := false
	// From here on a failure gives back everything this ADD took.
	fail := func(cause error) error {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var rerrs []error
		if p != nil {
			if err := deleteLink(p.HostName); err != nil {
				rerrs = append(rerrs, err)
			}
		}
		if endpointTried {
			if err := client.DeleteEndpoint(rctx, id); err != nil && !errors.Is(err, api.ErrNotFound) {
				rerrs = append(rerrs, fmt.Errorf("deleting endpoint: %w", err))
			}
		}
		if err := client.ReleaseIPs(rctx, id); err != nil && !errors.Is(err, api.ErrNotFound) {
			rerrs = append(rerrs, fmt.Errorf("releasing addresses: %w", err))
		}
		log.Warn("rolled back ADD", "cause", cause, "rollbackErrors", errors.Join(rerrs...))
		te := asCNIError(cause).(*types.Error)
		if len(rerrs) > 0 {
			te = types.NewError(te.Code, fmt.Sprintf("%s (rollback incomplete: %v)", te.Msg, errors.Join(rerrs...)), te.Details)
		}
		return te
	}

	addrs, err := podAddrs(ipam)
	if err != nil {
		return fail(err)
	}
	mtu := conf.MTU
	if mtu == 0 {
		mtu = ipam.MTU
		// The kernel silently turns IPv6 off below 1280; say so instead.
		if mtu != 0 && mtu < MinMTU && slices.ContainsFunc(addrs, func(a podAddr) bool { return !a.is4() }) {
			return fail(newError(ErrAgent, "agent handed out MTU %d with an IPv6 address; IPv6 needs an MTU of at least %d", mtu, MinMTU))
		}
	}
	p, err = plug(plugSpec{ContainerID: id, IfName: args.IfName, MTU: mtu, Addrs: addrs}, podNS)
	if err != nil {
		return fail(newError(ErrInterface, "plugging container %s: %v", id, err))
	}
	log.Info("plugged", "hostIfName", p.HostName, "hostMAC", p.HostMAC.String(), "podMAC", p.PodMAC.String(), "mtu", mtu)

	req := &api.EndpointRequest{
		ContainerID: id,
		NetNS:       args.Netns,
		IfName:      args.IfName,
		HostIfName:  p.HostName,
		PodName:     string(pa.K8S_POD_NAME),
		Namespace:   string(pa.K8S_POD_NAMESPACE),
		MAC:         p.PodMAC.String(),
	}
	for _, a := range addrs {
		if a.is4() {
			req.IPv4 = a.IP.String()
		} else {
			req.IPv6 = a.IP.String()
		}
	}
	endpointTried = true
	ep, err = client.CreateEndpoint(ctx, req)
	if err != nil {
		return fail(agentError(fmt.Sprintf("registering endpoint of container %s", id), err))
	}
	log.Info("endpoint registered", "endpointID", ep.ID, "identity", ep.Identity)

	return types.PrintResult(buildResult(args, p, addrs), conf.CNIVersion)
}

// podAddrs checks the agent's IPAM answer and turns it into pod addresses.
func podAddrs(r *api.IPAMResponse) ([]podAddr, error) {
	var out []podAddr
	for _, f := range []struct {
		name string
		cfg  *api.IPConfig
		v4   bool
	}{{"ipv4", r.IPv4, true}, {"ipv6", r.IPv6, false}} {
		if f.cfg == nil {
			continue
		}
		ip, err := parseAddr(f.cfg.Address)
		if err != nil || ip.Is4() != f.v4 {
			return nil, newError(ErrAgent, "agent returned an unusable %s.address %q", f.name, f.cfg.Address)
		}
		gw, err := netip.ParseAddr(f.cfg.Gateway)
		if err != nil || gw.Is4() != f.v4 || gw == ip {
			return nil, newError(ErrAgent, "agent returned an unusable %s.gateway %q for address %q", f.name, f.cfg.Gateway, f.cfg.Address)
		}
		out = append(out, podAddr{IP: net.IP(ip.AsSlice()), GW: net.IP(gw.AsSlice())})
	}
	if len(out) == 0 {
		return nil, newError(ErrAgent, "agent allocated no address (neither ipv4 nor ipv6)")
	}
	return out, nil
}

// parseAddr accepts CIDR notation (the API's) or a bare address; the prefix
// length is ignored because pods always get host prefixes.
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err
}

func buildResult(args *skel.CmdArgs, p *plugged, addrs []podAddr) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: p.HostName, Mac: p.HostMAC.String()},
			{Name: args.IfName, Mac: p.PodMAC.String(), Sandbox: args.Netns},
		},
	}
	scopeLink := int(netlink.SCOPE_LINK)
	for _, a := range addrs {
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   *a.hostNet(),
			Gateway:   a.GW,
		})
		res.Routes = append(res.Routes,
			&types.Route{Dst: *hostPrefix(a.GW), Scope: &scopeLink},
			&types.Route{Dst: *defaultNet(a.is4()), GW: a.GW},
		)
	}
	return res
}

func cmdDel(ctx context.Context, conf *Config, args *skel.CmdArgs, log *slog.Logger) error {
	client := api.NewClient(conf.AgentSocket)
	id := args.ContainerID
	// The agent first, so that its datapath lets go of the interface before it disappears.
	if err := client.DeleteEndpoint(ctx, id); err != nil {
		if !errors.Is(err, api.ErrNotFound) {
			return agentError(fmt.Sprintf("deleting endpoint of container %s", id), err)
		}
		log.Info("agent had no endpoint")
	}
	if err := client.ReleaseIPs(ctx, id); err != nil {
		if !errors.Is(err, api.ErrNotFound) {
			return agentError(fmt.Sprintf("releasing addresses of container %s", id), err)
		}
		log.Info("agent had no addresses")
	}
	if args.Netns != "" {
		removed, err := unplugPod(args.Netns, args.IfName)
		if err != nil {
			return newError(ErrInterface, "removing pod interface of container %s: %v", id, err)
		}
		log.Info("pod side", "removed", removed)
	}
	if err := deleteLink(HostIfName(id)); err != nil {
		return newError(ErrInterface, "removing host interface of container %s: %v", id, err)
	}
	return nil
}

func cmdCheck(ctx context.Context, conf *Config, args *skel.CmdArgs, _ *slog.Logger) error {
	client := api.NewClient(conf.AgentSocket)
	id := args.ContainerID
	ep, err := client.Endpoint(ctx, id)
	if err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return newError(ErrCheck, "CHECK container %s: the agent has no endpoint for it", id)
		}
		return agentError(fmt.Sprintf("looking up endpoint of container %s", id), err)
	}
	if ep.NetNS != "" && ep.NetNS != args.Netns {
		return newError(ErrCheck, "CHECK container %s: the agent's endpoint is in netns %s, not %s", id, ep.NetNS, args.Netns)
	}

	// Expected state: the agent's addresses, and whatever the ADD result said.
	want := map[netip.Addr]bool{}
	for _, s := range []string{ep.IPv4, ep.IPv6} {
		if a, err := netip.ParseAddr(s); err == nil {
			want[a.Unmap()] = true
		}
	}
	var gateways []net.IP
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return newError(types.ErrInvalidNetworkConfig, "CHECK container %s: converting prevResult: %v", id, err)
		}
		for _, ipc := range prev.IPs {
			if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
				want[a.Unmap()] = true
			}
			if ipc.Gateway != nil {
				gateways = append(gateways, ipc.Gateway)
			}
		}
	}
	if len(want) == 0 {
		return newError(ErrCheck, "CHECK container %s: the agent's endpoint has no addresses", id)
	}

	hostName := ep.HostIfName
	if hostName == "" {
		hostName = HostIfName(id)
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return newError(ErrCheck, "CHECK container %s: host interface %s is missing: %v", id, hostName, err)
	}

	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	st, err := inspectPod(podNS, args.IfName)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return newError(te.Code, "CHECK container %s: %s", id, te.Msg)
		}
		return newError(ErrCheck, "CHECK container %s: %v", id, err)
	}
	have := map[netip.Addr]bool{}
	for _, ip := range st.Addrs {
		if a, ok := netip.AddrFromSlice(ip); ok {
			have[a.Unmap()] = true
		}
	}
	for a := range want {
		if !have[a] {
			return newError(ErrCheck, "CHECK container %s: address %s is missing on %s in netns %s", id, a, args.IfName, args.Netns)
		}
	}
	for _, gw := range gateways {
		if !hasDefaultRoute(st, gw) {
			return newError(ErrCheck, "CHECK container %s: default route via %s is missing on %s in netns %s", id, gw, args.IfName, args.Netns)
		}
		if !hasPermanentNeigh(st, gw, host.Attrs().HardwareAddr) {
			return newError(ErrCheck, "CHECK container %s: permanent neighbour %s lladdr %s is missing on %s in netns %s",
				id, gw, host.Attrs().HardwareAddr, args.IfName, args.Netns)
		}
	}
	return nil
}

func hasDefaultRoute(st *podState, gw net.IP) bool {
	for _, r := range st.Routes {
		isDefault := r.Dst == nil || (r.Dst.IP.IsUnspecified() && func() bool { ones, _ := r.Dst.Mask.Size(); return ones == 0 }())
		if isDefault && r.Gw.Equal(gw) {
			return true
		}
	}
	return false
}

func hasPermanentNeigh(st *podState, ip net.IP, mac net.HardwareAddr) bool {
	for _, n := range st.Neighs {
		if n.IP.Equal(ip) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac.String() {
			return true
		}
	}
	return false
}

// cmdStatus reports whether ADDs can work, i.e. whether the agent answers.
func cmdStatus(ctx context.Context, conf *Config, _ *skel.CmdArgs, _ *slog.Logger) error {
	if _, err := api.NewClient(conf.AgentSocket).Status(ctx); err != nil {
		return newError(types.ErrPluginNotAvailable, "lumen agent at %s is not available: %v", conf.AgentSocket, err)
	}
	return nil
}

// cmdGC removes the attachments lumen-cni made that the runtime no longer
// knows about. Only endpoints whose host interface carries lumen-cni's name
// for their container are touched: anything else the agent has is not ours.
func cmdGC(ctx context.Context, conf *Config, _ *skel.CmdArgs, log *slog.Logger) error {
	client := api.NewClient(conf.AgentSocket)
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a.ContainerID] = true
	}
	eps, err := client.Endpoints(ctx)
	if err != nil {
		return agentError("listing endpoints", err)
	}
	var errs []error
	for _, ep := range eps {
		if valid[ep.ContainerID] || ep.HostIfName != HostIfName(ep.ContainerID) {
			continue
		}
		log.Info("collecting stale endpoint", "staleContainerID", ep.ContainerID, "hostIfName", ep.HostIfName)
		if err := client.DeleteEndpoint(ctx, ep.ContainerID); err != nil && !errors.Is(err, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("deleting endpoint of %s: %w", ep.ContainerID, err))
			continue
		}
		if err := client.ReleaseIPs(ctx, ep.ContainerID); err != nil && !errors.Is(err, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("releasing addresses of %s: %w", ep.ContainerID, err))
		}
		if err := deleteLink(ep.HostIfName); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return newError(ErrAgent, "GC: %v", errors.Join(errs...))
	}
	return nil
}
