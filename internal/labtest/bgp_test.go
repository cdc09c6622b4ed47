package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/testutil"
)

// The BGP tests run a real router (BIRD 2, and FRR as a second
// implementation) in a namespace on the lab's underlay. n1's sessions use
// a long restart time (graceful restart across an agent restart), n2's a
// short one (a stopped agent's routes go after it), and n1 also has a
// neighbor nobody answers for.
const (
	bgpRouterASN = 65000
	bgpNodeASN   = 65001
	// deadPeer is on the underlay but nothing answers there.
	deadPeer = "10.99.0.254"
	// restart times of n1's and n2's sessions, seconds
	bgpLongRestart  = 120
	bgpShortRestart = 6
	bgpLBAddr       = "10.50.0.10"
	bgpOtherLBAddr  = "10.50.0.20" // of a service BGP must not announce
)

// bgpConfigMap is the Cilium 1.11 form: per-node peers by node selector.
const bgpConfigMap = `apiVersion: v1
kind: ConfigMap
metadata: {name: bgp-config, namespace: kube-system}
data:
  config.yaml: |
    peers:
      - peer-address: 10.99.0.251
        peer-asn: %[1]d
        my-asn: %[2]d
        hold-time: 9s
        keepalive-time: 3s
        restart-time: %[3]ds
        node-selectors: [{match-labels: {kubernetes.io/hostname: n1}}]
      - peer-address: 10.99.0.251
        peer-asn: %[1]d
        my-asn: %[2]d
        hold-time: 9s
        keepalive-time: 3s
        restart-time: %[4]ds
        node-selectors: [{match-labels: {kubernetes.io/hostname: n2}}]
      - peer-address: ` + deadPeer + `
        peer-asn: 65009
        my-asn: %[2]d
        graceful-restart: false
        connect-retry: 8s
        node-selectors: [{match-expressions: [{key: kubernetes.io/hostname, operator: In, values: [n1]}]}]
    address-pools:
      - name: bgp-pool
        protocol: bgp
        addresses: [10.50.0.0/28]
`

// bgpPolicies is the CiliumBGPPeeringPolicy form: one policy per node.
const bgpPolicies = `apiVersion: cilium.io/v2alpha1
kind: CiliumBGPPeeringPolicy
metadata: {name: rack-n1}
spec:
  nodeSelector: {matchLabels: {kubernetes.io/hostname: n1}}
  virtualRouters:
    - localASN: %[2]d
      exportPodCIDR: true
      serviceSelector: {matchLabels: {expose: bgp}}
      neighbors:
        - peerAddress: 10.99.0.251/32
          peerASN: %[1]d
          holdTimeSeconds: 9
          keepAliveTimeSeconds: 3
          gracefulRestart: {enabled: true, restartTimeSeconds: %[3]d}
        - peerAddress: ` + deadPeer + `/32
          peerASN: 65009
          connectRetryTimeSeconds: 8
---
apiVersion: cilium.io/v2alpha1
kind: CiliumBGPPeeringPolicy
metadata: {name: rack-n2}
spec:
  nodeSelector: {matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [n2]}]}
  virtualRouters:
    - localASN: %[2]d
      exportPodCIDR: true
      serviceSelector: {matchLabels: {expose: bgp}}
      neighbors:
        - peerAddress: 10.99.0.251/32
          peerASN: %[1]d
          holdTimeSeconds: 9
          keepAliveTimeSeconds: 3
          gracefulRestart: {enabled: true, restartTimeSeconds: %[4]d}
`

