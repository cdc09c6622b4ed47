package labtest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// Adversarial cases of the overlay and of the host firewall (issue 11,
// items 3 and 4): what a pod, or a machine on the underlay that is not a
// node, can send to get around policy.

const overlayAttackTopology = `
nodes:
  - {name: n1, zone: a}
  - {name: n2, zone: b}
  - {name: n3, zone: c}
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: c, namespace: x, labels: {app: c}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n2, ports: ["80/tcp"]}
  - {name: d, namespace: x, labels: {app: d}, node: n3, ports: ["80/tcp"]}
`

// a accepts its own node (allow-localhost), c, d and the other nodes; b is
// the attacker.
const overlayAttackPolicy = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-trusts-c-d, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: app, operator: In, values: [c, d]}
  - fromEntities: [remote-node]
`

// vxlanFrame is a VXLAN header (RFC 7348, I flag) carrying vni and inner.
func vxlanFrame(vni uint32, inner []byte) []byte {
	h := make([]byte, 8)
	h[0] = 0x08
	binary.BigEndian.PutUint32(h[4:], vni<<8)
	return append(h, inner...)
}

// udpSink collects what arrives on a UDP port in a namespace.
type udpSink struct {
	mu   sync.Mutex
	seen map[string]bool
}

func listenUDPInNS(t *testing.T, nsName string, port int) *udpSink {
	t.Helper()
	var conns []net.PacketConn
	err := lab.InNamedNS(nsName, func() error {
		for _, nw := range []string{"udp4", "udp6"} {
			c, err := net.ListenPacket(nw, ":"+strconv.Itoa(port))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", nsName, err)
	}
	s := &udpSink{seen: map[string]bool{}}
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
		go func(c net.PacketConn) {
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				s.mu.Lock()
				s.seen[string(buf[:n])] = true
				s.mu.Unlock()
			}
		}(c)
	}
	return s
}

func (s *udpSink) got(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[payload]
}

// sendUDPFromNS sends one datagram from a namespace, as a plain socket
// (no privilege a pod would not have).
func sendUDPFromNS(t *testing.T, nsName string, dst netip.AddrPort, payload []byte) {
	t.Helper()
	err := lab.InNamedNS(nsName, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatalf("sending from %s to %s: %v", nsName, dst, err)
	}
}

// dropCount reads a node's lumen_drop_count_total for reason (any direction).
func dropCount(t *testing.T, labName, node, reason string) float64 {
	t.Helper()
	r := lumen(t, labName, "--node", node, "metrics")
	if r.code != 0 {
		return 0
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "lumen_drop_count_total{") || !strings.Contains(line, `reason="`+reason+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// injection is one forged VXLAN packet and where it must be stopped.
type injection struct {
	name      string
	fromNS    string // the sender's namespace
	vni       uint32
	innerSrc  netip.Addr
	innerDst  netip.Addr
	dropNode  string // the node that must drop it ...
	dropWhy   string // ... with this reason
	vxlanDest netip.Addr
}

// expectBlocked sends inj until the expected node counts the drop; the
// payload reaching the target pod fails the test.
func expectBlocked(t *testing.T, labName string, sink *udpSink, inj injection) {
	t.Helper()
	base := dropCount(t, labName, inj.dropNode, inj.dropWhy)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		payload := fmt.Sprintf("inject %s %d %d", inj.name, time.Now().UnixNano(), i)
		inner := datapath.Packet{
			SrcMAC: net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0x02, 0xee, 0, 0, 0, 2},
			Src: inj.innerSrc, Dst: inj.innerDst, Proto: 17, SrcPort: 5353, DstPort: 9999, TTL: 64,
			Payload: []byte(payload),
		}.Bytes()
		sendUDPFromNS(t, inj.fromNS, netip.AddrPortFrom(inj.vxlanDest, 8472), vxlanFrame(inj.vni, inner))
		time.Sleep(150 * time.Millisecond)
		if sink.got(payload) {
			t.Errorf("%s: the forged packet (inner %s -> %s, VNI %d) reached the pod", inj.name, inj.innerSrc, inj.innerDst, inj.vni)
			return
		}
		if dropCount(t, labName, inj.dropNode, inj.dropWhy) > base {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: neither delivered nor counted as %q on %s", inj.name, inj.dropWhy, inj.dropNode)
			return
		}
	}
}

