package labtest

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// remoteNodePortService: NodePorts whose only backends are n2's pods, so
// that every connection to n1's node port goes to another node.
const remoteNodePortService = `apiVersion: v1
kind: Service
metadata: {name: np-remote, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  selector: {side: b}
  ports:
  - {name: http, port: 8080, targetPort: 80, nodePort: 30085, protocol: TCP}
  - {name: dns, port: 5353, targetPort: 80, nodePort: 30056, protocol: UDP}
`

var remoteBackends = []string{"shop/be-b1", "shop/be-b2"}

// setupRemoteNodePort applies the services and waits until n1 serves them.
func setupRemoteNodePort(t *testing.T, name string) {
	t.Helper()
	applyYAML(t, name, nodePortServices+"---\n"+remoteNodePortService)
	for _, fam := range []int{4, 6} {
		ip := nodeIP(t, name, "n1", fam)
		waitBackends(t, name, "n1", hostPort(ip, 30085), "TCP", backendAddrs(t, name, fam, remoteBackends))
		waitBackends(t, name, "n1", hostPort(ip, 30056), "UDP", backendAddrs(t, name, fam, remoteBackends))
		waitBackends(t, name, "n1", hostPort(ip, 30080), "TCP", backendAddrs(t, name, fam, lbBackends))
	}
}

// expectAnswers runs n connections from c and checks that exactly the pods
// of want answered, each at least once, all from the address dialed (the
// helper fails a connection whose answer comes from elsewhere).
func expectAnswers(t *testing.T, c *lbClient, names map[string]string, proto, target string, n int, want []string) {
	t.Helper()
	what := fmt.Sprintf("%s -> %s/%s", c.where, target, proto)
	r := c.must("many %s %s %d", proto, target, n)
	if len(r.Fails) > 0 {
		t.Errorf("%s: %d of %d connections failed: %v", what, len(r.Fails), n, r.Fails)
	}
	got := countsByPod(names, r.Counts)
	t.Logf("%s: %v", what, got)
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("%s: answered by %v, want each of %v", what, keys, want)
	}
}

func clientAddr(t *testing.T, name, client string, family int) netip.Addr {
	t.Helper()
	for _, c := range status(t, name).Clients {
		if c.Name == client {
			if a, ok := c.Addr(family); ok {
				return a
			}
		}
	}
	t.Fatalf("no client %s with an IPv%d address", client, family)
	return netip.Addr{}
}

