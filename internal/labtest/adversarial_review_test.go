package labtest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// The second adversarial review (issue 11), in a lab: the kernel's side of
// what the golden tests in internal/datapath/adversarial_review_test.go
// check on the programs alone.

const reviewTopology = `
nodes:
  - {name: n1}
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n1, ports: ["80/tcp"]}
  - {name: c, namespace: x, labels: {app: c}, node: n1, ports: ["80/tcp"]}
`

// a accepts c only; b is the attacker.
const reviewPolicy = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-trusts-c, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: c}
`

// sendRawFromPod sends an Ethernet frame as is out of the pod's interface
// (a packet socket: what a pod with CAP_NET_RAW can do).
func sendRawFromPod(t *testing.T, nsName string, frame []byte) {
	t.Helper()
	err := lab.InNamedNS(nsName, func() error {
		ifi, err := net.InterfaceByName(lab.PodInterface)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		proto := binary.BigEndian.Uint16(frame[12:])
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(proto)})
	})
	if err != nil {
		t.Fatalf("sending a raw frame from %s: %v", nsName, err)
	}
}

// podGateway returns the pod's interface MAC and its IPv4 gateway's (the
// permanent neighbour entry the CNI plugin writes).
func podGateway(t *testing.T, nsName string) (own, gw net.HardwareAddr) {
	t.Helper()
	err := lab.InNamedNS(nsName, func() error {
		l, err := netlink.LinkByName(lab.PodInterface)
		if err != nil {
			return err
		}
		own = l.Attrs().HardwareAddr
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if len(n.HardwareAddr) == 6 {
				gw = n.HardwareAddr
				return nil
			}
		}
		return fmt.Errorf("no IPv4 neighbour on %s", lab.PodInterface)
	})
	if err != nil {
		t.Fatalf("pod %s: %v", nsName, err)
	}
	return own, gw
}

// A pod sends an IPv4 datagram with another pod's source address behind
// two VLAN priority tags (802.1ad VID 0, 802.1Q VID 0). The host-side veth
// pops the outer tag before TCX; from_container then saw a frame of
// ethertype 802.1Q and let it through as "not IP"; the stack stripped the
// inner priority tag and routed the inner packet to pod a, whose ingress
// took it as coming from the forged source (c, trusted). Now dropped as
// an unsupported L3 protocol at from_container. Then the same attacker
// tries the datapath's marks on its socket (holds).
func TestReviewStackedVLANLab(t *testing.T) {
	name := newLab(t)
	st := up(t, name, writeTopology(t, reviewTopology))
	a, b, c := podByName(t, st, "a"), podByName(t, st, "b"), podByName(t, st, "c")
	aIP4, cIP4 := netip.MustParseAddr(a.IPv4), netip.MustParseAddr(c.IPv4)
	lumenStdin(t, name, reviewPolicy, "apply", "-f", "-")
	waitProbe(t, name, "x/c", "x/a:80/tcp", true)
	waitProbe(t, name, "x/b", "x/a:80/tcp", false)

	sink := listenUDPInNS(t, a.NetNS, 9999)
	waitUntil(t, "c's datagram to a:9999", func() bool {
		sendUDPFromNS(t, c.NetNS, netip.AddrPortFrom(aIP4, 9999), []byte("legit c"))
		time.Sleep(100 * time.Millisecond)
		return sink.got("legit c")
	})

	own, gw := podGateway(t, b.NetNS)
	frame := func(payload string, tags ...uint16) []byte {
		f := datapath.Packet{SrcMAC: own, DstMAC: gw, Src: cIP4, Dst: aIP4, Proto: 17, SrcPort: 5353, DstPort: 9999,
			TTL: 64, Payload: []byte(payload)}.Bytes()
		for _, tpid := range tags {
			f = append(append(append([]byte(nil), f[:12]...), byte(tpid>>8), byte(tpid), 0, 0), f[12:]...)
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		tags   []uint16
		reason string
	}{
		// The same forgery untagged: the source check (control).
		{"untagged", nil, "Invalid source ip"},
		// One tag: popped before TCX, the packet is checked as IPv4.
		{"one-tag", []uint16{0x8100}, "Invalid source ip"},
		{"two-tags", []uint16{0x8100, 0x88a8}, "Unsupported L3 protocol"},
		{"two-802.1q-tags", []uint16{0x8100, 0x8100}, "Unsupported L3 protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := dropCount(t, name, "n1", tc.reason)
			deadline := time.Now().Add(30 * time.Second)
			for i := 0; ; i++ {
				payload := fmt.Sprintf("forged %s %d", tc.name, i)
				sendRawFromPod(t, b.NetNS, frame(payload, tc.tags...))
				time.Sleep(150 * time.Millisecond)
				if sink.got(payload) {
					t.Fatalf("the forged datagram (source c, from b, tags %#x) reached a", tc.tags)
				}
				if dropCount(t, name, "n1", tc.reason) > base {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("neither delivered nor counted as %q", tc.reason)
				}
			}
		})
	}

	// The marks the programs hand state over in, set by pod b on its
	// socket (SO_MARK; root in its namespace): the kernel clears a mark
	// when the packet leaves the pod's namespace, so none of them opens a.
	cID := endpointIdentity(t, name, "n1", "c")
	for _, m := range []struct {
		name string
		mark uint32
	}{
		{"hairpin", 0x4c480000}, {"revnat", 0x4c4e0001}, {"dsr", 0x4c440000}, {"identity-of-c", 0xa4000000 | cID},
	} {
		d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(m.mark)) }); err != nil {
				return err
			}
			if serr != nil {
				t.Fatalf("SO_MARK %#x in pod b: %v", m.mark, serr)
			}
			return nil
		}}
		err := lab.InNamedNS(b.NetNS, func() error {
			c, err := d.Dial("tcp", netip.AddrPortFrom(aIP4, 80).String())
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Errorf("pod b with mark %s (%#x) connected to a:80, which only trusts c", m.name, m.mark)
		}
	}
}

// hostSideLinkLocal returns the IPv6 link-local address of the node's end
// of the pod's veth (the device whose MAC is the pod's gateway's).
func hostSideLinkLocal(t *testing.T, labName, node string, gw net.HardwareAddr) netip.Addr {
	t.Helper()
	var ll netip.Addr
	waitUntil(t, "the host-side veth's link-local address", func() bool {
		_ = lab.InNamedNS(labpath.NodeNS(labName, node), func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if l.Attrs().HardwareAddr.String() != gw.String() {
					continue
				}
				addrs, _ := netlink.AddrList(l, netlink.FAMILY_V6)
				for _, a := range addrs {
					// Still tentative (DAD): it answers no neighbour solicitation.
					if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
						ll = ip
					}
				}
			}
			return nil
		})
		return ll.IsValid()
	})
	return ll
}

// A pod reached any TCP service of its node through the node's link-local
// address: link-scoped IPv6 went to the stack untouched, around the host
// firewall that denies the pod the same port on the node's address.
func TestReviewLinkLocalHostFirewall(t *testing.T) {
	name := newLab(t)
	st := up(t, name, writeTopology(t, `