func podByName(t *testing.T, st *lab.Report, name string) lab.PodReport {
	t.Helper()
	for _, p := range st.Pods {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pod %s in %+v", name, st.Pods)
	return lab.PodReport{}
}

func endpointIdentity(t *testing.T, labName, node, pod string) uint32 {
	t.Helper()
	var eps []api.Endpoint
	decode(t, mustLumen(t, labName, "--node", node, "endpoint", "list", "-o", "json"), &eps)
	for _, ep := range eps {
		if ep.PodName == pod {
			return ep.Identity
		}
	}
	t.Fatalf("no endpoint %s on %s", pod, node)
	return 0
}

// TestOverlayInjection: a pod on another node (and a machine on the
// underlay) sends plain UDP to a node's VXLAN port, with an inner source
// the target trusts: the node's own address (host identity, allowed by
// default-deny policies), a pod on that node, a pod on a third node.
// Nothing of it may reach the pod; the tunnel itself keeps working.
func TestOverlayInjection(t *testing.T) {
	name := newLab(t)
	st := up(t, name, writeTopology(t, overlayAttackTopology), "--routing", "vxlan")
	a, b, c, d := podByName(t, st, "a"), podByName(t, st, "b"), podByName(t, st, "c"), podByName(t, st, "d")
	aIP4, aIP6 := netip.MustParseAddr(a.IPv4), netip.MustParseAddr(a.IPv6)
	n1v4, n1v6 := lab.NodeIPv4(0).Addr(), lab.NodeIPv6(0).Addr()
	lumenStdin(t, name, overlayAttackPolicy, "apply", "-f", "-")

	// The policy is in force and the tunnel works: d (n3) and n2's host
	// reach a through the overlay, b does not.
	waitProbe(t, name, "x/d", "x/a:80/tcp", true)
	waitProbe(t, name, "x/b", "x/a:80/tcp", false)
	waitUntil(t, "n2's host to a through the tunnel", func() bool { return probeFromNS(t, labpath.NodeNS(name, "n2"), a.IPv4+":80") })

	// n1 knows the other nodes' addresses as theirs (both families).
	var rows []api.BPFIPCache
	decode(t, mustLumen(t, name, "--node", "n1", "bpf", "ipcache", "list", "-o", "json"), &rows)
	owners := map[string]string{}
	for _, r := range rows {
		owners[r.Prefix] = r.NodeOf
	}
	for p, want := range map[string]string{"10.99.0.2/32": "10.99.0.2", "fd00:10:99::2/128": "10.99.0.2", "10.99.0.3/32": "10.99.0.3", "10.99.0.1/32": ""} {
		if owners[p] != want {
			t.Errorf("n1's ipcache: %s is node %q's, want %q", p, owners[p], want)
		}
	}

	sink := listenUDPInNS(t, a.NetNS, 9999)
	cID, dID := endpointIdentity(t, name, "n1", "c"), endpointIdentity(t, name, "n3", "d")
	// A legitimate datagram d -> a:9999 arrives (the sink works).
	waitUntil(t, "d's datagram to a:9999", func() bool {
		sendUDPFromNS(t, d.NetNS, netip.AddrPortFrom(aIP4, 9999), []byte("legit d"))
		time.Sleep(100 * time.Millisecond)
		return sink.got("legit d")
	})

	world := addWorld(t, name, "vx", 200, 3)
	for _, inj := range []injection{
		// From a pod: its node refuses to send pod traffic to a VXLAN port.
		{name: "pod/host-v4", fromNS: b.NetNS, vni: 1, innerSrc: n1v4, innerDst: aIP4},
		{name: "pod/host-v6", fromNS: b.NetNS, vni: 1, innerSrc: n1v6, innerDst: aIP6},
		{name: "pod/local-pod", fromNS: b.NetNS, vni: cID, innerSrc: netip.MustParseAddr(c.IPv4), innerDst: aIP4},
		{name: "pod/third-node-pod", fromNS: b.NetNS, vni: dID, innerSrc: netip.MustParseAddr(d.IPv4), innerDst: aIP4},
	} {
		inj.vxlanDest, inj.dropNode, inj.dropWhy = n1v4, "n2", "Encapsulation traffic is prohibited"
		expectBlocked(t, name, sink, inj)
	}
	for _, inj := range []injection{
		// From a machine on the underlay that is not a node: the target
		// node accepts encapsulated traffic from known nodes only.
		{name: "world/host-v4", fromNS: world.netns, vni: 1, innerSrc: n1v4, innerDst: aIP4},
		{name: "world/host-v6", fromNS: world.netns, vni: 1, innerSrc: n1v6, innerDst: aIP6},
		{name: "world/local-pod", fromNS: world.netns, vni: cID, innerSrc: netip.MustParseAddr(c.IPv4), innerDst: aIP4},
		{name: "world/third-node-pod", fromNS: world.netns, vni: dID, innerSrc: netip.MustParseAddr(d.IPv4), innerDst: aIP4},
	} {
		inj.vxlanDest, inj.dropNode, inj.dropWhy = n1v4, "n1", "Unknown sender"
		expectBlocked(t, name, sink, inj)
	}

	// Hubble names the drops.
	for node, reason := range map[string]string{"n1": "UNKNOWN_SENDER", "n2": "ENCAPSULATION_TRAFFIC_IS_PROHIBITED"} {
		waitUntil(t, "Hubble on "+node+" showing "+reason, func() bool {
			r := lumen(t, name, "--node", node, "observe", "--drop-reason", reason, "--all", "-o", "json")
			return r.code == 0 && strings.Contains(r.stdout, reason)
		})
	}

	// The tunnel still carries legitimate traffic after all that.
	waitProbe(t, name, "x/d", "x/a:80/tcp", true)
}

const hostFWSameNodeTopology = `
nodes:
  - {name: n1, zone: a, labels: {role: control}}
  - {name: n2, zone: b, labels: {role: worker}}
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n2, ports: ["80/tcp"]}
`

// n1's host accepts the other nodes on any port and pod a on 9998 only.
const hostFWSameNodePolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: control-host-fw
spec:
  nodeSelector:
    matchLabels:
      role: control
  ingress:
  - fromEntities: [remote-node]
  - fromEndpoints:
    - matchLabels: {app: a}
    toPorts:
    - ports:
      - {port: "9998", protocol: TCP}
`

// TestHostFirewallSameNode: the host firewall's ingress policy holds for
// the node's own pods too (they reached every port: the pod-to-host path
// skipped it), on every address of the node, and replies of what it
// allows still work.
func TestHostFirewallSameNode(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, hostFWSameNodeTopology))
	serveOnNode(t, name, "n1", "9998,9999")
	n1 := labpath.NodeNS(name, "n1")
	// Another address of n1, not its underlay one: it is the host too.
	extra := "10.123.45.1"
	if err := lab.InNamedNS(n1, func() error {
		return exec.Command("ip", "addr", "add", extra+"/32", "dev", "lo").Run()
	}); err != nil {
		t.Fatal(err)
	}
	waitProbe(t, name, "x/a", "10.99.0.1:9999/tcp", true)
	waitProbe(t, name, "x/b", "10.99.0.1:9999/tcp", true)

	lumenStdin(t, name, hostFWSameNodePolicy, "apply", "-f", "-")
	// The case: pods on n2 are blocked from n1:9999 ...
	waitProbe(t, name, "x/b", "10.99.0.1:9999/tcp", false)
	// ... and so is n1's own pod, on each of n1's addresses.
	waitProbe(t, name, "x/a", "10.99.0.1:9999/tcp", false)
	waitProbe(t, name, "x/a", "[fd00:10:99::1]:9999/tcp", false)
	waitProbe(t, name, "x/a", extra+":9999/tcp", false)
	// What the policy allows a connects to, replies included.
	waitProbe(t, name, "x/a", "10.99.0.1:9998/tcp", true)
	waitProbe(t, name, "x/a", "[fd00:10:99::1]:9998/tcp", true)
	// The other node is still allowed (host to host).
	if !probeFromNS(t, labpath.NodeNS(name, "n2"), "10.99.0.1:9999") {
		t.Error("n2's host to n1:9999: not connected, the policy allows remote nodes")
	}
	x := explain(t, name, "x/a", "10.99.0.1:9999/tcp")
	if x["allowed"] != false {
		t.Errorf("explain a -> host n1:9999: %s", mustJSON(x))
	}
	// The flows agree with explain: a policy verdict, dropped (they
	// showed to-stack FORWARDED without a verdict).
	waitUntil(t, "a dropped policy verdict for a -> n1:9999 in Hubble", func() bool {
		r := lumen(t, name, "--node", "n1", "observe", "--type", "policy-verdict", "--from-pod", "x/a", "--port", "9999", "--verdict", "DROPPED", "--all", "-o", "json")
		return r.code == 0 && strings.Contains(r.stdout, "DROPPED")
	})

	mustLumen(t, name, "delete", "ccnp", "control-host-fw")
	waitProbe(t, name, "x/a", "10.99.0.1:9999/tcp", true)

	// The other direction: n1's egress policy holds for its own pods too.
	aAddr, bAddr := podAddr(t, name, "x/a", 4, 80), podAddr(t, name, "x/b", 4, 80)
	waitUntil(t, "n1 to its pod a", func() bool { return probeFromNS(t, n1, aAddr) })
	lumenStdin(t, name, hostFWEgressPolicy, "apply", "-f", "-")
	waitUntil(t, "n1's egress policy for its own pod", func() bool { return !probeFromNS(t, n1, aAddr) })
	if !probeFromNS(t, n1, bAddr) {
		t.Error("n1 to pod b (allowed by its egress policy): not connected")
	}
	// Replies of what n1 accepts are not n1's new connections.
	waitProbe(t, name, "x/a", "10.99.0.1:9999/tcp", true)
	mustLumen(t, name, "delete", "ccnp", "control-host-egress")
	waitUntil(t, "n1 to its pod a again", func() bool { return probeFromNS(t, n1, aAddr) })
}

// n1's host may open connections to the other nodes and to pod b only.
const hostFWEgressPolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: control-host-egress
spec:
  nodeSelector:
    matchLabels:
      role: control
  egress:
  - toEntities: [remote-node]
  - toEndpoints:
    - matchLabels: {app: b}
`
