package labtest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/resource"
)

// updateTopology: a client and a local server on n1, a server and another
// pod on n2.
const updateTopology = `
nodes: [{name: n1, zone: zone-a}, {name: n2, zone: zone-b}]
pods:
  - {name: client, namespace: u, labels: {app: client}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: local, namespace: u, labels: {app: local}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: server, namespace: u, labels: {app: server}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: other, namespace: u, labels: {app: other}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
`

// serverVersions are versions of the server's ingress policy. Every one
// forbids client -> server port 81 (TCP and UDP), by default deny or by an
// explicit deny, and allows client -> server port 80; they differ in
// everything else: other peers, other ports, port ranges on both sides of
// 81, an L3 allow with an L4 deny, wildcard-identity entries.
var serverVersions = []string{`
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: ANY}]}]
`, `
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: ANY}]}]
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: "81", protocol: ANY}]}]
`, `
  ingress:
  - fromEntities: [cluster]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "81", protocol: ANY}]}]
`, `
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: ANY}, {port: "82", endPort: 1000, protocol: ANY}, {port: "1", endPort: 80, protocol: UDP}]}]
  - toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`, `
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: ANY}]}]
  - fromEndpoints: [{matchLabels: {app: other}}]
`}

// clientVersions are versions of the client's egress policy. Every one
// forbids client -> local port 81 and allows client -> local port 80 and
// client -> server on every port (so that the server's ingress decides).
var clientVersions = []string{`
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
  - toEndpoints: [{matchLabels: {app: local}}]
    toPorts: [{ports: [{port: "80", protocol: ANY}]}]
`, `
  egress:
  - toEntities: [cluster]
  egressDeny:
  - toEndpoints: [{matchLabels: {app: local}}]
    toPorts: [{ports: [{port: "81", protocol: ANY}]}]
`, `
  egress:
  - toEndpoints: [{matchLabels: {app: server}}, {matchLabels: {app: other}}]
  - toEndpoints: [{matchLabels: {app: local}}]
    toPorts: [{ports: [{port: "80", protocol: ANY}, {port: "82", endPort: 90, protocol: ANY}, {port: "1", endPort: 80, protocol: UDP}]}]
`, `
  egress:
  - toPorts: [{ports: [{port: "80", protocol: ANY}]}]
  - toEndpoints: [{matchLabels: {app: server}}]
`}

func serverPolicy(v int) string {
	return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: server-in, namespace: u}\nspec:\n  endpointSelector: {matchLabels: {app: server}}" + serverVersions[v]
}

func clientPolicy(v int) string {
	return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: client-out, namespace: u}\nspec:\n  endpointSelector: {matchLabels: {app: client}}" + clientVersions[v]
}

// TestPolicyUpdates changes policies under traffic: 1000 updates that keep
// some connections forbidden and others allowed must never let a forbidden
// packet through, must not break established connections, and must not
// drop new connections that every version allows. Then malformed policies
// are rejected, naming the field, and change nothing.
func TestPolicyUpdates(t *testing.T) {
	for _, routing := range []string{lab.RoutingNative, lab.RoutingVXLAN} {
		t.Run(routing, func(t *testing.T) {
			t.Parallel()
			name := newLab(t)
			up(t, name, writeTopology(t, updateTopology), "--routing", routing)
			state, err := lab.LoadState(name)
			if err != nil {
				t.Fatal(err)
			}
			pods := map[string]*lab.PodState{}
			for i := range state.Pods {
				pods[state.Pods[i].Name] = &state.Pods[i]
			}
			mustLumen(t, name, "apply", "-f", writeFile(t, "v0.yaml", serverPolicy(0)+"\n---\n"+clientPolicy(0)))
			waitPolicies(t, name, map[string][]string{
				"u/server": {"CiliumNetworkPolicy u/server-in"}, "u/client": {"CiliumNetworkPolicy u/client-out"},
			})
			t.Run("atomic", func(t *testing.T) { testAtomicUpdates(t, name, pods) })
			t.Run("malformed", func(t *testing.T) { testMalformed(t, name) })
		})
	}
}

// waitPolicies waits until the pods listed (ns/name) are selected by exactly
// the policies given.
func waitPolicies(t *testing.T, name string, want map[string][]string) {
	t.Helper()
	st := status(t, name)
	pl := &policyLab{name: name, clients: map[string]*api.Client{}}
	for _, n := range st.Nodes {
		pl.clients[n.Name] = api.NewClient(labpath.NodeSocket(name, n.Name))
	}
	for _, p := range st.Pods {
		pl.pods = append(pl.pods, &peer{name: p.Namespace + "/" + p.Name})
	}
	pl.waitSelected(t, want)
}

// counter counts attempts and successes of a prober.
type counter struct{ tries, ok atomic.Int64 }