// bgpServices: web is announced (in the pool, selected); other is not
// (outside the pool, and without the selected label).
const bgpServices = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {expose: bgp}}
spec:
  type: LoadBalancer
  loadBalancerIP: ` + bgpLBAddr + `
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  type: LoadBalancer
  loadBalancerIP: ` + bgpOtherLBAddr + `
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 81, protocol: TCP}]
`

// TestBGPRouters peers every node with a real router and checks, for BIRD
// (configured through the Cilium 1.11 ConfigMap) and FRR (through
// CiliumBGPPeeringPolicy): sessions, pod CIDRs in the router's kernel,
// traffic from the router to pods, a LoadBalancer address following its
// service, graceful restart across kill -9 and restart of an agent, the
// withdrawal after the restart time of a stopped agent, and a dead peer
// retried without holding anything up.
func TestBGPRouters(t *testing.T) {
	for _, c := range []struct{ kind, config string }{
		{lab.RouterBIRD, "configmap"},
		{lab.RouterFRR, "policy"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			testutil.RequirePrivileged(t)
			if err := lab.CheckRouterBinaries(c.kind); err != nil {
				testutil.Skip(t, err.Error())
			}
			name := newLab(t)
			var agentArgs string
			if c.config == "configmap" {
				cm := filepath.Join(t.TempDir(), "bgp-config.yaml")
				if err := os.WriteFile(cm, fmt.Appendf(nil, bgpConfigMap, bgpRouterASN, bgpNodeASN, bgpLongRestart, bgpShortRestart), 0o644); err != nil {
					t.Fatal(err)
				}
				agentArgs = fmt.Sprintf(`["--bgp-config-path=%s", "--bgp-announce-pod-cidr", "--bgp-announce-lb-ip"]`, cm)
			} else {
				agentArgs = `["--enable-bgp-control-plane"]`
			}
			topo := writeTopology(t, fmt.Sprintf(`
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: web1, namespace: shop, labels: {app: web}, node: n1, ports: ["80/tcp", "81/tcp"]}
  - {name: web2, namespace: shop, labels: {app: web}, node: n2, ports: ["80/tcp", "81/tcp"]}
