package labtest

// The adversarial lab suite: what a pod can send, with ordinary sockets
// and socket options, to get around policy or load balancing, through
// real agents, veths and kernels. The packet-level twin (every header
// shape, spoofing, fragments out of order) is
// internal/datapath/adversarial_test.go. To add a case, add a subtest to
// TestAdversarialLab (the lab and its policies are shared) or a test with
// its own topology.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab"
)

// adversarialTopology is issue 11's setting: tools/debug and tools/toolbox
// on n1, the shop backends (tier=backend) one on each node.
const adversarialTopology = `
nodes: [{name: n1, zone: zone-a}, {name: n2, zone: zone-b}]
pods:
  - {name: debug, namespace: tools, labels: {app: debug}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp"]}
  - {name: toolbox, namespace: tools, labels: {app: toolbox}, node: n1, ports: ["80/tcp"]}
  - {name: catalog, namespace: shop, labels: {tier: backend, app: catalog}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp"]}
  - {name: catalog2, namespace: shop, labels: {tier: backend, app: catalog}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp"]}
`

// adversarialPolicies: tools/debug accepts the cluster except TCP/81 and
// UDP/80 (ingressDeny); the shop backends accept tools/debug on 81/tcp and
// 80/udp only (examples/policies/03-debug-access.yaml); a UDP ClusterIP in
// front of them.
const adversarialPolicies = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: debug-guard, namespace: tools}
spec:
  endpointSelector: {matchLabels: {app: debug}}
  ingress:
  - fromEntities: [cluster]
  ingressDeny:
  - toPorts:
    - ports:
      - {port: "81", protocol: TCP}
      - {port: "80", protocol: UDP}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: debug-access, namespace: shop}
spec:
  endpointSelector: {matchLabels: {tier: backend}}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: tools, app: debug}
    toPorts:
    - ports:
      - {port: "81", protocol: TCP}
      - {port: "80", protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: catalog}
  ports:
  - {name: dns, port: 5353, targetPort: 80, protocol: UDP}
