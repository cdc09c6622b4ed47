package labtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
)

// lbTopology: three backends (app=be, one on n1, two on n2), a client pod
// on each node and an external client; extra is appended at the top level
// (agentArgs).
func lbTopology(extra string) string {
	return `nodes:
  - {name: n1, zone: zone-a}
  - {name: n2, zone: zone-b}
clients: [{name: ext}]
pods:
  - {name: be-a1, namespace: shop, labels: {app: be, side: a}, node: n1, ports: ["80/tcp", "80/udp"]}
  - {name: be-b1, namespace: shop, labels: {app: be, side: b}, node: n2, ports: ["80/tcp", "80/udp"]}
  - {name: be-b2, namespace: shop, labels: {app: be, side: b}, node: n2, ports: ["80/tcp", "80/udp"]}
  - {name: cl1, namespace: tools, labels: {app: client}, node: n1, ports: ["80/tcp"]}
  - {name: cl2, namespace: tools, labels: {app: client}, node: n2, ports: ["80/tcp"]}
` + extra
}

var lbBackends = []string{"shop/be-a1", "shop/be-b1", "shop/be-b2"}

// dualStackService: ClusterIP on both families, TCP 8080 and UDP 5353 to
// the echo servers' port 80.
const dualStackService = `apiVersion: v1
kind: Service
metadata: {name: be, namespace: shop}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: be}
  ports:
  - {name: http, port: 8080, targetPort: 80, protocol: TCP}
  - {name: dns, port: 5353, targetPort: 80, protocol: UDP}
`

// backendAddrs lists the backends' addr:port of a family.
func backendAddrs(t *testing.T, labName string, family int, pods []string) []string {
	t.Helper()
	var out []string
	for _, p := range pods {
		out = append(out, podAddr(t, labName, p, family, 80))
	}
	return out
}

// setupDualStack applies dualStackService and waits until both nodes
// load-balance every frontend over the three backends.
func setupDualStack(t *testing.T, name string) svcInfo {
	t.Helper()
	applyYAML(t, name, dualStackService)
	svc := getService(t, name, "shop", "be")
	if len(svc.ClusterIPs) != 2 {
		t.Fatalf("RequireDualStack service got cluster IPs %v", svc.ClusterIPs)
	}
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			want := backendAddrs(t, name, fam, lbBackends)
			waitBackends(t, name, node, hostPort(svc.ip(t, fam), 8080), "TCP", want)
			waitBackends(t, name, node, hostPort(svc.ip(t, fam), 5353), "UDP", want)
		}
	}
	return svc
}

// serviceCT returns the node's per-packet service conntrack entries of a
// client socket (src) to a frontend (dst).
func serviceCT(t *testing.T, labName, node, src, dst string) []api.BPFCT {
	t.Helper()
	var all, out []api.BPFCT
	decode(t, mustLumen(t, labName, "--node", node, "bpf", "ct", "list", "-o", "json"), &all)
	for _, e := range all {
		if strings.HasPrefix(e.Direction, "service") && e.Src == src && e.Dst == dst {
			out = append(out, e)
		}
	}
	return out
}

// ctDsts lists the destinations of a node's conntrack entries of one
// direction from src.
func ctDsts(t *testing.T, labName, node, direction, src string) []string {
	t.Helper()
	var all []api.BPFCT
	decode(t, mustLumen(t, labName, "--node", node, "bpf", "ct", "list", "-o", "json"), &all)
	var out []string
	for _, e := range all {
		if e.Direction == direction && e.Src == src {
			out = append(out, e.Dst)
		}
	}
	return out
}