routers: [{name: tor, kind: %s, asn: %d, nodeASN: %d}]
agentArgs: %s
`, c.kind, bgpRouterASN, bgpNodeASN, agentArgs))
			st := up(t, name, topo)
			if c.config == "policy" {
				mustApply(t, name, fmt.Sprintf(bgpPolicies, bgpRouterASN, bgpNodeASN, bgpLongRestart, bgpShortRestart))
			}
			router, err := lab.FindRouter(name, "tor")
			if err != nil {
				t.Fatal(err)
			}
			// The nodes' underlay addresses (IPv4, IPv6) and pod CIDRs.
			nodeIPs := map[string][]netip.Addr{}
			podCIDRs := map[string][]netip.Prefix{}
			for _, n := range st.Nodes {
				for _, s := range n.NodeIPs {
					nodeIPs[n.Name] = append(nodeIPs[n.Name], netip.MustParsePrefix(s).Addr())
				}
				for _, s := range n.PodCIDRs {
					podCIDRs[n.Name] = append(podCIDRs[n.Name], netip.MustParsePrefix(s))
				}
			}
			via := func(node string, p netip.Prefix) netip.Addr {
				for _, a := range nodeIPs[node] {
					if a.Is4() == p.Addr().Is4() {
						return a
					}
				}
				return netip.Addr{}
			}
			n1v4, n2v4 := via("n1", podCIDRs["n1"][0]), via("n2", podCIDRs["n2"][0])

			// Sessions come up, with both families.
			for _, node := range []string{"n1", "n2"} {
				waitUntil(t, node+"'s session with the router", func() bool {
					p := bgpPeer(t, name, node, router.Addr(4).String())
					return p != nil && p.State == api.BGPEstablished && len(p.Families) == 2
				})
			}
			// Every node's pod CIDRs arrive in the router's kernel, via the node.
			for node, cidrs := range podCIDRs {
				for _, p := range cidrs {
					waitUntil(t, fmt.Sprintf("%s in the router's kernel via %s", p, via(node, p)), func() bool {
						return routerRoute(t, name, p, via(node, p))
					})
				}
			}
			// Traffic from the router reaches every pod through those routes.
			for _, pod := range st.Pods {
				for _, ip := range []string{pod.IPv4, pod.IPv6} {
					target := netip.AddrPortFrom(netip.MustParseAddr(ip), 80)
					if err := lab.ProbeInNS(context.Background(), router.NetNS, target, lab.ProtoTCP, 5*time.Second); err != nil {
						t.Errorf("router -> pod %s at %s: %v", pod.Name, target, err)
					}
				}
			}
			routes := bgpRoutes(t, name, "n1")
			for _, p := range podCIDRs["n1"] {
				i := slices.IndexFunc(routes, func(r api.BGPRoute) bool { return r.Prefix == p.String() })
				if i < 0 || r0(routes[i].AdvertisedTo) != router.Addr(4).String() || routes[i].Origin != "pod-cidr" {
					t.Errorf("lumen bgp routes on n1: want %s advertised to %s, got %+v", p, router.Addr(4), routes)
				}
			}

			// A peer nobody answers for is shown down and retried with a
			// growing back-off, while everything else works (above).
			var retries []uint64
			waitUntil(t, "the dead peer's back-off to grow", func() bool {
				p := bgpPeer(t, name, "n1", deadPeer)
				if p == nil || p.State == api.BGPEstablished {
					return false
				}
				if len(retries) == 0 || retries[len(retries)-1] != p.NextRetry {
					retries = append(retries, p.NextRetry)
				}
				return len(retries) >= 2 && retries[len(retries)-1] > retries[0]
			})
			t.Logf("dead peer retry intervals seen: %v", retries)
			if s := agentStatus(t, name, "n1"); !s.Healthy() {
				t.Errorf("n1 unhealthy with a dead peer: %+v", s.Subsystems)
			}

			// A LoadBalancer address appears with its service and goes with it;
			// a service that is not selected (or outside the pools) never does.
			mustApply(t, name, bgpServices)
			lbPrefix := netip.PrefixFrom(netip.MustParseAddr(bgpLBAddr), 32)
			waitUntil(t, "the LoadBalancer address via both nodes", func() bool {
				return routerRoute(t, name, lbPrefix, n1v4, n2v4)
			})
			for i := 0; i < 4; i++ {
				if err := lab.ProbeInNS(context.Background(), router.NetNS, netip.AddrPortFrom(lbPrefix.Addr(), 80), lab.ProtoTCP, 5*time.Second); err != nil {
					t.Errorf("router -> LoadBalancer %s: %v", lbPrefix.Addr(), err)
				}
			}
			if routerRoute(t, name, netip.MustParsePrefix(bgpOtherLBAddr+"/32")) {
				t.Errorf("%s is announced, but its service is not selected", bgpOtherLBAddr)
			}
			mustLumen(t, name, "delete", "service", "web", "-n", "shop")
			waitUntil(t, "the LoadBalancer address to be withdrawn", func() bool {
				return !routerRoute(t, name, lbPrefix)
			})

			// kill -9 of n1's agent and a restart: the router keeps n1's routes
			// throughout (graceful restart), then the session is back.
			watch := watchRoutes(t, name, podCIDRs["n1"])
			killAgent(t, name, "n1")
			waitUntil(t, "the router to see n1's session go", func() bool { return !routerSessionUp(t, router, n1v4) })
			mustLumen(t, name, "lab", "restart-agent", "n1")
			waitUntil(t, "n1's session to come back", func() bool { return routerSessionUp(t, router, n1v4) })
			waitUntil(t, "n1 to announce again", func() bool {
				p := bgpPeer(t, name, "n1", router.Addr(4).String())
				return p != nil && p.State == api.BGPEstablished && p.PrefixesSent >= 2
			})
			time.Sleep(time.Second) // the router has processed the End-of-RIB and dropped what was not refreshed
			samples, missing := watch()
			if len(missing) > 0 {
				t.Errorf("the router lost n1's routes during its agent's restart (graceful restart): %d of %d samples missing %v", len(missing), samples, missing[:min(5, len(missing))])
			}
			for _, p := range podCIDRs["n1"] {
				if !routerRoute(t, name, p, via("n1", p)) {
					t.Errorf("%s gone from the router after n1's agent restarted", p)
				}
			}
			t.Logf("router kept n1's routes over %d samples during the restart", samples)

			// A running agent restarted (SIGTERM, then started again) leaves
			// the sessions without a NOTIFICATION: the routes stay too.
			watch = watchRoutes(t, name, podCIDRs["n1"])
			mustLumen(t, name, "lab", "restart-agent", "n1")
			waitUntil(t, "n1 to announce again after a graceful restart", func() bool {
				p := bgpPeer(t, name, "n1", router.Addr(4).String())
				return p != nil && p.State == api.BGPEstablished && p.PrefixesSent >= 2
			})
			time.Sleep(time.Second)
			if samples, missing := watch(); len(missing) > 0 {
				t.Errorf("the router lost n1's routes during a SIGTERM restart: %d of %d samples missing %v", len(missing), samples, missing[:min(5, len(missing))])
			}

			// A stopped agent: its routes stay stale for its restart time, then go.
			killAgent(t, name, "n2")
			waitUntil(t, "the router to see n2's session go", func() bool { return !routerSessionUp(t, router, n2v4) })
			down := time.Now()
			if !routerRoute(t, name, podCIDRs["n2"][0], via("n2", podCIDRs["n2"][0])) {
				t.Errorf("%s withdrawn at once when n2's agent died: graceful restart not in effect", podCIDRs["n2"][0])
			}
			for _, p := range podCIDRs["n2"] {
				waitUntil(t, fmt.Sprintf("%s to be withdrawn after the restart time", p), func() bool { return !routerRoute(t, name, p) })
			}
			t.Logf("n2's routes withdrawn %s after its session went (restart time %ds)", time.Since(down).Round(100*time.Millisecond), bgpShortRestart)
			// n1's stay.
			if !routerRoute(t, name, podCIDRs["n1"][0], via("n1", podCIDRs["n1"][0])) {
				t.Errorf("n1's routes went with n2's")
			}
		})
	}
}

// TestBGPBadInput: bad peering policies are rejected by `lumen apply`,
// naming the field and the value.
func TestBGPBadInput(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, "nodes: [{name: n1}]"))
	policy := func(vr string) string {
		return "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: bad}\nspec:\n  virtualRouters:\n" + vr
	}
	for _, c := range []struct{ yaml, want string }{
		{policy("    - {localASN: 0, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000}]}"), `spec.virtualRouters[0].localASN: invalid value "0"`},
		{policy("    - {localASN: 4294967296, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000}]}"), `spec.virtualRouters[0].localASN: invalid value "4294967296"`},
		{policy("    - {localASN: 65001, neighbors: [{peerAddress: 10.0.0.0/24, peerASN: 65000}]}"), `spec.virtualRouters[0].neighbors[0].peerAddress: invalid value "10.0.0.0/24"`},
		{policy("    - {localASN: 65001, neighbors: [{peerAddress: not-an-ip, peerASN: 65000}]}"), `spec.virtualRouters[0].neighbors[0].peerAddress: invalid value "not-an-ip"`},
		{policy("    - {localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000, holdTimeSeconds: 2}]}"), `spec.virtualRouters[0].neighbors[0].holdTimeSeconds: invalid value 2`},
		{policy("    - {localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000, holdTimeSeconds: 9, keepAliveTimeSeconds: 10}]}"), `spec.virtualRouters[0].neighbors[0].keepAliveTimeSeconds: invalid value 10`},
		{policy("    - {localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000, gracefulRestart: {enabled: true, restartTimeSeconds: 5000}}]}"), `spec.virtualRouters[0].neighbors[0].gracefulRestart.restartTimeSeconds: invalid value 5000`},
		{policy("    - {localASN: 65001, serviceSelector: {matchExpressions: [{key: app, operator: Near, values: [x]}]}, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000}]}"), `spec.virtualRouters[0].serviceSelector.matchExpressions[0].operator: unsupported value "Near"`},
	} {
		r := lumenStdin(t, name, c.yaml, "apply", "-f", "-")
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("apply of a bad policy: exit %d, stderr %q: want it to name %q", r.code, r.stderr, c.want)
		}
	}
	if out := mustLumen(t, name, "get", "ciliumbgppeeringpolicies"); strings.Contains(out, "bad") {
		t.Errorf("a rejected policy reached the store: %s", out)
	}
}

func mustApply(t *testing.T, labName, yaml string) {
	t.Helper()
	if r := lumenStdin(t, labName, yaml, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

func r0(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func bgpPeer(t *testing.T, labName, node, addr string) *api.BGPPeer {
	t.Helper()
	r := lumen(t, labName, "--node", node, "bgp", "peers", "-o", "json")
	if r.code != 0 {
		return nil // the agent may be restarting
	}
	var peers []api.BGPPeer
	decode(t, r.stdout, &peers)
	for i := range peers {
		if peers[i].PeerAddress == addr {
			return &peers[i]
		}
	}
	return nil
}

func bgpRoutes(t *testing.T, labName, node string) []api.BGPRoute {
	t.Helper()
	var routes []api.BGPRoute
	decode(t, mustLumen(t, labName, "--node", node, "bgp", "routes", "-o", "json"), &routes)
	return routes
}

func agentStatus(t *testing.T, labName, node string) *api.Status {
	t.Helper()
	var s api.Status
	decode(t, mustLumen(t, labName, "--node", node, "status", "-o", "json"), &s)
	return &s
}

// routerRoute reports whether the router's kernel routes p, via exactly
// the given next hops (any when none are given).
func routerRoute(t *testing.T, labName string, p netip.Prefix, via ...netip.Addr) bool {
	t.Helper()
	rs, err := lab.RouterRoutes(labName, "tor")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := rs[p]
	if !ok {
		return false
	}
	if len(via) == 0 {
		return true
	}
	want := slices.Clone(via)
	slices.SortFunc(want, netip.Addr.Compare)
	return slices.Equal(got, want)
}

// watchRoutes samples the router's routes to ps until the returned
// function is called; it returns the number of samples and the missing ones.
func watchRoutes(t *testing.T, labName string, ps []netip.Prefix) func() (int, []string) {
	var mu sync.Mutex
	var samples int
	var missing []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rs, err := lab.RouterRoutes(labName, "tor")
			mu.Lock()
			samples++
			for _, p := range ps {
				if _, ok := rs[p]; !ok || err != nil {
					missing = append(missing, fmt.Sprintf("%s at %s", p, time.Now().Format("15:04:05.000")))
				}
			}
			mu.Unlock()
		}
	}()
	var once sync.Once
	finish := func() (int, []string) {
		once.Do(func() { close(stop); <-done })
		mu.Lock()
		defer mu.Unlock()
		return samples, missing
	}
	t.Cleanup(func() { finish() })
	return finish
}

// killAgent kills a node's agent with SIGKILL and waits until it is gone.
func killAgent(t *testing.T, labName, node string) {
	t.Helper()
	st, err := lab.LoadState(labName)
	if err != nil {
		t.Fatal(err)
	}
	n, err := st.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(n.Agent.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the killed agent to be gone", func() bool { return !n.Agent.Alive() })
}

var (
	birdProtoRE       = regexp.MustCompile(`(?m)^\S+\s+BGP\s`)
	birdEstablishedRE = regexp.MustCompile(`BGP state:\s+Established`)
)

// routerSessionUp asks the router whether its session with a node is
// established.
func routerSessionUp(t *testing.T, r *lab.RouterState, node netip.Addr) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r.Kind == lab.RouterFRR {
		out, err := r.Run(ctx, "show bgp summary json")
		if err != nil {
			t.Fatal(err)
		}
		var sum struct {
			IPv4Unicast struct {
				Peers map[string]struct {
					State string `json:"state"`
				} `json:"peers"`
			} `json:"ipv4Unicast"`
		}
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("decoding FRR's summary: %v\n%s", err, out)
		}
		return sum.IPv4Unicast.Peers[node.String()].State == "Established"
	}
	out, err := r.Run(ctx, "show protocols all")
	if err != nil {
		t.Fatal(err)
	}
	// One block per protocol; the node's says "Neighbor address: <ip>".
	idx := birdProtoRE.FindAllStringIndex(out, -1)
	for i, loc := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		block := out[loc[0]:end]
		if strings.Contains(block, "Neighbor address: "+node.String()+"\n") {
			return birdEstablishedRE.MatchString(block)
		}
	}
	return false
}
