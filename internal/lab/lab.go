package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"
	"k8s.io/client-go/kubernetes"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

// Binary names the lab runs.
const (
	AgentBinary = "lumen-agent"
	CNIBinary   = "lumen-cni"
)

// PodInterface is the pod's interface name.
const PodInterface = "eth0"

// UpOptions configures `lumen lab up`.
type UpOptions struct {
	Lab      string
	Topology *Topology
	Routing  string // overrides the topology's routing when set
	BinDir   string // where lumen-agent and lumen-cni live; default: next to Lumen
	Lumen    string // the lumen binary (runs the store and echo servers); default: os.Executable
	Keep     bool   // keep a half-built lab on failure, for debugging
	Log      *slog.Logger
	// AgentTimeout bounds the wait for an agent to become healthy.
	AgentTimeout time.Duration
	// ReadyTimeout bounds the wait for pods to reach each other; negative
	// skips that check.
	ReadyTimeout time.Duration
	// K8s runs the lab against a real Kubernetes control plane (see k8s.go).
	K8s *K8sOptions
}

// Up builds a lab from its topology and returns once every agent is healthy
// and every pod is plugged in and serving. Its processes keep running.
func Up(ctx context.Context, o UpOptions) (st *State, err error) {
	if err := labpath.ValidateName(o.Lab); err != nil {
		return nil, err
	}
	if o.Topology == nil {
		return nil, errors.New("no topology")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.AgentTimeout == 0 {
		o.AgentTimeout = 90 * time.Second
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 90 * time.Second
	}
	routing := o.Topology.RoutingMode()
	if o.Routing != "" {
		if o.Routing != RoutingNative && o.Routing != RoutingVXLAN {
			return nil, fmt.Errorf("invalid --routing %q: want native or vxlan", o.Routing)
		}
		routing = o.Routing
	}
	if o.Lumen == "" {
		if o.Lumen, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding the lumen binary: %w", err)
		}
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Dir(o.Lumen)
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, err
	}
	for _, b := range []string{AgentBinary, CNIBinary} {
		if err := checkExecutable(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found next to lumen: %w (build it, or pass --bin-dir)", b, err)
		}
	}

	unlock, err := lock(o.Lab)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := down(o.Lab, o.Log); err != nil {
		return nil, fmt.Errorf("removing leftovers of lab %q: %w", o.Lab, err)
	}
	for _, d := range []string{labpath.Dir(o.Lab), labpath.LogDir(o.Lab)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	st = &State{
		Name:      o.Lab,
		Routing:   routing,
		BinDir:    o.BinDir,
		Lumen:     o.Lumen,
		StoreURL:  labpath.StoreURL(o.Lab),
		Created:   time.Now().UTC(),
		AgentArgs: append([]string(nil), o.Topology.AgentArgs...),
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && !o.Keep {
			o.Log.Info("lab up failed, tearing down", "lab", o.Lab)
			if derr := down(o.Lab, o.Log); derr != nil {
				err = errors.Join(err, fmt.Errorf("tearing down: %w", derr))
			}
			st = nil
		}
	}()
	if err := buildNetwork(st, o.Topology, o.Log); err != nil {
		return st, err
	}
	if err := startStore(ctx, st, o.Log); err != nil {
		return st, err
	}
	if o.K8s != nil {
		if err := startKubernetes(ctx, st, o.Topology, *o.K8s, o.Log); err != nil {
			return st, err
		}
	} else if err := writeResources(ctx, st, o.Topology); err != nil {
		return st, err
	}
	if err := startRouters(ctx, st, o.Topology, o.Log); err != nil {
		return st, err
	}
	if err := startAgents(ctx, st, o.Topology, o.AgentTimeout, o.Log); err != nil {
		return st, err
	}
	if err := startRelay(ctx, st, o.Log); err != nil {
		return st, err
	}
	if err := addPods(ctx, st, o.Topology, o.Log); err != nil {
		return st, err
	}
	if o.ReadyTimeout > 0 {
		o.Log.Info("waiting for pods to reach each other")
		if err := waitConnected(ctx, st, o.ReadyTimeout); err != nil {
			return st, err
		}
	}
	return st, nil
}

// readinessSpecs picks, for every pod, one probe per family to one other pod
// on each node: enough to see that local delivery, routes to the other nodes
// and their endpoints are in place.
func readinessSpecs(st *State) []ProbeSpec {
	sctpOK := SCTPSupported()
	probePort := func(p *PodState) (Port, bool) {
		for _, proto := range []string{ProtoTCP, ProtoUDP, ProtoSCTP} {
			for _, port := range p.Ports {
				if port.Protocol == proto && (proto != ProtoSCTP || sctpOK) {
					return port, true
				}
			}
		}
		return Port{}, false
	}
	var specs []ProbeSpec
	for i := range st.Pods {
		from := &st.Pods[i]
		for _, n := range st.Nodes {
			for j := range st.Pods {
				to := &st.Pods[j]
				port, ok := probePort(to)
				if i == j || to.Node != n.Name || !ok {
					continue
				}
				for _, fam := range []int{4, 6} {
					if a, ok := to.Addr(fam); ok {
						specs = append(specs, ProbeSpec{From: from, To: to.FullName(), Target: netip.AddrPortFrom(a, port.Port), Proto: port.Protocol})
					}
				}
				break
			}
		}
	}
	return specs
}

// waitConnected probes until every readiness probe connected once: agents
// learn about other nodes and endpoints through the store, shortly after
// they report healthy.
func waitConnected(ctx context.Context, st *State, timeout time.Duration) error {
	pending := readinessSpecs(st)
	deadline := time.Now().Add(timeout)
	for len(pending) > 0 {
		res := RunProbes(ctx, pending, 2*time.Second, 16)
		var next []ProbeSpec
		var failed []string
		for i, r := range res {
			if !r.Connected {
				next = append(next, pending[i])
				failed = append(failed, FormatResult(r))
			}
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if len(failed) > 5 {
				failed = append(failed[:5], fmt.Sprintf("... and %d more", len(failed)-5))
			}
			return fmt.Errorf("pods cannot reach each other after %s (use --keep to inspect the lab):\n  %s", timeout, strings.Join(failed, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// buildNetwork creates the underlay and the node namespaces.
func buildNetwork(st *State, t *Topology, log *slog.Logger) error {
	log.Info("creating underlay", "netns", labpath.UnderlayNS(st.Name))
	if err := setupUnderlay(labpath.UnderlayNS(st.Name)); err != nil {
		return err
	}
	for i, n := range t.Nodes {
		ns := labpath.NodeNS(st.Name, n.Name)
		log.Info("creating node", "node", n.Name, "netns", ns)
		// Record the node before creating it, so down removes a half-made one.
		if n.Name == t.KubeAPIServer {
			st.AgentArgs = append(st.AgentArgs, "--kube-apiserver-ips", NodeIPv4(i).Addr().String()+","+NodeIPv6(i).Addr().String())
		}
		cg, err := NodeCgroup(st.Name, n.Name)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(cg, 0o755); err != nil {
			return fmt.Errorf("creating cgroup of node %s: %w", n.Name, err)
		}
		st.Nodes = append(st.Nodes, NodeState{
			Cgroup:   cg,
			Name:     n.Name,
			Zone:     n.Zone,
			Labels:   n.Labels,
			NetNS:    ns,
			NodeIPs:  []string{NodeIPv4(i).String(), NodeIPv6(i).String()},
			PodCIDRs: []string{PodCIDRv4(i).String(), PodCIDRv6(i).String()},
			Socket:   labpath.NodeSocket(st.Name, n.Name),
		})
		if err := st.save(); err != nil {
			return err
		}
		if err := setupNode(labpath.UnderlayNS(st.Name), ns, n.Name, i); err != nil {
			return err
		}
		// XDP_TX/XDP_REDIRECT frames need a program on the veth's other end.
		if WantsXDPPeers(st.AgentArgs) {
			if err := attachXDPPass(labpath.UnderlayNS(st.Name), underlayPort(n.Name, i)); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
	}
	return buildClients(st, t, log)
}

// startStore runs `lumen lab kvstore` in the underlay namespace, so that
// nothing it might bind is in the host's namespace, and waits until it answers.
func startStore(ctx context.Context, st *State, log *slog.Logger) error {
	args := []string{st.Lumen, "--lab", st.Name, "lab", "kvstore", "--data-dir", labpath.StoreDir(st.Name), "--listen", st.StoreURL}
	log.Info("starting store", "url", st.StoreURL)
	p, err := StartDetached(labpath.UnderlayNS(st.Name), filepath.Join(labpath.LogDir(st.Name), "kvstore.log"), args)
	if err != nil {
		return fmt.Errorf("starting the store: %w", err)
	}
	st.Store = p
	if err := st.save(); err != nil {
		return err
	}
	return waitFor(ctx, time.Minute, p, "the store", func(ctx context.Context) error {
		c, err := net.DialTimeout("unix", labpath.StoreSocket(st.Name), time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return pingStore(ctx, st.StoreURL)
	})
}

// waitFor polls check until it succeeds, the process dies or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *Proc, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("%s (pid %d) exited: %v\n--- %s ---\n%s", what, p.PID, last, p.Log, p.LogTail(20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s (pid %d) not ready after %s: %v\n--- %s ---\n%s", what, p.PID, timeout, last, p.Log, p.LogTail(20))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// AgentArgs are the flags a lab node's agent runs with (docs/architecture.md).
func AgentArgs(st *State, n *NodeState) []string {
	args := []string{
		filepath.Join(st.BinDir, AgentBinary),
		"--node-name", n.Name,
		"--state-dir", labpath.NodeDir(st.Name, n.Name),
		"--kvstore", st.StoreURL,
		"--ipv4-pod-cidr", n.PodCIDRs[0],
		"--ipv6-pod-cidr", n.PodCIDRs[1],
		"--routing", st.Routing,
		"--devices", NodeDevice,
	}
	if n.Cgroup != "" {
		args = append(args, "--socket-lb-cgroup", n.Cgroup)
	}
	if n.Zone != "" {
		args = append(args, "--zone", n.Zone)
	}
	if len(n.Labels) > 0 {
		kvs := make([]string, 0, len(n.Labels))
		for k, v := range n.Labels {
			kvs = append(kvs, k+"="+v)
		}
		sort.Strings(kvs)
		args = append(args, "--node-labels", strings.Join(kvs, ","))
	}
	if st.K8s != nil {
		args = k8sAgentArgs(st, args)
	}
	return append(args, st.AgentArgs...)
}

// startAgent starts a node's agent from a thread in the node's namespace.
func startAgent(st *State, n *NodeState, args []string) error {
	if err := os.MkdirAll(labpath.NodeDir(st.Name, n.Name), 0o755); err != nil {
		return fmt.Errorf("creating node dir: %w", err)
	}
	p, err := StartDetached(n.NetNS, filepath.Join(labpath.LogDir(st.Name), "agent-"+n.Name+".log"), args)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.Agent = p
	return st.save()
}

// waitAgent waits until the node's agent answers and reports healthy.
func waitAgent(ctx context.Context, n *NodeState, timeout time.Duration) error {
	return waitAgentUntil(ctx, n, timeout, agentHealthy)
}

// waitAgentUntil waits until the agent's status satisfies ready.
func waitAgentUntil(ctx context.Context, n *NodeState, timeout time.Duration, ready func(*api.Status) error) error {
	c := api.NewClient(n.Socket)
	return waitFor(ctx, timeout, n.Agent, "agent of node "+n.Name, func(ctx context.Context) error {
		s, err := c.Status(ctx)
		if err != nil {
			return err
		}
		return ready(s)
	})
}

func agentHealthy(s *api.Status) error {
	if !s.Healthy() {
		return fmt.Errorf("not healthy: %s", unhealthy(s))
	}
	return nil
}

func unhealthy(s *api.Status) string {
	var out []string
	for _, ss := range s.Subsystems {
		if ss.State != api.StateOK && ss.State != api.StateDisabled {
			out = append(out, fmt.Sprintf("%s=%s %s", ss.Name, ss.State, ss.Message))
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func startAgents(ctx context.Context, st *State, t *Topology, timeout time.Duration, log *slog.Logger) error {
	for i := range st.Nodes {
		n := &st.Nodes[i]
		log.Info("starting agent", "node", n.Name)
		if err := startAgent(st, n, AgentArgs(st, n)); err != nil {
			return err
		}
	}
	errs := make([]error, len(st.Nodes))
	var wg sync.WaitGroup
	for i := range st.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waitAgent(ctx, &st.Nodes[i], timeout)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeCNIConfig writes the node's conflist, as a runtime on that node would have it.
func writeCNIConfig(st *State, n *NodeState) (string, error) {
	dir := labpath.NodeCNIConfDir(st.Name, n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating CNI config dir: %w", err)
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "lumen",
		"plugins": []any{map[string]any{
			"type":        CNIBinary,
			"agentSocket": n.Socket,
			"logFile":     filepath.Join(labpath.LogDir(st.Name), "cni-"+n.Name+".log"),
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "10-lumen.conflist")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("writing CNI config: %w", err)
	}
	return path, nil
}

// addPods creates, plugs in and starts every pod.
func addPods(ctx context.Context, st *State, t *Topology, log *slog.Logger) error {
	confs := map[string]*libcni.NetworkConfigList{}
	for i := range st.Nodes {
		path, err := writeCNIConfig(st, &st.Nodes[i])
		if err != nil {
			return err
		}
		list, err := libcni.ConfListFromFile(path)
		if err != nil {
			return fmt.Errorf("loading %s: %w", path, err)
		}
		confs[st.Nodes[i].Name] = list
	}
	sctpOK := SCTPSupported()
	var kube kubernetes.Interface
	if st.K8s != nil {
		var err error
		if kube, err = st.Kube(); err != nil {
			return err
		}
	}
	for _, tp := range t.Pods {
		node, err := st.Node(tp.Node)
		if err != nil {
			return err
		}
		st.Pods = append(st.Pods, PodState{
			Name:        tp.Name,
			Namespace:   tp.Namespace,
			Node:        tp.Node,
			Labels:      tp.Labels,
			Ports:       tp.Ports,
			NetNS:       labpath.PodNS(st.Name, tp.Node, tp.Name),
			ContainerID: ContainerID(st.Name, tp.Namespace, tp.Name),
		})
		pod := &st.Pods[len(st.Pods)-1]
		if err := st.save(); err != nil {
			return err
		}
		log.Info("adding pod", "pod", pod.FullName(), "node", pod.Node, "netns", pod.NetNS)
		if err := CreateNS(pod.NetNS); err != nil {
			return err
		}
		if err := podLoUp(pod.NetNS); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
		if kube != nil {
			if err := createPod(ctx, kube, pod); err != nil {
				return err
			}
		}
		if err := cniAdd(ctx, st, node, pod, confs[node.Name]); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
		if WantsXDPPeers(st.AgentArgs) { // complete checksums for XDP, see xdp.go
			if err := txChecksumOff(pod.NetNS, PodInterface); err != nil {
				return fmt.Errorf("pod %s: %w", pod.FullName(), err)
			}
		}
		if kube != nil {
			if err := markPodReady(ctx, kube, pod); err != nil {
				return fmt.Errorf("pod %s: %w", pod.FullName(), err)
			}
		}
		if err := st.save(); err != nil {
			return err
		}
		cfg := ServeConfigFor(pod.Ports)
		if len(cfg.SCTP) > 0 && !sctpOK {
			log.Warn("SCTP ports will not be served: "+ErrSCTPUnsupported.Error(), "pod", pod.FullName(), "sctp", JoinPorts(cfg.SCTP))
		}
		args := append([]string{st.Lumen, "lab", "serve"}, cfg.Args()...)
		p, err := StartDetachedIn(pod.NetNS, node.Cgroup, filepath.Join(labpath.LogDir(st.Name), "serve-"+pod.Namespace+"-"+pod.Name+".log"), args)
		if err != nil {
			return fmt.Errorf("pod %s: echo server: %w", pod.FullName(), err)
		}
		pod.Server = p
		if err := st.save(); err != nil {
			return err
		}
	}
	// The servers bind quickly; make sure they did before declaring the lab up.
	for i := range st.Pods {
		pod := &st.Pods[i]
		if err := waitServing(ctx, pod); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
	}
	return nil
}

// waitServing waits for the pod's echo server to listen on its TCP ports (or
// its UDP ports when it has no TCP port), checked from inside the pod.
func waitServing(ctx context.Context, pod *PodState) error {
	return waitFor(ctx, 30*time.Second, pod.Server, "echo server", func(ctx context.Context) error {
		for _, p := range pod.Ports {
			if p.Protocol != ProtoTCP {
				continue
			}
			err := InNamedNS(pod.NetNS, func() error {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port), time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func podLoUp(nsName string) error {
	h, err := nlHandle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	return linkUp(h, "lo")
}

// cniAdd plugs a pod in by running the CNI ADD of the node's conflist from a
// thread in the node's namespace, as the node's runtime would.
func cniAdd(ctx context.Context, st *State, node *NodeState, pod *PodState, list *libcni.NetworkConfigList) error {
	cfg := libcni.NewCNIConfigWithCacheDir([]string{st.BinDir}, labpath.NodeCNICacheDir(st.Name, node.Name), nil)
	rt := runtimeConf(pod)
	var res cnitypes.Result
	err := InNamedNS(node.NetNS, func() error {
		var err error
		res, err = cfg.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return fmt.Errorf("CNI ADD: %w", err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("CNI ADD: reading result: %w", err)
	}
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			pod.IPv4 = ip.Address.IP.String()
		} else {
			pod.IPv6 = ip.Address.IP.String()
		}
	}
	if pod.IPv4 == "" || pod.IPv6 == "" {
		return fmt.Errorf("CNI ADD: result has no IPv4 and IPv6 address: %v", r.IPs)
	}
	return nil
}

func runtimeConf(pod *PodState) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: pod.ContainerID,
		NetNS:       labpath.NSPath(pod.NetNS),
		IfName:      PodInterface,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ContainerID},
		},
	}
}

// Down stops a lab's processes, unmounts its bpffs, deletes its namespaces
// (also leftovers of a crashed run) and removes its state. It does nothing
// for a lab that is not there.
func Down(lab string, log *slog.Logger) error {
	if err := labpath.ValidateName(lab); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unlock, err := lock(lab)
	if err != nil {
		return err
	}
	defer unlock()
	if err := down(lab, log); err != nil {
		return err
	}
	// Removed while held: lock() notices and retries on a fresh file.
	if err := os.Remove(labpath.LockFile(lab)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing lab lock: %w", err)
	}
	return nil
}

func down(lab string, log *slog.Logger) error {
	var errs []error
	st, err := LoadState(lab)
	switch {
	case errors.Is(err, ErrNoLab):
	case err != nil:
		errs = append(errs, err)
	default:
		var procs []*Proc
		for i := range st.Pods {
			procs = append(procs, st.Pods[i].Server)
		}
		for i := range st.Nodes {
			procs = append(procs, st.Nodes[i].Agent)
		}
		procs = append(procs, st.Store, st.Relay)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range procs {
			if !p.Alive() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				log.Debug("stopping", "pid", p.PID, "cmd", filepath.Base(p.Args[0]))
				if err := p.Stop(5 * time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := stopKubernetes(st, log); err != nil {
			errs = append(errs, err)
		}
	}
	if err := stopRouters(lab, log); err != nil {
		errs = append(errs, err)
	}
	mounts, err := mountsUnder(labpath.Dir(lab))
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		log.Debug("unmounting", "path", m)
		if err := syscall.Unmount(m, 0); err != nil {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
			}
		}
	}
	names, err := ListNS(labpath.NSPrefix(lab))
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		log.Debug("deleting namespace", "netns", n)
		if err := DeleteNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(lab); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Never remove files through a mount that is still there (bpffs pins).
	if left, err := mountsUnder(labpath.Dir(lab)); err != nil || len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %v %v", labpath.Dir(lab), left, err)
	}
	if err := os.RemoveAll(labpath.Dir(lab)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing lab state: %w", err)
	}
	if st != nil || len(names) > 0 {
		log.Info("lab removed", "lab", lab, "namespaces", len(names), "mounts", len(mounts))
	}
	return nil
}

// RestartAgent stops a node's agent if it still runs and starts it again the
// same way, then waits until it is healthy.
func RestartAgent(ctx context.Context, lab, node string, timeout time.Duration, log *slog.Logger) (*Proc, error) {
	return restartAgent(ctx, lab, node, timeout, log, agentHealthy)
}

// restartAgent restarts a node's agent and waits (90 s by default) until
// its status satisfies ready, holding the lab's lock throughout.
func restartAgent(ctx context.Context, lab, node string, timeout time.Duration, log *slog.Logger, ready func(*api.Status) error) (*Proc, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unlock, err := lock(lab)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := LoadState(lab)
	if err != nil {
		return nil, err
	}
	n, err := st.Node(node)
	if err != nil {
		return nil, err
	}
	args := AgentArgs(st, n)
	if n.Agent != nil {
		args = n.Agent.Args
		if err := n.Agent.Stop(10 * time.Second); err != nil {
			return nil, fmt.Errorf("stopping the agent of node %s: %w", node, err)
		}
	}
	log.Info("starting agent", "node", node)
	if err := startAgent(st, n, args); err != nil {
		return nil, err
	}
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	return n.Agent, waitAgentUntil(ctx, n, timeout, ready)
}

// ExecInNS replaces the current process with argv, running in the named
// namespace: the exec happens on a thread switched into it, and the new
// program keeps that thread's namespace. It returns only on failure.
func ExecInNS(nsName string, argv []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	ns, err := netns.GetFromPath(labpath.NSPath(nsName))
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", nsName, err)
	}
	// This thread never switches back: it either becomes the new program or
	// the process exits with the error.
	_, err = netnsutil.Enter(ns)
	ns.Close()
	if err != nil {
		return fmt.Errorf("entering namespace %s: %w", nsName, err)
	}
	err = syscall.Exec(path, argv, os.Environ())
	return fmt.Errorf("executing %s: %w", argv[0], err)
}

// Report is what `lumen lab status` shows.
type Report struct {
	Name    string       `json:"name"`
	Routing string       `json:"routing"`
	Store   StoreReport  `json:"store"`
	Relay   *RelayReport `json:"relay,omitempty"` // the Hubble relay of all nodes
	Nodes   []NodeReport `json:"nodes"`
	Pods    []PodReport  `json:"pods"`

	Clients []ClientState `json:"clients,omitempty"` // external clients
}

// StoreReport describes the lab's store process.
type StoreReport struct {
	URL     string `json:"url"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
}

// NodeReport describes one node and its agent.
type NodeReport struct {
	Name     string      `json:"name"`
	Zone     string      `json:"zone,omitempty"`
	NetNS    string      `json:"netns"`
	NodeIPs  []string    `json:"nodeIPs"`
	PodCIDRs []string    `json:"podCIDRs"`
	Agent    AgentReport `json:"agent"`
}

// Agent health values in a report besides the api.State* ones.
const (
	HealthNotRunning  = "not-running"
	HealthUnreachable = "unreachable"
)

// AgentReport is an agent's process and health.
type AgentReport struct {
	PID       int    `json:"pid"`
	Running   bool   `json:"running"`
	Health    string `json:"health"` // ok, degraded, unreachable, not-running
	Message   string `json:"message,omitempty"`
	Endpoints int    `json:"endpoints"`
}

// PodReport describes one pod.
type PodReport struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Node        string            `json:"node"`
	Labels      map[string]string `json:"labels,omitempty"`
	IPv4        string            `json:"ipv4"`
	IPv6        string            `json:"ipv6"`
	Ports       []Port            `json:"ports"`
	NetNS       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	ServerPID   int               `json:"serverPID"`
	Serving     bool              `json:"serving"`
}

// Status reports a lab's nodes, agents' health and pods.
func Status(ctx context.Context, lab string) (*Report, error) {
	if err := labpath.ValidateName(lab); err != nil {
		return nil, err
	}
	st, err := LoadState(lab)
	if err != nil {
		return nil, err
	}
	r := &Report{Name: st.Name, Routing: st.Routing, Store: StoreReport{URL: st.StoreURL}, Clients: st.Clients}
	if st.Store != nil {
		r.Store.PID, r.Store.Running = st.Store.PID, st.Store.Alive()
	}
	r.Relay = relayReport(st)
	r.Nodes = make([]NodeReport, len(st.Nodes))
	var wg sync.WaitGroup
	for i := range st.Nodes {
		n := &st.Nodes[i]
		r.Nodes[i] = NodeReport{Name: n.Name, Zone: n.Zone, NetNS: n.NetNS, NodeIPs: n.NodeIPs, PodCIDRs: n.PodCIDRs}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Nodes[i].Agent = agentReport(ctx, n)
		}()
	}
	wg.Wait()
	for _, p := range st.Pods {
		pr := PodReport{
			Name: p.Name, Namespace: p.Namespace, Node: p.Node, Labels: p.Labels,
			IPv4: p.IPv4, IPv6: p.IPv6, Ports: p.Ports, NetNS: p.NetNS, ContainerID: p.ContainerID,
		}
		if pr.Ports == nil {
			pr.Ports = []Port{}
		}
		if p.Server != nil {
			pr.ServerPID, pr.Serving = p.Server.PID, p.Server.Alive()
		}
		r.Pods = append(r.Pods, pr)
	}
	return r, nil
}

func agentReport(ctx context.Context, n *NodeState) AgentReport {
	var a AgentReport
	if n.Agent == nil || !n.Agent.Alive() {
		if n.Agent != nil {
			a.PID = n.Agent.PID
		}
		a.Health = HealthNotRunning
		return a
	}
	a.PID, a.Running = n.Agent.PID, true
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := api.NewClient(n.Socket).Status(ctx)
	if err != nil {
		a.Health, a.Message = HealthUnreachable, err.Error()
		return a
	}
	a.Endpoints = s.Endpoints
	if s.Healthy() {
		a.Health = api.StateOK
	} else {
		a.Health, a.Message = api.StateDegraded, unhealthy(s)
	}
	return a
}
