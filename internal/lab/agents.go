package lab

// The lab's agents: their flags, starting, readiness and restarts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

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