func (c *counter) String() string { return fmt.Sprintf("%d of %d", c.ok.Load(), c.tries.Load()) }

func testAtomicUpdates(t *testing.T, name string, pods map[string]*lab.PodState) {
	client, local, server := pods["client"], pods["local"], pods["server"]
	addr := func(p *lab.PodState, port int) string { return net.JoinHostPort(p.IPv4, fmt.Sprint(port)) }
	ctx := context.Background()

	// Established connections allowed by every version, through both phases.
	streams := []*stream{
		startStream(t, client.NetNS, addr(server, 80)),
		startStream(t, client.NetNS, addr(local, 80)),
	}
	for _, s := range streams {
		s.progress(t, 10)
	}
	echoes := make([]int64, len(streams))
	for i, s := range streams {
		echoes[i] = s.echoes.Load()
	}

	// Map states seen, to show the updates reach the maps.
	states := map[[32]byte]bool{}
	var statesMu sync.Mutex
	stopPoll := make(chan struct{})
	var pollWG sync.WaitGroup
	for _, n := range []string{"n1", "n2"} {
		for _, ep := range endpointsOf(t, name, n) {
			if ep.PodName != "client" && ep.PodName != "server" {
				continue
			}
			c, id := api.NewClient(labpath.NodeSocket(name, n)), ep.ID
			pollWG.Add(1)
			go func() {
				defer pollWG.Done()
				for {
					select {
					case <-stopPoll:
						return
					case <-time.After(10 * time.Millisecond):
					}
					if rows, err := c.BPFPolicy(ctx, id); err == nil {
						b, _ := json.Marshal(rows)
						statesMu.Lock()
						states[sha256.Sum256(append([]byte(n), b...))] = true
						statesMu.Unlock()
					}
				}
			}()
		}
	}

	// The updates, alternating the server's and the client's policy, each
	// written to the store as `lumen apply` writes it.
	kv, err := kvstore.Dial(ctx, labpath.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	var versions [2][][]resource.Object
	for i, pol := range []func(int) string{serverPolicy, clientPolicy} {
		for v := range [][]string{serverVersions, clientVersions}[i] {
			objs, err := kinds.Registry().Decode("update", []byte(pol(v)))
			if err != nil {
				t.Fatal(err)
			}
			versions[i] = append(versions[i], objs)
		}
	}
	applied := 0
	churn := func(n int) {
		t.Helper()
		start := time.Now()
		for range n {
			which := applied % 2
			objs := versions[which][(applied/2+1)%len(versions[which])]
			if _, err := kinds.Registry().Apply(ctx, kv, objs); err != nil {
				t.Fatalf("update %d: %v", applied, err)
			}
			applied++
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Second) // the agents finish the last updates under traffic
		t.Logf("%d updates in %v", n, time.Since(start).Round(time.Millisecond))
	}
	// probers runs each function in a loop until the returned stop is called.
	probers := func(fs ...func()) (stop func()) {
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, f := range fs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					f()
				}
			}()
		}
		return func() { close(done); wg.Wait() }
	}

	// Phase 1, 500 updates: forbidden in every version are client ->
	// server:81 (the server's ingress decides) and client -> local:81 (the
	// client's egress decides). UDP: a datagram every millisecond on one
	// socket (a denied datagram leaves no conntrack entry, so each one is a
	// policy decision); TCP: new connections, each SYN a decision.
	forbidden := map[string]*counter{}
	var fs []func()
	for _, target := range []string{addr(server, 81), addr(local, 81)} {
		udp, tcp := &counter{}, &counter{}
		forbidden["udp "+target], forbidden["tcp "+target] = udp, tcp
		c, err := lab.DialInNS(client.NetNS, "udp", target, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fs = append(fs, func() {
			time.Sleep(time.Millisecond)
			if _, err := c.Write([]byte("forbidden\n")); err == nil {
				udp.tries.Add(1)
			}
		}, func() {
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, err := c.Read(buf); err == nil && n > 0 {
				udp.ok.Add(1)
			}
		})
		for range 3 {
			fs = append(fs, func() {
				tcp.tries.Add(1)
				if c, err := lab.DialInNS(client.NetNS, "tcp", target, 300*time.Millisecond); err == nil {
					tcp.ok.Add(1)
					c.Close()
				}
			})
		}
	}
	stop := probers(fs...)
	time.Sleep(300 * time.Millisecond)
	churn(500)
	stop()

	// Phase 2, 500 updates: only new connections that every version allows
	// (client -> server:80 and client -> local:80, a UDP datagram from a new
	// socket and a TCP connection each time, so each is a policy decision),
	// and the streams. No packet at all may be dropped by policy: the
	// datapath's policy drop counters must not move.
	allowed := map[string]*counter{}
	fs = nil
	for _, target := range []string{addr(server, 80), addr(local, 80)} {
		udp, tcp := &counter{}, &counter{}
		allowed["udp "+target], allowed["tcp "+target] = udp, tcp
		fs = append(fs, func() {
			udp.tries.Add(1)
			if udpOnce(client.NetNS, target) == nil {
				udp.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}, func() {
			tcp.tries.Add(1)
			if tcpFirstSYN(client.NetNS, target) == nil {
				tcp.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		})
	}
	time.Sleep(time.Second) // nothing of phase 1 in flight
	dropsBefore := policyDrops(t, name)
	stop = probers(fs...)
	time.Sleep(300 * time.Millisecond)
	churn(500)
	stop()
	dropsAfter := policyDrops(t, name)
	close(stopPoll)
	pollWG.Wait()

	t.Logf("%d distinct policy map states seen", len(states))
	if len(states) < 4 {
		t.Errorf("only %d distinct policy map states seen during %d updates: the updates did not reach the maps", len(states), applied)
	}
	t.Run("forbidden never connects", func(t *testing.T) {
		for what, c := range forbidden {
			t.Logf("forbidden %s: %s connected", what, c)
			if c.ok.Load() != 0 {
				t.Errorf("forbidden %s connected %s times during policy updates", what, c)
			}
			if c.tries.Load() < 10 {
				t.Errorf("forbidden %s: only %d attempts", what, c.tries.Load())
			}
		}
	})
	t.Run("established connections survive", func(t *testing.T) {
		for i, s := range streams {
			if err := s.Err(); err != nil {
				t.Errorf("established connection broken by policy updates: %v", err)
			}
			t.Logf("stream %d: %d echoes during the updates", i, s.echoes.Load()-echoes[i])
			if s.echoes.Load() == echoes[i] {
				t.Errorf("stream %d carried nothing during the updates", i)
			}
		}
		for _, s := range streams {
			s.progress(t, 10)
		}
	})
	// An update must not drop, even for a moment, what the old and the new
	// version both allow: when an update replaces an L4 allow by an L3 allow
	// (or back), removing the stale allows before writing the new ones would
	// leave packets in between on default deny (found here, fixed in
	// 1e03d9d).
	t.Run("allowed new connections never dropped", func(t *testing.T) {
		for what, c := range allowed {
			t.Logf("allowed %s: %s new connections got through at the first packet", what, c)
		}
		for node, before := range dropsBefore {
			if d := dropsAfter[node] - before; d != 0 {
				t.Errorf("node %s dropped %d packets by policy while only connections allowed by every version ran, during %d policy updates", node, d, 500)
			}
		}
	})
	// Afterwards, fresh connections get the last versions' verdicts.
	for _, tc := range []struct {
		target string
		want   bool
	}{{"server:80/tcp", true}, {"server:80/udp", true}, {"local:80/tcp", true}, {"server:81/tcp", false}, {"server:81/udp", false}, {"local:81/tcp", false}, {"local:81/udp", false}} {
		r := lumen(t, name, "lab", "probe", "client", tc.target, "--timeout", "2s")
		if (r.code == 0) != tc.want {
			t.Errorf("after the updates: client -> %s: exit %d, want connected=%v: %s", tc.target, r.code, tc.want, r.stdout)
		}
	}
}

// policyDrops reads every node's count of packets dropped by policy (drop
// reasons 133, policy denied, and 181, denied by a deny rule).
func policyDrops(t *testing.T, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range []string{"n1", "n2"} {
		for _, line := range strings.Split(mustLumen(t, name, "--node", n, "metrics"), "\n") {
			if !strings.HasPrefix(line, "lumen_drop_count_total{") {
				continue
			}
			labels, value, _ := strings.Cut(line, "} ")
			if !strings.Contains(labels, "133") && !strings.Contains(labels, "181") && !strings.Contains(labels, `reason="Policy denied`) {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(value, &v); err != nil {
				t.Fatalf("metrics of %s: %q: %v", n, line, err)
			}
			out[n] += int64(v)
		}
	}
	return out
}

// udpOnce sends one datagram from a new socket in nsName and waits for its
// echo, without resending.
func udpOnce(nsName, target string) error {
	c, err := lab.DialInNS(nsName, "udp", target, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := fmt.Sprintf("once %d\n", time.Now().UnixNano())
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != msg {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}

// tcpFirstSYN opens a TCP connection from nsName and fails if it needed
// more than one SYN.
func tcpFirstSYN(nsName, target string) error {
	c, err := lab.DialInNS(nsName, "tcp", target, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return err
	}
	if ierr != nil {
		return ierr
	}
	if info.Total_retrans > 0 {
		return fmt.Errorf("SYN sent %d times", info.Total_retrans+1)
	}
	return nil
}
