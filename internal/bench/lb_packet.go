package bench

// Per-packet cost, Maglev builds and map memory of the load balancer, on a
// throwaway datapath.

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

// MaglevBuild times building a Maglev table of backends over a table of
// size m (the median of a few builds).
func MaglevBuild(backends int, m uint64) (MaglevCost, error) {
	keys := make([]string, backends)
	for i := range keys {
		keys[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 80).String() + "/TCP"
	}
	builds := 5
	var d []time.Duration
	for range builds {
		t := time.Now()
		if _, err := maglev.Table(keys, m, maglev.DefaultSeed); err != nil {
			return MaglevCost{}, err
		}
		d = append(d, time.Since(t))
	}
	slices.Sort(d)
	return MaglevCost{Backends: backends, TableSize: m, Median: d[len(d)/2], Builds: builds}, nil
}

// LBPacketCost times from_container on packets to a service frontend
// (a new connection, and an established one) and to a pod directly, with
// services frontends of 3 backends each in the maps, against an empty
// program, each packet one BPF_PROG_TEST_RUN (PolicyPacketMethod).
func LBPacketCost(services, runs int) ([]PacketCost, error) {
	var out []PacketCost
	err := withLBDatapath(func(d *lbDP) error {
		dp := d.dp
		mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
		client, backend := netip.MustParseAddr("10.200.0.2"), netip.MustParseAddr("10.200.0.3")
		vip := netip.MustParseAddr("10.96.250.1")
		if err := errors.Join(
			dp.UpsertEndpoint(client, datapath.EndpointInfo{IfIndex: uint32(d.ifidx[0]), ID: 1, Identity: 300, MAC: mac, HostMAC: mac}),
			dp.UpsertEndpoint(backend, datapath.EndpointInfo{IfIndex: uint32(d.ifidx[1]), ID: 2, Identity: 301, MAC: mac, HostMAC: mac}),
			dp.UpsertBackend(1, datapath.Backend{Addr: backend, Port: 80, Proto: 6}),
			dp.UpsertRevNat(1, vip, 80),
			dp.UpsertService(datapath.ServiceEntry{Frontend: datapath.Frontend{Addr: vip, Port: 80, Proto: 6, Scope: datapath.ScopeInternal}, RevNat: 1, Backends: []uint32{1}}, 0),
		); err != nil {
			return err
		}
		if err := fillServices(dp, services, 3, 2); err != nil {
			return err
		}
		empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			return fmt.Errorf("loading empty program: %w", err)
		}
		defer empty.Close()
		prog := dp.Program(datapath.HookFromContainer)
		const redirect = 7
		for _, p := range []struct {
			name     string
			dst      netip.Addr
			distinct bool
		}{{PathPodToPod, backend, false}, {PathDNATNew, vip, true}, {PathDNATEstablish, vip, false}} {
			if _, err := dp.GCConntrack(datapath.CTLifetimes{}); err != nil {
				return err
			}
			pkts := make([][]byte, runs)
			for i := range pkts {
				sport, flags := uint16(40000), uint8(0x10)
				if p.distinct {
					sport, flags = uint16(1024+i%60000), 0x02
				}
				pkts[i] = datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: client, Dst: p.dst, Proto: 6, SrcPort: sport, DstPort: 80, TTL: 64, TCPFlags: flags}.Bytes()
			}
			if !p.distinct {
				syn := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: client, Dst: p.dst, Proto: 6, SrcPort: 40000, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
				if _, _, err := testRun(prog, d.ifidx[0], syn); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
			}
			dur, verdict, err := timeRuns(prog, d.ifidx[0], pkts)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if verdict != redirect {
				return fmt.Errorf("%s: verdict %d, want %d (redirect to the backend): the path measured is not the one named", p.name, verdict, redirect)
			}
			e, _, err := timeRuns(empty, d.ifidx[0], pkts)
			if err != nil {
				return fmt.Errorf("empty program: %w", err)
			}
			c := PacketCost{Name: p.name, Median: median(dur), Mean: mean(dur), EmptyMedian: median(e), EmptyMean: mean(e), Verdict: verdict, Runs: runs, Distinct: p.distinct}
			c.Ratio = c.Median / c.EmptyMedian
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// fillServices writes n frontends 10.96.0.0/16 + i : 80/TCP (internal
// scope) with per backends each, backend ids from firstID up (addresses in
// 10.201.0.0/16), reverse NAT ids from firstID up.
func fillServices(dp *datapath.Datapath, n, per int, firstID uint32) error {
	id := firstID
	for i := 0; i < n; i++ {
		fe := netip.AddrFrom4([4]byte{10, 96, byte((i + 1) >> 8), byte(i + 1)})
		if n > 60000 {
			fe = netip.AddrFrom4([4]byte{10, byte(96 + (i+1)>>16), byte((i + 1) >> 8), byte(i + 1)})
		}
		ids := make([]uint32, per)
		for j := range ids {
			k := uint32(i*per + j)
			if err := dp.UpsertBackend(id, datapath.Backend{Addr: netip.AddrFrom4([4]byte{10, byte(201 + k>>16), byte(k >> 8), byte(k)}), Port: 80, Proto: 6}); err != nil {
				return err
			}
			ids[j] = id
			id++
		}
		rev := firstID + uint32(i)
		if err := dp.UpsertRevNat(rev, fe, 80); err != nil {
			return err
		}
		if err := dp.UpsertService(datapath.ServiceEntry{Frontend: datapath.Frontend{Addr: fe, Port: 80, Proto: 6, Scope: datapath.ScopeInternal}, RevNat: rev, Backends: ids}, 0); err != nil {
			return err
		}
	}
	return nil
}

// LBMapMemory fills the backend map with backends backends, and the service
// map with one frontend per perService of them (a slot each), and reports
// the maps' memlock.
func LBMapMemory(backends, perService int) (*LBMemory, error) {
	m := &LBMemory{Backends: backends, Services: backends / perService, Slots: backends / perService * perService}
	err := withLBDatapath(func(d *lbDP) error {
		names := []string{"lumen_lb_backends", "lumen_lb_services", "lumen_lb_revnat"}
		read := func() ([]uint64, error) {
			var out []uint64
			for _, n := range names {
				v, err := pinnedMemlock(filepath.Join(d.bpffs, "maps", n))
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		}
		before, err := read()
		if err != nil {
			return err
		}
		if err := fillServices(d.dp, m.Services, perService, 1); err != nil {
			return err
		}
		after, err := read()
		if err != nil {
			return err
		}
		m.BackendMapBytes, m.ServiceMapBytes, m.RevNatMapBytes = after[0], after[1], after[2]
		m.EmptyBytes = before[0] + before[1] + before[2]
		m.TotalBytes = after[0] + after[1] + after[2]
		m.BytesPerBackend = float64(m.TotalBytes-m.EmptyBytes) / float64(m.Slots)
		return nil
	})
	return m, err
}

// pinnedMemlock reads the memlock line of a pinned map's fdinfo.
func pinnedMemlock(path string) (uint64, error) {
	mp, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer mp.Close()
	return fdMemlock(mp.FD())
}

func fdMemlock(fd int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseMemlock(f)
}

// parseMemlock finds "memlock:\tN" in an fdinfo.
func parseMemlock(r io.Reader) (uint64, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no memlock in fdinfo")
}

// lbDP is a throwaway datapath: its own namespace and bpffs, two veths.
type lbDP struct {
	dp    *datapath.Datapath
	bpffs string
	ifidx [2]int
}

// withLBDatapath runs fn on a thread inside a new network namespace with
// the datapath loaded on a private bpffs, and removes everything after.
func withLBDatapath(fn func(*lbDP) error) error {
	var sfx [3]byte
	_, _ = rand.Read(sfx[:])
	name := "lmn-benchlb-" + hex.EncodeToString(sfx[:])
	return netnsutil.DoTemp(name, func() error { return lbDatapathIn(fn) })
}

// lbDatapathIn is withLBDatapath on a thread in the namespace.
func lbDatapathIn(fn func(*lbDP) error) (err error) {
	dir, err := os.MkdirTemp("", "lumen-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &lbDP{bpffs: filepath.Join(dir, "bpf")}
	if d.dp, err = datapath.Load(datapath.Options{BPFFS: d.bpffs}); err != nil {
		return err
	}
	defer func() { d.dp.Close(); _ = unix.Unmount(d.bpffs, 0) }()
	if err := d.dp.SetConfig(datapath.RuntimeConfig{TraceLevel: datapath.TraceControl}); err != nil {
		return err
	}
	for i, n := range []string{"lxclb0", "lxclb1"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			return fmt.Errorf("creating veth: %w", err)
		}
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		d.ifidx[i] = l.Attrs().Index
	}
	// Drain events as the agent does (a full ring is cheaper to hit).
	rd, err := d.dp.OpenEvents()
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
	return fn(d)
}

// Packet paths of LBPacketCost.
const (
	PathPodToPod      = "from_container: pod to local pod, no service (established)"
	PathDNATNew       = "from_container: to a ClusterIP, new connection (backend chosen, DNAT)"
	PathDNATEstablish = "from_container: to a ClusterIP, established (backend from conntrack, DNAT)"
)
