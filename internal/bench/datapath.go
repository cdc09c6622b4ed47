// Package bench measures Lumen against baselines in the same run and
// reports ratios: per-packet program cost via BPF_PROG_TEST_RUN against an
// empty program, and pod-to-pod TCP throughput against a bare veth pair.
package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

// ProgramCost is the per-packet cost of one program path.
type ProgramCost struct {
	Name      string  `json:"name"`
	NsPerPkt  float64 `json:"nsPerPacket"`
	Baseline  float64 `json:"baselineNsPerPacket"`
	Ratio     float64 `json:"ratio"` // NsPerPkt / Baseline
	Verdict   uint32  `json:"verdict"`
	Repeats   uint32  `json:"repeats"`
	Endpoints int     `json:"endpoints"`
}

// DatapathCost loads the datapath into a throwaway namespace and bpffs,
// fills the maps with endpoints entries, and times each program path
// against an empty tc program over the same packet.
func DatapathCost(repeats uint32, endpoints int) (costs []ProgramCost, err error) {
	name := fmt.Sprintf("lmn-bench-%d", os.Getpid())
	err = netnsutil.DoTemp(name, func() error {
		var err error
		costs, err = datapathCostIn(repeats, endpoints)
		return err
	})
	return costs, err
}

// datapathCostIn is DatapathCost on a thread in the namespace.
func datapathCostIn(repeats uint32, endpoints int) ([]ProgramCost, error) {
	dir, err := os.MkdirTemp("", "lumen-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bpffs := filepath.Join(dir, "bpf")
	dp, err := datapath.Load(datapath.Options{BPFFS: bpffs})
	if err != nil {
		return nil, err
	}
	defer func() { dp.Close(); _ = unix.Unmount(bpffs, 0) }()
	if err := dp.SetConfig(datapath.RuntimeConfig{TraceLevel: datapath.TraceControl}); err != nil {
		return nil, err
	}

	// Two pods on veths; the rest of the endpoints fill the map.
	var idx [2]int
	for i, n := range []string{"lxcbench0", "lxcbench1"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			return nil, fmt.Errorf("creating veth: %w", err)
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			return nil, err
		}
		idx[i] = l.Attrs().Index
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	a, b := netip.MustParseAddr("10.200.0.2"), netip.MustParseAddr("10.200.0.3")
	a6, b6 := netip.MustParseAddr("fd00:200::2"), netip.MustParseAddr("fd00:200::3")
	must := []error{
		dp.UpsertEndpoint(a, datapath.EndpointInfo{IfIndex: uint32(idx[0]), ID: 1, Identity: 300, MAC: mac, HostMAC: mac}),
		dp.UpsertEndpoint(b, datapath.EndpointInfo{IfIndex: uint32(idx[1]), ID: 2, Identity: 301, MAC: mac, HostMAC: mac}),
		dp.UpsertEndpoint(a6, datapath.EndpointInfo{IfIndex: uint32(idx[0]), ID: 1, Identity: 300, MAC: mac, HostMAC: mac}),
		dp.UpsertEndpoint(b6, datapath.EndpointInfo{IfIndex: uint32(idx[1]), ID: 2, Identity: 301, MAC: mac, HostMAC: mac}),
	}
	for _, err := range must {
		if err != nil {
			return nil, err
		}
	}
	base := netip.MustParseAddr("10.201.0.0")
	for i := 0; i < endpoints; i++ {
		base = base.Next()
		if err := dp.UpsertEndpoint(base, datapath.EndpointInfo{IfIndex: 9999, ID: uint16(i%60000 + 3), Identity: 400, MAC: mac, HostMAC: mac}); err != nil {
			return nil, err
		}
		p := netip.PrefixFrom(base, 32)
		if err := dp.UpsertIPCache(datapath.IPCacheEntry{Prefix: p, Identity: 400}); err != nil {
			return nil, err
		}
	}

	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("loading empty program: %w", err)
	}
	defer empty.Close()

	pkt := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: a, Dst: b, Proto: 6, SrcPort: 40000, DstPort: 80, TCPFlags: 0x10}.Bytes()
	world := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: a, Dst: netip.MustParseAddr("192.0.2.1"), Proto: 6, SrcPort: 40000, DstPort: 80, TCPFlags: 0x10}.Bytes()
	pkt6 := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: a6, Dst: b6, Proto: 6, SrcPort: 40000, DstPort: 80, TCPFlags: 0x10}.Bytes()
	// The parser's extension header walk and fragment lookup.
	ext6 := withExtHeaders(pkt6)
	first, later := fragmentPair(datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: a, Dst: b, Proto: 17, SrcPort: 40000, DstPort: 53, Payload: make([]byte, 64)}.Bytes())
	cases := []struct {
		name    string
		prog    *ebpf.Program
		ifindex int
		pkt     []byte
	}{
		{"from_container: pod to local pod (redirect)", dp.Program(datapath.HookFromContainer), idx[0], pkt},
		{"from_container: pod to outside (FIB, to stack)", dp.Program(datapath.HookFromContainer), idx[0], world},
		{"to_container: into pod", dp.Program(datapath.HookToContainer), idx[1], pkt},
		{"from_netdev: network to local pod", dp.Program(datapath.HookFromNetdev), idx[1], pkt},
		{"from_container: IPv6 pod to local pod", dp.Program(datapath.HookFromContainer), idx[0], pkt6},
		{"from_container: IPv6, hop-by-hop + destination options", dp.Program(datapath.HookFromContainer), idx[0], ext6},
		{"from_container: IPv4 later fragment (lumen_frag)", dp.Program(datapath.HookFromContainer), idx[0], later},
	}
	// The later fragment needs its first fragment's entry.
	if _, _, err := timeProgram(dp.Program(datapath.HookFromContainer), idx[0], first, 1); err != nil {
		return nil, err
	}
	baseline, _, err := timeProgram(empty, idx[0], pkt, repeats)
	if err != nil {
		return nil, err
	}
	var out []ProgramCost
	for _, c := range cases {
		ns, verdict, err := timeProgram(c.prog, c.ifindex, c.pkt, repeats)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		out = append(out, ProgramCost{Name: c.name, NsPerPkt: ns, Baseline: baseline, Ratio: ns / baseline, Verdict: verdict, Repeats: repeats, Endpoints: endpoints + 2})
	}
	return out, nil
}

