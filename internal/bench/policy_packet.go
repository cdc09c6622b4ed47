package bench

// Per-packet enforcement cost of the policy benchmark, on a throwaway
// datapath, against an empty program.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/policy"
)

// benchDP is a datapath loaded in a throwaway namespace with two pod veths.
type benchDP struct {
	dp     *datapath.Datapath
	pm     *datapath.PolicyMap
	ifidx  [2]int
	podIP  [2]netip.Addr
	mac    net.HardwareAddr
	events chan struct{} // closed to stop draining the events ring
}

// withPolicyDatapath runs fn on a thread inside a new network namespace with
// the datapath loaded on a private bpffs, and removes everything after.
func withPolicyDatapath(fn func(*benchDP) error) error {
	var sfx [3]byte
	_, _ = rand.Read(sfx[:])
	name := "lmn-benchpol-" + hex.EncodeToString(sfx[:])
	return netnsutil.DoTemp(name, func() error { return policyDatapathIn(fn) })
}

// policyDatapathIn is withPolicyDatapath on a thread in the namespace.
func policyDatapathIn(fn func(*benchDP) error) (err error) {
	dir, err := os.MkdirTemp("", "lumen-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bpffs := filepath.Join(dir, "bpf")
	dp, err := datapath.Load(datapath.Options{BPFFS: bpffs})
	if err != nil {
		return err
	}
	defer func() { dp.Close(); _ = unix.Unmount(bpffs, 0) }()
	// The agent's default trace level: TCP SYN/FIN/RST and non-TCP packets.
	if err := dp.SetConfig(datapath.RuntimeConfig{TraceLevel: datapath.TraceControl}); err != nil {
		return err
	}
	pm, err := dp.Policy()
	if err != nil {
		return err
	}
	b := &benchDP{dp: dp, pm: pm, mac: net.HardwareAddr{2, 0, 0, 0, 0, 1},
		podIP: [2]netip.Addr{netip.MustParseAddr("10.200.0.2"), netip.MustParseAddr("10.200.0.3")}}
	for i, n := range []string{"lxcpol0", "lxcpol1"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			return fmt.Errorf("creating veth: %w", err)
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		b.ifidx[i] = l.Attrs().Index
	}
	// Drain the events ring like the agent's monitor does, so that event
	// emission costs what it costs with a reader (a full ring is cheaper).
	rd, err := dp.OpenEvents()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}()
	defer func() { rd.Close(); wg.Wait() }()
	return fn(b)
}

// maxDistinct bounds the runs of a path: one source port each.
const maxDistinct = 64000

// PolicyPacketMethod explains how the packet paths are timed.
const PolicyPacketMethod = `Each packet is one BPF_PROG_TEST_RUN call with repeat 1, timed by the kernel around the program run only (the "duration" it returns), so the syscall and skb setup are left out; the empty program is timed the same way on the same packets. Conntrack makes every repeat of one packet an established connection, so the new-connection paths use a different source port for every run (each is a SYN of a new connection: policy lookup, verdict event, conntrack entry); the established paths repeat one packet whose connection exists. Conntrack is flushed between paths. Events are drained by a reader, as the agent does. Medians are the figures to read; means include the runs an interrupt or preemption hit.`

// Packet paths compared by Overheads.
const (
	pathInNoPolicy    = "to_container, no policy: new connection"
	pathInAllowed     = "to_container, enforced: new connection allowed (L3+L4 rule)"
	pathInDenied      = "to_container, enforced: new connection denied (default deny)"
	pathInNoPolicyEst = "to_container, no policy: established"
	pathInEstablished = "to_container, enforced: established"
	pathOutNoPolicy   = "from_container, no policy: new connection to local pod"
	pathOutAllowed    = "from_container, enforced: new connection allowed"
)

func findPath(ps []PacketCost, name string) PacketCost {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return PacketCost{}
}