// TestLBNodePortDSR: with --bpf-lb-mode=dsr an external client reaching
// n1's node port gets its answers from backends on n2 that see the
// client's own address, and the answers go from n2 straight to the client
// (captured on the underlay), never through n1, which keeps no SNAT state.
// Backends on n1 and externalTrafficPolicy Local work as before.
func TestLBNodePortDSR(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology(`agentArgs: ["--bpf-lb-mode=dsr"]`+"\n")))
	setupRemoteNodePort(t, name)
	names := podNames(t, name)
	ext := startClient(t, name, "client/ext")
	under := labpath.UnderlayNS(name)
	toN1, toN2 := startCapture(t, under, "to-n1"), startCapture(t, under, "to-n2")
	// What the backends receive, inside their namespaces.
	inPods := []*capture{startCapture(t, labpath.PodNS(name, "n2", "be-b1"), "eth0"), startCapture(t, labpath.PodNS(name, "n2", "be-b2"), "eth0")}

	for _, fam := range []int{4, 6} {
		n1 := nodeIP(t, name, "n1", fam)
		client := clientAddr(t, name, "ext", fam)
		tcpFE, udpFE := hostPort(n1, 30085), hostPort(n1, 30056)
		expectAnswers(t, ext, names, "tcp", tcpFE, 20, remoteBackends)
		expectAnswers(t, ext, names, "udp", udpFE, 20, remoteBackends)
		// The backends see the client itself, not n1.
		for _, c := range []struct{ proto, target string }{{"tcp", tcpFE}, {"udp", udpFE}} {
			r := ext.must("whoispeer %s %s", c.proto, c.target)
			seen, err := netip.ParseAddrPort(r.Seen)
			if err != nil || seen.Addr() != client {
				t.Errorf("IPv%d %s %s: the backend sees the client at %q, want the client's address %s (DSR keeps it)", fam, c.proto, c.target, r.Seen, client)
			}
			if r.Peer != c.target {
				t.Errorf("IPv%d %s: the answer came from %s, want the node port %s", fam, c.proto, r.Peer, c.target)
			}
		}
		// Backends on n1 and Local policy are unaffected.
		expectAnswers(t, ext, names, "tcp", hostPort(n1, 30080), 20, lbBackends)
		expectAnswers(t, ext, names, "tcp", hostPort(n1, 30081), 10, []string{"shop/be-a1"})
	}

	// n1 translated no source; n2 knows the flows' frontends.
	client4, client6 := clientAddr(t, name, "ext", 4), clientAddr(t, name, "ext", 6)
	snat, err := datapath.LoadSNAT(labpath.NodeBPFDir(name, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snat {
		if c := e.Client.Addr(); c == client4 || c == client6 {
			t.Errorf("n1 has a SNAT flow for the external client in DSR mode: %+v", e)
		}
	}
	flows, err := datapath.LoadDSR(labpath.NodeBPFDir(name, "n2"))
	if err != nil {
		t.Fatal(err)
	}
	fronts := map[netip.AddrPort]bool{}
	for _, f := range flows {
		if c := f.Client.Addr(); c == client4 || c == client6 {
			fronts[f.Frontend] = true
		}
	}
	for _, fam := range []int{4, 6} {
		n1 := nodeIP(t, name, "n1", fam)
		for _, port := range []uint16{30085, 30056} {
			if !fronts[netip.AddrPortFrom(n1, port)] {
				t.Errorf("n2 has no DSR flow of the external client with frontend %s (has %v)", netip.AddrPortFrom(n1, port), slices.Collect(maps.Keys(fronts)))
			}
		}
	}

	// The wire: n1's SYNs carry the frontend option to n2; n2 sends the
	// answers from n1's node port to the client; n2's pods send nothing
	// to n1.
	n2Frames, n1Frames := toN2.stop(), toN1.stop()
	bAddrs := map[netip.Addr]bool{}
	for _, p := range status(t, name).Pods {
		if p.Node == "n2" {
			bAddrs[netip.MustParseAddr(p.IPv4)] = true
			bAddrs[netip.MustParseAddr(p.IPv6)] = true
		}
	}
	for _, fam := range []int{4, 6} {
		n1, client := nodeIP(t, name, "n1", fam), clientAddr(t, name, "ext", fam)
		var withOption, direct int
		for _, f := range n2Frames {
			switch {
			case f.outgoing && f.dsrOption == netip.AddrPortFrom(n1, 30085) && f.src.Addr() == client:
				withOption++
			case !f.outgoing && f.src == netip.AddrPortFrom(n1, 30085) && f.dst.Addr() == client:
				direct++
			}
		}
		if withOption == 0 {
			t.Errorf("IPv%d: no packet to n2 carried the DSR option with frontend %s", fam, netip.AddrPortFrom(n1, 30085))
		}
		if direct == 0 {
			t.Errorf("IPv%d: no answer left n2 from %s to the client %s", fam, netip.AddrPortFrom(n1, 30085), client)
		}
		t.Logf("IPv%d on n2's underlay port: %d packets with the option in, %d answers straight to the client out", fam, withOption, direct)
	}
	// The pods got IPv4 SYNs with the option (and answered them: their
	// kernels ignore it), IPv6 packets without the extension header.
	var podOpt4, podOpt6, podFromClient6 int
	for _, c := range inPods {
		for _, f := range c.stop() {
			if f.outgoing {
				continue
			}
			switch {
			case f.dsrOption.IsValid() && f.dsrOption.Addr().Is4():
				podOpt4++
			case f.dsrOption.IsValid():
				podOpt6++
			case f.src.Addr() == client6:
				podFromClient6++
			}
		}
	}
	if podOpt4 == 0 || podOpt6 != 0 || podFromClient6 == 0 {
		t.Errorf("in the backends: %d IPv4 packets with the DSR option (want some), %d IPv6 packets with the DSR header (want none), %d IPv6 packets from the client (want some)", podOpt4, podOpt6, podFromClient6)
	}
	for _, f := range n1Frames {
		if bAddrs[f.src.Addr()] {
			t.Errorf("a packet from n2's pod %s went to n1 (%s -> %s): replies must not return through n1", f.src.Addr(), f.src, f.dst)
			break
		}
	}
}

// TestLBNodePortXDP: with --bpf-lb-acceleration=native an external client
// reaches backends on n2 through n1's node ports, and n1's XDP program
// (not tc) translated both directions: its counters grew by at least one
// packet per connection each way. The lab gives the underlay ends of the
// nodes' veths an XDP program, without which the XDP_TX frames would be
// lost.
func TestLBNodePortXDP(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology(`agentArgs: ["--bpf-lb-acceleration=native"]`+"\n")))
	setupRemoteNodePort(t, name)
	names := podNames(t, name)
	ext := startClient(t, name, "client/ext")
	bpffs := labpath.NodeBPFDir(name, "n1")

	before, err := datapath.LoadXDPStats(bpffs)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	conns := 0
	for _, fam := range []int{4, 6} {
		n1 := nodeIP(t, name, "n1", fam)
		expectAnswers(t, ext, names, "tcp", hostPort(n1, 30085), n, remoteBackends)
		expectAnswers(t, ext, names, "udp", hostPort(n1, 30056), n, remoteBackends)
		conns += 2 * n
	}
	after, err := datapath.LoadXDPStats(bpffs)
	if err != nil {
		t.Fatal(err)
	}
	fwd := after.ForwardTX.Packets + after.ForwardRedirect.Packets - before.ForwardTX.Packets - before.ForwardRedirect.Packets
	rev := after.ReplyTX.Packets + after.ReplyRedirect.Packets - before.ReplyTX.Packets - before.ReplyRedirect.Packets
	t.Logf("n1's XDP program: %d packets to backends, %d answers to the client, for %d connections (before %+v, after %+v)", fwd, rev, conns, before, after)
	if fwd < uint64(conns) || rev < uint64(conns) {
		t.Errorf("n1's XDP counters grew by %d forwarded and %d reply packets for %d connections: the XDP path did not carry them", fwd, rev, conns)
	}
	// Local backends still go through tc, through XDP_PASS.
	expectAnswers(t, ext, names, "tcp", hostPort(nodeIP(t, name, "n1", 4), 30081), 5, []string{"shop/be-a1"})
	if st, err := datapath.LoadXDPStats(bpffs); err != nil || st.ToTC.Packets <= after.ToTC.Packets {
		t.Errorf("n1's XDP counters after connections to a local backend: %+v (%v), want packets left to tc", st, err)
	}
}