// checkClusterIP drives TCP and UDP over both families to the dual-stack
// service from each client pod and from node n1's own namespace, and
// checks that every backend and nothing else answers, that the client sees
// the frontend as its peer (getpeername for TCP, recvfrom for UDP), and
// which mechanism translated: per-packet DNAT leaves a service conntrack
// entry for the client's socket on its node, socket LB none.
func checkClusterIP(t *testing.T, name string, svc svcInfo, podsPerPacket bool) {
	names := podNames(t, name)
	for _, from := range []struct{ where, node string }{{"tools/cl1", "n1"}, {"tools/cl2", "n2"}, {"node/n1", "n1"}} {
		perPacket := podsPerPacket && !strings.HasPrefix(from.where, "node/")
		c := startClient(t, name, from.where)
		for _, fam := range []int{4, 6} {
			for _, pp := range []struct {
				proto string
				port  uint16
			}{{"tcp", 8080}, {"udp", 5353}} {
				frontend := hostPort(svc.ip(t, fam), pp.port)
				what := fmt.Sprintf("%s -> %s/%s", from.where, frontend, pp.proto)

				// Every backend answers, nothing else does.
				r := c.must("many %s %s 30", pp.proto, frontend)
				if len(r.Fails) > 0 {
					t.Errorf("%s: %d of 30 connections failed: %v", what, len(r.Fails), r.Fails)
				}
				got := countsByPod(names, r.Counts)
				t.Logf("%s: %v", what, got)
				for _, b := range lbBackends {
					if got[b] == 0 {
						t.Errorf("%s: backend %s never answered in 30 connections: %v", what, b, got)
					}
				}
				for p := range got {
					if !strings.HasPrefix(p, "shop/be-") {
						t.Errorf("%s: answered by %s, not a backend", what, p)
					}
				}

				// The peer the socket sees is the frontend.
				d := c.must("dial x %s %s", pp.proto, frontend)
				if d.Peer != frontend {
					t.Errorf("%s: the socket's peer is %s (getpeername/recvfrom), want the frontend %s (backend %s)", what, d.Peer, frontend, whoIs(names, d.Backend))
				}
				if pp.proto != "tcp" {
					continue
				}
				ct := serviceCT(t, name, from.node, d.Local, frontend)
				t.Logf("%s: local %s peer %s backend %s, service conntrack entries %d", what, d.Local, d.Peer, whoIs(names, d.Backend), len(ct))
				switch {
				case perPacket && len(ct) == 0:
					t.Errorf("%s: per-packet load balancing expected, but node %s has no service conntrack entry %s -> %s", what, from.node, d.Local, frontend)
				case !perPacket && len(ct) > 0:
					t.Errorf("%s: socket load balancing expected, but node %s translated per packet: %+v", what, from.node, ct)
				case !perPacket && !strings.HasPrefix(from.where, "node/"):
					// The pod's packets left it addressed to the backend.
					want := podAddr(t, name, whoIs(names, d.Backend), fam, 80)
					if dsts := ctDsts(t, name, from.node, "egress", d.Local); !slices.Contains(dsts, want) {
						t.Errorf("%s: socket LB should have connected the socket to backend %s; node %s tracks %s -> %v", what, want, from.node, d.Local, dsts)
					}
				}
				c.must("close x")
			}
		}
	}
	// The CLI probe agrees (it joins the node's cgroup like a pod).
	for _, target := range []string{hostPort(svc.ip(t, 4), 8080) + "/tcp", hostPort(svc.ip(t, 6), 5353) + "/udp"} {
		if r := lumen(t, name, "lab", "probe", "tools/cl1", target); r.code != 0 {
			t.Errorf("lumen lab probe tools/cl1 %s: exit %d: %s%s", target, r.code, r.stdout, r.stderr)
		}
	}
}

// TestLBSocketClusterIP: socket load balancing (connect, sendmsg, recvmsg,
// getpeername) for pods and the node itself, TCP and UDP, IPv4 and IPv6.
func TestLBSocketClusterIP(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	svc := setupDualStack(t, name)
	checkClusterIP(t, name, svc, false)
}

// TestLBPerPacketClusterIP: with --bpf-lb-sock-hostns-only pods go through
// the per-packet DNAT and reverse NAT of from_container/to_container (the
// node's own namespace keeps socket load balancing).
func TestLBPerPacketClusterIP(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("agentArgs: [\"--bpf-lb-sock-hostns-only\"]\n")))
	svc := setupDualStack(t, name)
	checkClusterIP(t, name, svc, true)
}