// policyPackets times the program paths of the endpoint's policy.
func policyPackets(b *benchDP, w *Workload, runs int) ([]PacketCost, string, error) {
	dp := b.dp
	// Pod 0 is the measured endpoint; pod 1 the peer, with an identity its
	// ingress rules allow on w.AllowedPort, and pod 1' (same veth, identity
	// its egress rules allow) for egress.
	eps, err := policy.NewEngine(mustDecode(w.Docs), w.Identities, policy.Options{AllowLocalhost: true})
	if err != nil {
		return nil, "", err
	}
	pol, err := eps.Compute(w.Endpoint)
	if err != nil {
		return nil, "", err
	}
	const epID, peerID, egressPeerID = 1, 2, 3
	egressPeerIP := netip.MustParseAddr("10.200.0.4")
	setEndpoint := func(flags uint16) error {
		return errors.Join(
			dp.UpsertEndpoint(b.podIP[0], datapath.EndpointInfo{IfIndex: uint32(b.ifidx[0]), ID: epID, Flags: flags, Identity: w.Endpoint.Identity, MAC: b.mac, HostMAC: b.mac}),
			dp.UpsertEndpoint(b.podIP[1], datapath.EndpointInfo{IfIndex: uint32(b.ifidx[1]), ID: peerID, Identity: w.PeerIdentity, MAC: b.mac, HostMAC: b.mac}),
			dp.UpsertEndpoint(egressPeerIP, datapath.EndpointInfo{IfIndex: uint32(b.ifidx[1]), ID: egressPeerID, Identity: w.EgressPeerIdentity, MAC: b.mac, HostMAC: b.mac}),
		)
	}
	if err := b.pm.Sync(epID, toDatapath(pol.Entries)); err != nil {
		return nil, "", err
	}
	defer b.pm.Delete(epID)

	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return nil, "", fmt.Errorf("loading empty program: %w", err)
	}
	defer empty.Close()

	type path struct {
		name     string
		hook     datapath.Hook
		ifindex  int
		enforced bool
		src, dst netip.Addr
		port     uint16
		distinct bool
		verdict  uint32 // expected TC_ACT_*
	}
	const pass, shot, redirect = 0, 2, 7
	both := uint16(datapath.EndpointIngressEnforced | datapath.EndpointEgressEnforced)
	in, out := b.podIP[1], b.podIP[0]
	paths := []path{
		{pathInNoPolicy, datapath.HookToContainer, b.ifidx[0], false, in, out, w.AllowedPort, true, pass},
		{pathInAllowed, datapath.HookToContainer, b.ifidx[0], true, in, out, w.AllowedPort, true, pass},
		{pathInDenied, datapath.HookToContainer, b.ifidx[0], true, in, out, w.DeniedPort, true, shot},
		{pathInNoPolicyEst, datapath.HookToContainer, b.ifidx[0], false, in, out, w.AllowedPort, false, pass},
		{pathInEstablished, datapath.HookToContainer, b.ifidx[0], true, in, out, w.AllowedPort, false, pass},
		{pathOutNoPolicy, datapath.HookFromContainer, b.ifidx[0], false, out, egressPeerIP, w.EgressPort, true, redirect},
		{pathOutAllowed, datapath.HookFromContainer, b.ifidx[0], true, out, egressPeerIP, w.EgressPort, true, redirect},
		{"from_container, enforced: new connection denied", datapath.HookFromContainer, b.ifidx[0], true, out, egressPeerIP, 20001, true, shot},
		{"from_container, enforced: established", datapath.HookFromContainer, b.ifidx[0], true, out, egressPeerIP, w.EgressPort, false, redirect},
	}
	if policy.Lookup(pol, w.EgressPeerIdentity, true, policy.ProtoTCP, 20001).Allowed {
		return nil, "", errors.New("egress to the peer on port 20001 is allowed by the workload: pick another denied port")
	}
	var out2 []PacketCost
	for _, p := range paths {
		flags := uint16(0)
		if p.enforced {
			flags = both
		}
		if err := setEndpoint(flags); err != nil {
			return nil, "", err
		}
		if _, err := dp.GCConntrack(datapath.CTLifetimes{}); err != nil {
			return nil, "", err
		}
		pkts := make([][]byte, runs)
		for i := range pkts {
			sport := uint16(40000)
			if p.distinct {
				sport = uint16(1024 + i)
			}
			pkts[i] = datapath.Packet{SrcMAC: b.mac, DstMAC: b.mac, Src: p.src, Dst: p.dst, Proto: 6, SrcPort: sport, DstPort: p.port, TTL: 64, TCPFlags: 0x02}.Bytes()
		}
		if !p.distinct {
			// Open the connection once; the timed runs are all established.
			if _, _, err := testRun(dp.Program(p.hook), p.ifindex, pkts[0]); err != nil {
				return nil, "", fmt.Errorf("%s: %w", p.name, err)
			}
			for i := range pkts {
				pkts[i] = datapath.Packet{SrcMAC: b.mac, DstMAC: b.mac, Src: p.src, Dst: p.dst, Proto: 6, SrcPort: 40000, DstPort: p.port, TTL: 64, TCPFlags: 0x10}.Bytes()
			}
		}
		d, verdict, err := timeRuns(dp.Program(p.hook), p.ifindex, pkts)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", p.name, err)
		}
		if verdict != p.verdict {
			return nil, "", fmt.Errorf("%s: verdict %d, want %d: the path measured is not the one named", p.name, verdict, p.verdict)
		}
		if _, err := dp.GCConntrack(datapath.CTLifetimes{}); err != nil {
			return nil, "", err
		}
		e, _, err := timeRuns(empty, p.ifindex, pkts)
		if err != nil {
			return nil, "", fmt.Errorf("empty program: %w", err)
		}
		c := PacketCost{Name: p.name, Median: median(d), Mean: mean(d), EmptyMedian: median(e), EmptyMean: mean(e), Verdict: verdict, Runs: runs, Distinct: p.distinct}
		c.Ratio = c.Median / c.EmptyMedian
		out2 = append(out2, c)
	}
	return out2, PolicyPacketMethod, nil
}

func timeRuns(prog *ebpf.Program, ifindex int, pkts [][]byte) ([]uint32, uint32, error) {
	d := make([]uint32, len(pkts))
	var verdict uint32
	for i, pkt := range pkts {
		ret, ns, err := testRun(prog, ifindex, pkt)
		if err != nil {
			return nil, 0, err
		}
		d[i], verdict = ns, ret
	}
	return d, verdict, nil
}

func mean(d []uint32) float64 {
	var s float64
	for _, x := range d {
		s += float64(x)
	}
	return s / float64(len(d))
}

func median(d []uint32) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2])
}

// testRunAttr is the BPF_PROG_TEST_RUN part of union bpf_attr.
type testRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// testRun runs prog once on pkt (skb context with ifindex) and returns its
// verdict and the kernel's own timing of the run in ns. cilium/ebpf's Run
// does not return the duration.
func testRun(prog *ebpf.Program, ifindex int, pkt []byte) (uint32, uint32, error) {
	ctx := &skbContext{IngressIfindex: uint32(ifindex), Ifindex: uint32(ifindex)}
	attr := testRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(pkt)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&pkt[0]))),
		repeat:     1,
		ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(ctx))),
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(pkt)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
	}
	return attr.retval, attr.duration, nil
}
