// Package lab builds and runs the local lab: a set of network namespaces that
// play the role of nodes and pods, with one lumen-agent per node, an embedded
// store, pods plugged in through lumen-cni and echo servers to probe. It never
// touches the host network namespace. Its paths are in labpath, its
// commands (`lumen lab ...`) in labcmd.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

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