// capFrame is what the tests need of a captured frame.
type capFrame struct {
	outgoing  bool // sent out of the port (towards the node), else received from it
	proto     uint8
	src, dst  netip.AddrPort
	dsrOption netip.AddrPort // the frontend in Lumen's DSR IPv4 option or IPv6 destination option
}

// capture records the IP frames of one interface with a packet socket.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames []capFrame
	done   chan struct{}
	quit   chan struct{}
	once   sync.Once
}

// startCapture opens a packet socket on ifName in namespace nsName; stop
// (or the test's end) closes it.
func startCapture(t *testing.T, nsName, ifName string) *capture {
	t.Helper()
	c := &capture{fd: -1, done: make(chan struct{}), quit: make(chan struct{})}
	proto := int(htons(unix.ETH_P_ALL))
	err := lab.InNamedNS(nsName, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capturing on %s in %s: %v", ifName, nsName, err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	go c.loop()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 256) // headers are enough; the rest is truncated
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if err != nil {
			continue // timeout: look at quit again
		}
		sll, ok := from.(*unix.SockaddrLinklayer)
		if !ok {
			continue
		}
		f, ok := parseCapFrame(buf[:min(n, len(buf))])
		if !ok {
			continue
		}
		f.outgoing = sll.Pkttype == unix.PACKET_OUTGOING
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// stop ends the capture and returns the frames seen.
func (c *capture) stop() []capFrame {
	c.once.Do(func() {
		close(c.quit)
		<-c.done
		unix.Close(c.fd)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseCapFrame reads addresses, ports and Lumen's DSR option of a
// TCP/UDP frame.
func parseCapFrame(b []byte) (capFrame, bool) {
	var f capFrame
	if len(b) < 14 {
		return f, false
	}
	var l4 int
	var src, dst netip.Addr
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		if len(b) < 34 {
			return f, false
		}
		ihl := int(b[14]&0xf) * 4
		f.proto = b[23]
		src, dst = netip.AddrFrom4([4]byte(b[26:30])), netip.AddrFrom4([4]byte(b[30:34]))
		l4 = 14 + ihl
		if ihl >= 28 && len(b) >= 42 && b[34] == 0x9a && b[35] == 8 {
			f.dsrOption = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[38:42])), binary.BigEndian.Uint16(b[36:]))
		}
	case 0x86dd:
		if len(b) < 54 {
			return f, false
		}
		f.proto = b[20]
		src, dst = netip.AddrFrom16([16]byte(b[22:38])), netip.AddrFrom16([16]byte(b[38:54]))
		l4 = 54
		if f.proto == 60 && len(b) >= 78 && b[55] == 2 && b[56] == 0x1b && b[57] == 20 {
			f.dsrOption = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[58:74])), binary.BigEndian.Uint16(b[74:]))
			f.proto = b[54]
			l4 = 78
		}
	default:
		return f, false
	}
	if (f.proto != 6 && f.proto != 17) || len(b) < l4+4 {
		return f, false
	}
	f.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[l4:]))
	f.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[l4+2:]))
	return f, true
}