`

// dstOpts is an 8-byte destination options header (one PadN option), as
// set with IPV6_DSTOPTS; the kernel fills in the next header.
var dstOpts = []byte{0, 0, 1, 4, 0, 0, 0, 0}

// advPod is a lab pod: its namespace and addresses.
type advPod struct {
	netns    string
	ip4, ip6 netip.Addr
}

func (p advPod) addr(family int) netip.Addr {
	if family == 6 {
		return p.ip6
	}
	return p.ip4
}

// dialTCP connects from pod to dst, with IPV6_DSTOPTS/IPV6_HOPOPTS set
// first when opt is not 0, and checks one echo.
func dialTCP(pod advPod, dst netip.AddrPort, opt int) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	if opt != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, opt, string(dstOpts))
			}); err != nil {
				return err
			}
			return serr
		}
	}
	var c net.Conn
	if err := lab.InNamedNS(pod.netns, func() error {
		var err error
		c, err = d.Dial("tcp", dst.String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("adversarial\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := c.Read(got); err != nil {
		return err
	}
	return nil
}

// udpEcho sends a size-byte datagram from pod to dst (resent a few times:
// UDP may be lost) and waits for its echo, whole. It returns the address
// the echo came from.
func udpEcho(pod advPod, dst netip.AddrPort, size int, opt int) (netip.AddrPort, error) {
	var c *net.UDPConn
	if err := lab.InNamedNS(pod.netns, func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil || opt == 0 {
			return err
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, opt, string(dstOpts))
		}); err != nil {
			return err
		}
		return serr
	}); err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*31 + size)
	}
	buf := make([]byte, 65536)
	for range 4 {
		if _, err := c.Write(payload); err != nil {
			return netip.AddrPort{}, err
		}
		_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return netip.AddrPort{}, err
			}
			if bytes.Equal(buf[:n], payload) {
				return netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no echo of a %d-byte datagram: %w", size, context.DeadlineExceeded)
}

// TestAdversarialLab reproduces issue 11 items 1 and 2 in a lab, on both
// families where the issue saw them. Each case fails on the datapath
// before the extension header walk and fragment tracking.
func TestAdversarialLab(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, adversarialTopology))
	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]advPod{}
	for _, p := range st.Pods {
		pods[p.FullName()] = advPod{netns: p.NetNS, ip4: netip.MustParseAddr(p.IPv4), ip6: netip.MustParseAddr(p.IPv6)}
	}
	debug, toolbox, catalog := pods["tools/debug"], pods["tools/toolbox"], pods["shop/catalog"]
	applyYAML(t, name, adversarialPolicies)
	svc := getService(t, name, "shop", "catalog")
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			waitBackends(t, name, node, hostPort(svc.ip(t, fam), 5353), "UDP",
				backendAddrs(t, name, fam, []string{"shop/catalog", "shop/catalog2"}))
		}
	}
	// Both policies are in force once their plain-packet verdicts show.
	waitUntil(t, "the policies to be enforced", func() bool {
		_, errDeny := udpEcho(toolbox, netip.AddrPortFrom(catalog.ip4, 80), 100, 0)
		_, errAllow := udpEcho(debug, netip.AddrPortFrom(catalog.ip4, 80), 100, 0)
		return errDeny != nil && errAllow == nil && dialTCP(toolbox, netip.AddrPortFrom(debug.ip6, 81), 0) != nil
	})

	// Item 1: a destination options or hop-by-hop header must not hide the
	// TCP port from the ingressDeny.
	t.Run("ext-headers-deny", func(t *testing.T) {
		for _, opt := range []struct {
			name string
			opt  int
		}{{"none", 0}, {"IPV6_DSTOPTS", unix.IPV6_DSTOPTS}, {"IPV6_HOPOPTS", unix.IPV6_HOPOPTS}} {
			if err := dialTCP(toolbox, netip.AddrPortFrom(debug.ip6, 81), opt.opt); err == nil {
				t.Errorf("toolbox -> [debug]:81 with %s: connected, want denied", opt.name)
			}
			if err := dialTCP(toolbox, netip.AddrPortFrom(debug.ip6, 80), opt.opt); err != nil {
				t.Errorf("toolbox -> [debug]:80 with %s: %v, want connected (fromEntities cluster)", opt.name, err)
			}
		}
	})
	// Item 1, the other way: allowed IPv6 TCP carrying a destination
	// options header still connects (debug-access allows 81/tcp).
	t.Run("ext-headers-allow", func(t *testing.T) {
		if err := dialTCP(debug, netip.AddrPortFrom(catalog.ip6, 81), unix.IPV6_DSTOPTS); err != nil {
			t.Errorf("debug -> [catalog]:81 with IPV6_DSTOPTS: %v, want connected", err)
		}
		if err := dialTCP(debug, netip.AddrPortFrom(catalog.ip6, 80), unix.IPV6_DSTOPTS); err == nil {
			t.Errorf("debug -> [catalog]:80 with IPV6_DSTOPTS: connected, want denied (not in debug-access)")
		}
	})
	// Item 2: a fragmented datagram gets the verdict of its ports.
	t.Run("fragments-deny", func(t *testing.T) {
		for _, fam := range []int{4, 6} {
			for _, size := range []int{100, 3000} {
				if _, err := udpEcho(toolbox, netip.AddrPortFrom(debug.addr(fam), 80), size, 0); err == nil {
					t.Errorf("IPv%d toolbox -> debug:80/udp %d bytes: echoed, want denied (ingressDeny UDP/80)", fam, size)
				}
			}
		}
	})
	t.Run("fragments-allow", func(t *testing.T) {
		for _, fam := range []int{4, 6} {
			for _, size := range []int{100, 1400, 3000, 8000} {
				if _, err := udpEcho(debug, netip.AddrPortFrom(catalog.addr(fam), 80), size, 0); err != nil {
					t.Errorf("IPv%d debug -> catalog:80/udp %d bytes: %v, want echoed (debug-access)", fam, size, err)
				}
			}
		}
		// With a destination options header in front of the fragments.
		if _, err := udpEcho(debug, netip.AddrPortFrom(catalog.ip6, 80), 3000, unix.IPV6_DSTOPTS); err != nil {
			t.Errorf("IPv6 debug -> catalog:80/udp 3000 bytes with IPV6_DSTOPTS: %v, want echoed", err)
		}
	})
	// Item 2, services: a fragmented datagram to the ClusterIP reaches one
	// backend whole (per-packet load balancing: the test's sockets are not
	// in the node's cgroup) and the reply comes from the frontend.
	t.Run("fragments-service", func(t *testing.T) {
		for _, fam := range []int{4, 6} {
			fe := netip.AddrPortFrom(svc.ip(t, fam), 5353)
			for i := range 6 {
				from, err := udpEcho(debug, fe, 3000, 0)
				if err != nil {
					t.Errorf("IPv%d debug -> %s 3000 bytes (#%d): %v", fam, fe, i, err)
					continue
				}
				if from != fe {
					t.Errorf("IPv%d: echo from %s, want the frontend %s", fam, from, fe)
				}
			}
		}
	})
}