type skbContext struct {
	_              [9]uint32
	IngressIfindex uint32
	Ifindex        uint32
}

// batch is how many runs one BPF_PROG_TEST_RUN makes. The kernel reuses the
// same skb for every repeat, and forwarding decrements the TTL, so a batch
// must stay below the TTL (255) or the later runs take the "TTL expired"
// path instead of the one being measured.
const batch = 250

// timeProgram runs prog repeats times, in batches, and returns ns/packet by
// the wall clock. The syscall per batch costs the same for the empty
// baseline, so ratios stay fair. (cilium/ebpf's Benchmark reports the
// kernel's own figure but cannot pass the skb context the programs need.)
func timeProgram(prog *ebpf.Program, ifindex int, pkt []byte, repeats uint32) (float64, uint32, error) {
	in := append([]byte(nil), pkt...)
	if in[12] == 0x86 && in[13] == 0xdd {
		in[14+7] = 255 // IPv6 hop limit: see batch
	} else {
		in[14+8] = 255 // IPv4 TTL: see batch
		in[14+10], in[14+11] = 0, 0
		sum := datapath.IPv4Checksum(in[14:34])
		in[14+10], in[14+11] = byte(sum>>8), byte(sum)
	}
	out := make([]byte, len(in)+256)
	ctx := skbContext{IngressIfindex: uint32(ifindex), Ifindex: uint32(ifindex)}
	var ret uint32
	start := time.Now()
	done := uint32(0)
	for done < repeats {
		n := min(uint32(batch), repeats-done)
		opts := &ebpf.RunOptions{Data: in, DataOut: out, Repeat: n, Context: ctx}
		r, err := prog.Run(opts)
		if err != nil {
			return 0, 0, err
		}
		ret = r
		done += n
	}
	return float64(time.Since(start).Nanoseconds()) / float64(repeats), ret, nil
}

// withExtHeaders inserts an 8-byte hop-by-hop and an 8-byte destination
// options header (Pad1 options) after the fixed header of an IPv6 frame.
func withExtHeaders(frame []byte) []byte {
	out := append([]byte(nil), frame[:54]...)
	nh := out[20]
	out[20] = 0 // hop-by-hop
	out[18], out[19] = byte((int(out[18])<<8|int(out[19])+16)>>8), byte(int(out[18])<<8|int(out[19])+16)
	out = append(out, 60, 0, 0, 0, 0, 0, 0, 0) // next: destination options
	out = append(out, nh, 0, 0, 0, 0, 0, 0, 0)
	return append(out, frame[54:]...)
}

// fragmentPair splits an IPv4 frame in two fragments at 16 bytes of
// payload.
func fragmentPair(frame []byte) (first, later []byte) {
	ihl := int(frame[14]&0xf) * 4
	hdr, payload := frame[:14+ihl], frame[14+ihl:]
	mk := func(off int, data []byte, more bool) []byte {
		f := append(append([]byte(nil), hdr...), data...)
		ip := f[14:]
		tot := ihl + len(data)
		ip[2], ip[3] = byte(tot>>8), byte(tot)
		ip[4], ip[5] = 0x12, 0x34
		fo := off / 8
		if more {
			fo |= 0x2000
		}
		ip[6], ip[7] = byte(fo>>8), byte(fo)
		ip[10], ip[11] = 0, 0
		sum := datapath.IPv4Checksum(ip[:ihl])
		ip[10], ip[11] = byte(sum>>8), byte(sum)
		return f
	}
	return mk(0, payload[:16], true), mk(16, payload[16:], false)
}
