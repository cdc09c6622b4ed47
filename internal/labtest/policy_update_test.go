package labtest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	_ "github.com/lumen-net/lumen/internal/policysync" // registers the policy kinds with resource
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
		pl.clients[n.Name] = api.NewClient(lab.NodeSocket(name, n.Name))
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

	// Established connections allowed by every version.
	streams := []*stream{
		startStream(t, client.NetNS, addr(server, 80)),
		startStream(t, client.NetNS, addr(local, 80)),
	}
	for _, s := range streams {
		s.progress(t, 10)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f()
			}
		}()
	}
	// Forbidden in every version: client -> server:81 (the server's ingress
	// decides) and client -> local:81 (the client's egress decides). UDP: a
	// datagram every millisecond on one socket; a denied datagram leaves no
	// conntrack entry, so each one is a policy decision. TCP: new
	// connections (each SYN a decision).
	forbidden := map[string]*counter{}
	for _, target := range []string{addr(server, 81), addr(local, 81)} {
		udp := &counter{}
		forbidden["udp "+target] = udp
		c, err := lab.DialInNS(client.NetNS, "udp", target, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(2)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte("forbidden\n")); err == nil {
					udp.tries.Add(1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, err := c.Read(buf); err == nil && n > 0 {
					udp.ok.Add(1)
				}
			}
		}()
		tcp := &counter{}
		forbidden["tcp "+target] = tcp
		for range 3 {
			run(func() {
				tcp.tries.Add(1)
				if c, err := lab.DialInNS(client.NetNS, "tcp", target, 300*time.Millisecond); err == nil {
					tcp.ok.Add(1)
					c.Close()
				}
			})
		}
	}
	// Allowed in every version, new connections, each packet a policy
	// decision and none retried: one UDP datagram from a new socket (a new
	// conntrack entry) that must be echoed; a TCP connection whose SYN must
	// not need the kernel's retransmission (one second later).
	allowed := map[string]*counter{}
	for _, target := range []string{addr(server, 80), addr(local, 80)} {
		udp, tcp := &counter{}, &counter{}
		allowed["udp "+target], allowed["tcp "+target] = udp, tcp
		run(func() {
			udp.tries.Add(1)
			if udpOnce(client.NetNS, target) == nil {
				udp.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		})
		run(func() {
			tcp.tries.Add(1)
			start := time.Now()
			if c, err := lab.DialInNS(client.NetNS, "tcp", target, 3*time.Second); err == nil {
				c.Close()
				if time.Since(start) < 900*time.Millisecond {
					tcp.ok.Add(1)
				}
			}
			time.Sleep(2 * time.Millisecond)
		})
	}
	// Watch the map states go by.
	states := map[[32]byte]bool{}
	var statesMu sync.Mutex
	epIDs := map[string]uint16{}
	for _, n := range []string{"n1", "n2"} {
		for _, ep := range endpointsOf(t, name, n) {
			if ep.PodName == "client" || ep.PodName == "server" {
				epIDs[n] = ep.ID
			}
		}
	}
	for node, id := range epIDs {
		c := api.NewClient(lab.NodeSocket(name, node))
		run(func() {
			rows, err := c.BPFPolicy(context.Background(), id)
			if err == nil {
				b, _ := json.Marshal(rows)
				statesMu.Lock()
				states[sha256.Sum256(append([]byte(node), b...))] = true
				statesMu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		})
	}

	// 1000 updates, alternating the server's and the client's policy, each
	// through the store as `lumen apply` writes it.
	ctx := context.Background()
	kv, err := kvstore.Dial(ctx, lab.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	decode := func(doc string) []resource.Object {
		objs, err := resource.Decode("update", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	var server2, client2 [][]resource.Object
	for v := range serverVersions {
		server2 = append(server2, decode(serverPolicy(v)))
	}
	for v := range clientVersions {
		client2 = append(client2, decode(clientPolicy(v)))
	}
	// A quiet period first: losses of allowed first packets without updates
	// would be the lab's, not the updates'.
	time.Sleep(3 * time.Second)
	baseline := map[string][2]int64{}
	for what, c := range allowed {
		baseline[what] = [2]int64{c.tries.Load(), c.ok.Load()}
	}
	echoes := make([]int64, len(streams))
	for i, s := range streams {
		echoes[i] = s.echoes.Load()
	}
	start := time.Now()
	const updates = 1000
	for i := range updates {
		objs := server2[(i/2+1)%len(server2)]
		if i%2 == 1 {
			objs = client2[(i/2+1)%len(client2)]
		}
		if _, err := resource.Apply(ctx, kv, objs); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	churn := time.Since(start)
	time.Sleep(time.Second) // the agents finish the last updates under traffic
	close(stop)
	wg.Wait()

	statesMu.Lock()
	t.Logf("%d updates in %v; %d distinct policy map states seen", updates, churn.Round(time.Millisecond), len(states))
	if len(states) < 4 {
		t.Errorf("only %d distinct policy map states seen during %d updates: the updates did not reach the maps", len(states), updates)
	}
	statesMu.Unlock()
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
	// Every version allows these: an update must not drop them even for a
	// moment (PolicyMap.Sync removes stale allows before it adds the new
	// ones; when an update replaces an L4 allow by an L3 allow, the packets
	// in between hit default deny).
	t.Run("allowed new connections keep their first packet", func(t *testing.T) {
		for what, c := range allowed {
			b := baseline[what]
			if b[1] != b[0] {
				t.Errorf("allowed %s lost %d of %d first packets before any update: the lab is too slow for this check", what, b[0]-b[1], b[0])
				continue
			}
			tries, ok := c.tries.Load()-b[0], c.ok.Load()-b[1]
			t.Logf("allowed %s: %d of %d new connections connected at the first packet during the updates", what, ok, tries)
			if ok != tries {
				t.Errorf("allowed %s (allowed by every version): %d of %d new connections lost their first packet during policy updates (none of %d before)", what, tries-ok, tries, b[0])
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
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
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

// malformedCases are policies `lumen apply` must reject, with what the
// error must say: the field path and the bad value.
var malformedCases = []struct {
	name, yaml string
	want       []string
}{
	{"bad selector operator", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-operator, namespace: u}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints:
    - matchExpressions: [{key: app, operator: Contains, values: [client]}]
`, []string{"spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", `"Contains"`}},
	{"bad CIDR", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-cidr, namespace: u}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: ["10.0.0.300/24"]
`, []string{"spec.egress[0].toCIDR[0]", `"10.0.0.300/24"`}},
	{"bad ipBlock CIDR", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-ipblock, namespace: u}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
`, []string{"spec.ingress[0].from[0].ipBlock.cidr", `"10.0.0.0/33"`}},
	{"except outside cidr", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-except, namespace: u}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.1.0.0/16, except: [10.2.0.0/24]}
`, []string{"spec.ingress[0].from[0].ipBlock.except[0]", `"10.2.0.0/24"`}},
	{"bad port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 70000}]
`, []string{"spec.ingress[0].ports[0].port", "70000"}},
	{"bad cilium port", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-cilium-port, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "-1", protocol: TCP}]}]
`, []string{"spec.ingress[0].toPorts[0].ports[0].port", `"-1"`}},
	{"endPort below port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-endport, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 90, endPort: 80}]
`, []string{"spec.ingress[0].ports[0].endPort", "80"}},
	{"bad protocol", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-protocol, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: ICMP}]}]
`, []string{"spec.ingress[0].toPorts[0].ports[0].protocol", `"ICMP"`}},
	{"bad netpol protocol", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-np-protocol, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, protocol: tcp}]
`, []string{"spec.ingress[0].ports[0].protocol", `"tcp"`}},
	{"unknown entity", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-entity, namespace: u}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [internet]
`, []string{"spec.egress[0].toEntities[0]", `"internet"`}},
	{"named port with endPort", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-named-range, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http, endPort: 90}]
`, []string{"spec.ingress[0].ports[0].port", `"http"`, "endPort"}},
	{"misspelt field", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-field, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoint: [{}]
`, []string{"spec.ingress[0]", `"fromEndpoint"`}},
	{"bad policy type", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-type, namespace: u}
spec:
  podSelector: {}
  policyTypes: [Ingres]
`, []string{"spec.policyTypes[0]", `"Ingres"`}},
}

// testMalformed applies each malformed policy (alone, and in a file with a
// valid policy that would change connectivity) and requires a rejection
// naming the field and value, no change in the store, and the same
// connectivity before and after.
func testMalformed(t *testing.T, name string) {
	matrix := func() map[string]bool {
		out := map[string]bool{}
		r := lumen(t, name, "lab", "probe", "--matrix", "-o", "json", "--timeout", "1s", "--parallel", "100")
		var res []lab.ProbeResult
		decode(t, r.stdout, &res)
		for _, p := range res {
			out[fmt.Sprintf("%s -> %s %d/%s", p.From, p.To, p.Port, p.Protocol)] = p.Connected
		}
		return out
	}
	policies := mustLumen(t, name, "policy", "get", "-o", "json")
	before := matrix()
	denied := 0
	for _, ok := range before {
		if !ok {
			denied++
		}
	}
	if denied == 0 || denied == len(before) {
		t.Fatalf("the policies in force should deny some cells and allow others: %d of %d denied", denied, len(before))
	}
	// A valid policy that would deny everything to and from namespace u.
	const valid = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-everything, namespace: u}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`
	for _, mc := range malformedCases {
		t.Run(mc.name, func(t *testing.T) {
			for _, doc := range []string{mc.yaml, valid + "---\n" + mc.yaml} {
				r := lumen(t, name, "apply", "-f", writeFile(t, "bad.yaml", doc))
				if r.code == 0 {
					t.Fatalf("lumen apply accepted a malformed policy:\n%s\n%s", doc, r.stdout)
				}
				for _, w := range mc.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("error does not name %s:\n%s", w, r.stderr)
					}
				}
			}
		})
	}
	if got := mustLumen(t, name, "policy", "get", "-o", "json"); got != policies {
		t.Errorf("policies changed by rejected applies:\nbefore %s\nafter %s", policies, got)
	}
	after := matrix()
	var diff []string
	for k, v := range before {
		if after[k] != v {
			diff = append(diff, fmt.Sprintf("%s: connected %v before, %v after", k, v, after[k]))
		}
	}
	if len(diff) > 0 {
		t.Errorf("connectivity changed by rejected applies:\n%s", strings.Join(diff, "\n"))
	}

	// A malformed policy written straight to the store, around the CLI's
	// validation, is skipped by the agents; the others stay in force.
	ctx := context.Background()
	kv, err := kvstore.Dial(ctx, lab.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	key := resource.Key("NetworkPolicy", "u", "sneaked-in")
	bad := `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"sneaked-in","namespace":"u"},` +
		`"spec":{"podSelector":{},"policyTypes":["Ingress","Egress"],"ingress":[{"ports":[{"port":70000}]}]}}`
	if _, err := kv.Put(ctx, key, []byte(bad)); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = kv.Delete(ctx, key) }()
	waitUntil(t, "the agents to skip the malformed policy", func() bool {
		for _, n := range []string{"n1", "n2"} {
			var st api.Status
			if err := json.Unmarshal([]byte(mustLumen(t, name, "--node", n, "status", "-o", "json")), &st); err != nil {
				return false
			}
			skipped := false
			for _, s := range st.Subsystems {
				skipped = skipped || (s.Name == "policy" && strings.Contains(s.Message, "1 invalid skipped"))
			}
			if !skipped {
				return false
			}
		}
		return true
	})
	after = matrix()
	diff = nil
	for k, v := range before {
		if after[k] != v {
			diff = append(diff, fmt.Sprintf("%s: connected %v before, %v after", k, v, after[k]))
		}
	}
	if len(diff) > 0 {
		t.Errorf("connectivity changed by a malformed policy in the store:\n%s", strings.Join(diff, "\n"))
	}
}

// The example policies are valid (`lumen apply` would take them).
func TestExamplePoliciesValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "policies", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := resource.Decode(f, data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for i := range objs {
			if err := resource.Validate(&objs[i]); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
}
