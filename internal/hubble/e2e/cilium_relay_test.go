package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

// relayBinary is the real hubble-relay, built by hack/build-hubble.sh next
// to the hubble CLI (LUMEN_HUBBLE_RELAY overrides). Missing, the test
// skips, except in CI where it fails.
func relayBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("LUMEN_HUBBLE_RELAY")
	if p == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(cache, "lumen", "hubble", "v1.20.2", "hubble-relay")
	}
	if _, err := os.Stat(p); err != nil {
		testutil.Skip(t, "no hubble-relay at "+p+": run hack/build-hubble.sh")
	}
	return p
}

// syncBuffer collects a background process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hubbleIn runs the hubble CLI inside ns, where the relay listens; a non-zero
// exit fails the test unless allowFail.
func (e *env) hubbleIn(ns netns.NsHandle, allowFail bool, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.hubble, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Started from a thread inside ns, the child lives in ns.
	err := netnsutil.Do(ns, cmd.Run)
	if err != nil && !allowFail {
		e.t.Fatalf("hubble %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), err
}

// TestCiliumRelay runs the genuine hubble-relay against Lumen's agents: it
// finds them through an agent's Peer service (peer.Peer/Notify), which
// announces every node's unix socket, and the real hubble CLI reads the
// merged flows through it. The relay only listens on TCP, so it and the CLI
// run in a namespace of their own, on its loopback.
func TestCiliumRelay(t *testing.T) {
	testutil.RequirePrivileged(t)
	relayBin := relayBinary(t)
	e := setup(t)

	// Traffic: cross-node TCP (n1 -> n2), same-node TCP on n1, cross-node
	// UDP (n2 -> n1).
	e.probe("shop/frontend", "catalog:80/tcp", true)
	e.probe("tools/debug", "frontend:80/tcp", true)
	e.probe("shop/catalog", "frontend:53/udp", true)

	ns, _ := testutil.NewNetNS(t, "hrelay")
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	h.Close()
	if err != nil {
		t.Fatalf("bringing up lo in the relay's namespace: %v", err)
	}

	const relayAddr = "127.0.0.1:4245"
	peerService := "unix://" + filepath.Join(labpath.NodeDir(e.lab, "n1"), "hubble.sock")
	relayArgs := []string{"serve",
		"--peer-service", peerService,
		"--listen-address", relayAddr,
		"--health-listen-address", "127.0.0.1:4222",
		"--disable-client-tls", "--disable-server-tls",
		"--gops=false", "--retry-timeout", "2s",
		// The relay sorts through a bounded buffer that it also drains when
		// idle: big and patient enough, it returns every flow in time order.
		"--sort-buffer-len-max", "10000", "--sort-buffer-drain-timeout", "1m",
	}
	relay := exec.Command(relayBin, relayArgs...)
	var relayLog syncBuffer
	relay.Stdout, relay.Stderr = &relayLog, &relayLog
	if err := netnsutil.Do(ns, relay.Start); err != nil {
		t.Fatalf("starting hubble-relay: %v", err)
	}
	t.Cleanup(func() {
		_ = relay.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = relay.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = relay.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("hubble-relay %s:\n%s", strings.Join(relayArgs, " "), relayLog.String())
		}
	})
	server := "--server=" + relayAddr

	t.Run("status", func(t *testing.T) {
		// The relay connects to the peers in the background.
		var out string
		deadline := time.Now().Add(90 * time.Second)
		for {
			out, err = e.hubbleIn(ns, true, "status", server)
			if err == nil && strings.Contains(out, "Connected Nodes: 2/2") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("hubble status through hubble-relay never showed 2/2 nodes: %v\n%s", err, out)
			}
			time.Sleep(time.Second)
		}
		if !strings.Contains(out, "Healthcheck") || !strings.Contains(out, "Ok") || !strings.Contains(out, "/8,190") {
			t.Errorf("hubble status (hubble-relay):\n%s", out)
		}
	})

	t.Run("list nodes", func(t *testing.T) {
		out, _ := e.hubbleIn(ns, false, "list", "nodes", server)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[1], "n1 ") || !strings.HasPrefix(lines[2], "n2 ") ||
			!strings.Contains(lines[1], "Connected") || !strings.Contains(lines[2], "Connected") {
			t.Errorf("hubble list nodes (hubble-relay):\n%s", out)
		}
	})

	t.Run("observe", func(t *testing.T) {
		out, _ := e.hubbleIn(ns, false, "observe", server, "--last", "2000", "-o", "json")
		fs := flows(t, out)
		nodes := map[string]int{}
		for i, f := range fs {
			nodes[f.GetNodeName()]++
			if i > 0 && f.GetTime().AsTime().Before(fs[i-1].GetTime().AsTime()) {
				t.Errorf("flow %d (%s) is older than the one before it", i, describe(f))
			}
		}
		if nodes["n1"] == 0 || nodes["n2"] == 0 {
			t.Errorf("flows per node through hubble-relay: %v", nodes)
		}
		synTo := func(from, to string, port uint32, node string, point flowpb.TraceObservationPoint) func(*flowpb.Flow) bool {
			return func(f *flowpb.Flow) bool {
				return f.GetNodeName() == node && name(f.GetSource()) == from && name(f.GetDestination()) == to && dport(f) == port &&
					f.GetL4().GetTCP().GetFlags().GetSYN() && !f.GetL4().GetTCP().GetFlags().GetACK() &&
					f.GetTraceObservationPoint() == point
			}
		}
		// The cross-node connection is seen leaving n1 and arriving on n2.
		find(t, "frontend -> catalog:80 SYN to-network on n1", fs,
			synTo("shop/frontend", "shop/catalog", 80, "n1", flowpb.TraceObservationPoint_TO_NETWORK))
		find(t, "frontend -> catalog:80 SYN to-endpoint on n2", fs,
			synTo("shop/frontend", "shop/catalog", 80, "n2", flowpb.TraceObservationPoint_TO_ENDPOINT))
		find(t, "debug -> frontend:80 SYN to-endpoint on n1", fs,
			synTo("tools/debug", "shop/frontend", 80, "n1", flowpb.TraceObservationPoint_TO_ENDPOINT))
		find(t, "catalog -> frontend:53/udp on n1", fs, func(f *flowpb.Flow) bool {
			return f.GetNodeName() == "n1" && name(f.GetSource()) == "shop/catalog" && name(f.GetDestination()) == "shop/frontend" &&
				f.GetL4().GetUDP() != nil && dport(f) == 53
		})

		// Filters go through to the agents.
		out, _ = e.hubbleIn(ns, false, "observe", server, "--node-name", "n2", "--all", "-o", "json")
		n2 := flows(t, out)
		if len(n2) == 0 {
			t.Error("--node-name n2: no flows")
		}
		for _, f := range n2 {
			if f.GetNodeName() != "n2" {
				t.Errorf("--node-name n2 returned %s", describe(f))
			}
		}
		// hubble-relay asks every peer for its last N and merges them
		// without trimming (unlike lumen-relay): N per node.
		out, _ = e.hubbleIn(ns, false, "observe", server, "--last", "5", "-o", "json")
		perNode := map[string]int{}
		for _, f := range flows(t, out) {
			perNode[f.GetNodeName()]++
		}
		if len(perNode) != 2 || perNode["n1"] != 5 || perNode["n2"] != 5 {
			t.Errorf("--last 5 through hubble-relay: flows per node %v, want 5 each", perNode)
		}
		// The compact output names both nodes' pods.
		out, _ = e.hubbleIn(ns, false, "observe", server, "--protocol", "udp", "--to-pod", "shop/frontend", "--last", "100")
		if !strings.Contains(out, "shop/catalog") || !strings.Contains(out, fmt.Sprintf("shop/frontend:%d", 53)) {
			t.Errorf("hubble observe (compact) through hubble-relay:\n%s", out)
		}
	})
}