nodes:
  - {name: n1, zone: a, labels: {role: worker}}
pods:
  - {name: b, namespace: x, labels: {app: b}, node: n1, ports: ["80/tcp"]}
`))
	b := podByName(t, st, "b")
	serveOnNode(t, name, "n1", "8081")
	waitProbe(t, name, "x/b", "10.99.0.1:8081/tcp", true)
	lumenStdin(t, name, hostFWPolicy, "apply", "-f", "-")
	waitProbe(t, name, "x/b", "10.99.0.1:8081/tcp", false)

	_, gw := podGateway(t, b.NetNS)
	ll := hostSideLinkLocal(t, name, "n1", gw)
	target := netip.AddrPortFrom(ll.WithZone(lab.PodInterface), 8081)
	base := dropCount(t, name, "n1", "Invalid source ip")
	// Until the SYN is seen dropped (neighbour discovery may take a while
	// on a loaded machine), no attempt may connect.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := lab.InNamedNS(b.NetNS, func() error {
			c, err := net.DialTimeout("tcp", target.String(), 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Fatalf("pod b connected to its node's %s around the host firewall", target)
		}
		if dropCount(t, name, "n1", "Invalid source ip") > base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the link-local SYN was never counted as an invalid source (last: %v)", err)
		}
	}
}

// sendRawIPFromNS sends an IPv4 packet as is (IP_HDRINCL: any source).
func sendRawIPFromNS(t *testing.T, nsName string, pkt []byte) {
	t.Helper()
	err := lab.InNamedNS(nsName, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: [4]byte(pkt[16:20])})
	})
	if err != nil {
		t.Fatalf("sending a raw IPv4 packet from %s: %v", nsName, err)
	}
}

// In tunnel mode a machine on the underlay (routes to the pod CIDRs
// through their nodes, as addWorld gives it) sends a plain UDP datagram
// to pod a with the source of pod d (n3), whom a trusts: the ipcache gave
// it d's identity. Only the overlay carries another node's pods.
func TestReviewPlainTunnelSourceLab(t *testing.T) {
	name := newLab(t)
	st := up(t, name, writeTopology(t, overlayAttackTopology), "--routing", "vxlan")
	a, d := podByName(t, st, "a"), podByName(t, st, "d")
	aIP4, dIP4 := netip.MustParseAddr(a.IPv4), netip.MustParseAddr(d.IPv4)
	lumenStdin(t, name, overlayAttackPolicy, "apply", "-f", "-")
	waitProbe(t, name, "x/d", "x/a:80/tcp", true)
	sink := listenUDPInNS(t, a.NetNS, 9999)
	waitUntil(t, "d's datagram to a:9999", func() bool {
		sendUDPFromNS(t, d.NetNS, netip.AddrPortFrom(aIP4, 9999), []byte("legit d"))
		time.Sleep(100 * time.Millisecond)
		return sink.got("legit d")
	})
	world := addWorld(t, name, "pl", 201, 3)
	base := dropCount(t, name, "n1", "Invalid source ip")
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		payload := fmt.Sprintf("plain forged %d", i)
		frame := datapath.Packet{SrcMAC: make(net.HardwareAddr, 6), DstMAC: make(net.HardwareAddr, 6), Src: dIP4, Dst: aIP4,
			Proto: 17, SrcPort: 5353, DstPort: 9999, TTL: 64, Payload: []byte(payload)}.Bytes()
		sendRawIPFromNS(t, world.netns, frame[14:])
		time.Sleep(150 * time.Millisecond)
		if sink.got(payload) {
			t.Fatalf("a datagram from the underlay with d's source (%s), not through the overlay, reached a", dIP4)
		}
		if dropCount(t, name, "n1", "Invalid source ip") > base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("neither delivered nor counted as an invalid source on n1")
		}
	}
}

// With route_localnet=1 on the node (kube-proxy sets it), a pod's raw
// frame to 127.0.0.1 through its gateway reached a UDP service bound to
// the node's loopback only (CVE-2020-8558). Dropped by from_container.
func TestReviewLoopbackFromPodLab(t *testing.T) {
	name := newLab(t)
	st := up(t, name, writeTopology(t, reviewTopology))
	b := podByName(t, st, "b")
	node := labpath.NodeNS(name, "n1")
	var conn net.PacketConn
	err := lab.InNamedNS(node, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/route_localnet", []byte("1"), 0o644); err != nil {
			return err
		}
		var err error
		conn, err = net.ListenPacket("udp4", "127.0.0.1:18081")
		return err
	})
	if err != nil {
		t.Fatalf("node n1: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	own, gw := podGateway(t, b.NetNS)
	base := dropCount(t, name, "n1", "Invalid packet")
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		payload := fmt.Sprintf("to loopback %d", i)
		sendRawFromPod(t, b.NetNS, datapath.Packet{SrcMAC: own, DstMAC: gw, Src: netip.MustParseAddr(b.IPv4),
			Dst: netip.MustParseAddr("127.0.0.1"), Proto: 17, SrcPort: 5353, DstPort: 18081, TTL: 64, Payload: []byte(payload)}.Bytes())
		select {
		case p := <-got:
			t.Fatalf("pod b reached the node's 127.0.0.1:18081 (%q)", p)
		case <-time.After(150 * time.Millisecond):
		}
		if dropCount(t, name, "n1", "Invalid packet") > base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("neither delivered nor counted as an invalid packet on n1")
		}
	}
}
