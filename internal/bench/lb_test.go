package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

func TestLBOptionsValidate(t *testing.T) {
	good := DefaultLBOptions
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*LBOptions)
		want string
	}{
		{"no sizes", func(o *LBOptions) { o.Sizes = nil }, "sizes:"},
		{"size too big", func(o *LBOptions) { o.Sizes = []int{1, 70000} }, "sizes: invalid value [1 70000]"},
		{"conns", func(o *LBOptions) { o.Conns = 3 }, "conns: invalid value 3"},
		{"backends", func(o *LBOptions) { o.Backends = 0 }, "backends: invalid value 0"},
		{"iptables", func(o *LBOptions) { o.IPTables = "ipvs" }, `iptables: invalid value "ipvs"`},
		{"maglev size", func(o *LBOptions) { o.MaglevSizes = []uint64{1000} }, "maglev-sizes: maglev table size 1000"},
		{"packet runs", func(o *LBOptions) { o.PacketRuns = 5 }, "packet-runs: invalid value 5"},
		{"parallel", func(o *LBOptions) { o.Parallel = 0 }, "parallel: invalid value 0"},
		{"parallel conns", func(o *LBOptions) { o.ParallelConns = 20 }, "parallel-conns: invalid value 20"},
		{"store repeats", func(o *LBOptions) { o.StoreRepeats = 0 }, "store-repeats: invalid value 0"},
		{"mem", func(o *LBOptions) { o.MemBackends = 2 << 20 }, "mem-backends: invalid value 2097152"},
	} {
		o := DefaultLBOptions
		c.mod(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want error containing %q, got %v", c.name, c.want, err)
		}
	}
}

func TestKubeProxyRules(t *testing.T) {
	bes := []netip.AddrPort{netip.MustParseAddrPort("10.200.1.2:80"), netip.MustParseAddrPort("10.200.1.3:80"), netip.MustParseAddrPort("10.200.1.4:80")}
	svcs, mid, last := iptServices(5, bes)
	if len(svcs) != 5 || svcs[1].IP != mid || svcs[4].IP != last || mid == last {
		t.Fatalf("iptServices(5): %v mid %s last %s", svcs, mid, last)
	}
	if one, m, l := iptServices(1, bes); len(one) != 1 || m != l || one[0].IP != m {
		t.Errorf("iptServices(1): %v %s %s", one, m, l)
	}
	rules := string(KubeProxyRules(svcs, true))
	lines := strings.Split(strings.TrimSpace(rules), "\n")
	if lines[0] != "*nat" || lines[len(lines)-1] != "COMMIT" {
		t.Errorf("not one nat table: %q ... %q", lines[0], lines[len(lines)-1])
	}
	count := func(prefix string) int {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				n++
			}
		}
		return n
	}
	// One KUBE-SERVICES rule per service plus the node ports jump; three
	// endpoint rules per service; two rules per endpoint chain.
	if n := count("-A KUBE-SERVICES "); n != 6 {
		t.Errorf("%d KUBE-SERVICES rules, want 6", n)
	}
	if n := count("-A KUBE-SVC-"); n != 15 {
		t.Errorf("%d KUBE-SVC rules, want 15", n)
	}
	if n := count("-A KUBE-SEP-"); n != 30 {
		t.Errorf("%d KUBE-SEP rules, want 30", n)
	}
	if n := count(":KUBE-SVC-"); n != 5 {
		t.Errorf("%d KUBE-SVC chains, want 5", n)
	}
	for _, want := range []string{
		"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"--probability 0.33333333333 -j KUBE-SEP-",
		"--probability 0.50000000000 -j KUBE-SEP-",
		"-m tcp -j DNAT --to-destination 10.200.1.4:80",
		"-A KUBE-SERVICES -d " + mid.String() + "/32 -p tcp",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q", want)
		}
	}
	// The node ports jump is KUBE-SERVICES' last rule.
	var svcRules []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			svcRules = append(svcRules, l)
		}
	}
	if !strings.Contains(svcRules[len(svcRules)-1], "KUBE-NODEPORTS") {
		t.Errorf("last KUBE-SERVICES rule: %s", svcRules[len(svcRules)-1])
	}
	// Chain names are stable and distinct.
	if svcChain(svcs[0]) == svcChain(svcs[1]) || len(svcChain(svcs[0])) != len("KUBE-SVC-")+16 || sepChain(svcs[0], bes[0]) == sepChain(svcs[0], bes[1]) {
		t.Error("chain names")
	}
	if noflush := string(KubeProxyRules(svcs, false)); strings.Contains(noflush, ":OUTPUT") || strings.Contains(noflush, "-A OUTPUT") {
		t.Error("the --noflush ruleset touches built-in chains")
	}
	added := IPTService{Name: "bench/new:http", IP: netip.MustParseAddr("10.97.251.1"), Port: 80, Backends: bes}
	partial := string(KubeProxyPartial(append(svcs, added), added))
	if strings.Count(partial, "-A KUBE-SERVICES ") != 7 || strings.Count(partial, ":KUBE-SVC-") != 1 || strings.Count(partial, "-A KUBE-SEP-") != 6 {
		t.Errorf("partial sync:\n%s", partial)
	}
}

func TestConnStats(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	s := statsOf(lat, 100*time.Millisecond, 2, "boom")
	if s.Conns != 100 || s.PerSec != 1000 || s.P50 != 51*time.Microsecond || s.P99 != 100*time.Microsecond || s.Failed != 2 || s.Error != "boom" {
		t.Errorf("statsOf: %+v", s)
	}
	a := statsOf(lat[:50], 50*time.Millisecond, 0, "")
	a.Samples = lat[:50]
	b := statsOf(lat[50:], 150*time.Millisecond, 1, "x")
	b.Samples = lat[50:]
	m := mergeStats([]ConnStats{a, b})
	if m.Conns != 100 || m.PerSec != 500 || m.P50 != 51*time.Microsecond || m.Failed != 1 || m.Error != "x" || m.Samples != nil {
		t.Errorf("mergeStats: %+v", m)
	}
}

func TestParseMemlock(t *testing.T) {
	v, err := parseMemlock(strings.NewReader("pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t34603008\nmap_id:\t7\n"))
	if err != nil || v != 34603008 {
		t.Errorf("parseMemlock = %d, %v", v, err)
	}
	if _, err := parseMemlock(strings.NewReader("pos:\t0\n")); err == nil {
		t.Error("no memlock line: no error")
	}
}

func TestServiceKey(t *testing.T) {
	k := serviceKey(netip.MustParseAddr("10.96.1.2"), 8080, 1)
	want := []byte{2, 6, 0x1f, 0x90, 0, 0, 0, 0, 10, 96, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	if string(k) != string(want) {
		t.Errorf("serviceKey = %v, want %v", k, want)
	}
}

// The per-packet paths are the ones named: DNAT to the backend redirects
// to it, and the map memory grows with the backends.
func TestLBPacketCostAndMemory(t *testing.T) {
	testutil.RequirePrivileged(t)
	res, err := LBPacketCost(100, 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Name != PathPodToPod || res[1].Name != PathDNATNew || res[2].Name != PathDNATEstablish {
		t.Fatalf("paths: %+v", res)
	}
	for _, r := range res {
		if r.Verdict != 7 || r.Median <= 0 || r.EmptyMedian <= 0 {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
	m, err := LBMapMemory(20000, 100)
	if err != nil {
		t.Fatal(err)
	}
	if m.Services != 200 || m.Slots != 20000 || m.TotalBytes <= m.EmptyBytes || m.BackendMapBytes == 0 || m.BytesPerBackend < 32 {
		t.Errorf("memory: %+v", m)
	}
}

func TestMaglevBuild(t *testing.T) {
	c, err := MaglevBuild(100, maglev.DefaultTableSize)
	if err != nil || c.Median <= 0 || c.Backends != 100 {
		t.Errorf("MaglevBuild: %+v %v", c, err)
	}
}

// buildBins builds the lumen binaries for the lab benchmarks.
func buildBins(b testing.TB) string {
	b.Helper()
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/lumen", "./cmd/lumen-agent", "./cmd/lumen-cni")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the binaries: %v\n%s", err, out)
	}
	return dir
}

// BenchmarkLBConnections: connection rate through Lumen and kube-proxy's
// rules at 1 and 10k services (a short run of lumen bench lb's lab part).
func BenchmarkLBConnections(b *testing.B) {
	testutil.RequirePrivileged(b)
	if _, err := exec.LookPath("iptables-legacy-restore"); err != nil {
		b.Skip("iptables-legacy-restore not installed")
	}
	o := DefaultLBOptions
	o.Bins, o.Conns, o.AddRepeats = buildBins(b), 1000, 1
	o.Sizes = []int{1, 10000}
	for b.Loop() {
		r := &LBReport{}
		if err := lbLabBench(context.Background(), o, r); err != nil {
			b.Fatal(err)
		}
		first, last := r.Connections[0], r.Connections[len(r.Connections)-1]
		b.ReportMetric(first.LumenPod.PerSec, "lumen-conn/s@1")
		b.ReportMetric(last.LumenPod.PerSec, "lumen-conn/s@10k")
		b.ReportMetric(last.IPTablesNode.PerSec, "iptables-conn/s@10k")
		b.ReportMetric(last.Ratio, "x-iptables@10k")
		b.ReportMetric(float64(r.AddService.LumenVisible.Milliseconds()), "lumen-add-ms@10k")
		b.ReportMetric(float64(r.AddService.IPTablesFull.Milliseconds()), "iptables-add-ms@10k")
	}
}

func BenchmarkLBDNAT(b *testing.B) {
	testutil.RequirePrivileged(b)
	for b.Loop() {
		res, err := LBPacketCost(10000, 20000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res[1].Median, "ns/new-conn")
		b.ReportMetric(res[2].Median, "ns/established")
		b.ReportMetric(res[2].Ratio, "x-empty")
	}
}

func BenchmarkMaglevTable1k(b *testing.B) {
	for b.Loop() {
		c, err := MaglevBuild(1000, maglev.DefaultTableSize)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(c.Median.Microseconds()), "us/table")
	}
}

func BenchmarkLBMapMemory1M(b *testing.B) {
	testutil.RequirePrivileged(b)
	for b.Loop() {
		m, err := LBMapMemory(1_000_000, 100)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(m.TotalBytes)/(1<<20), "MiB")
		b.ReportMetric(m.BytesPerBackend, "B/backend")
	}
}

func TestShareAndCPUMerge(t *testing.T) {
	total := 0
	for w := range 8 {
		n := share(1003, 8, w)
		if n != 125 && n != 126 {
			t.Errorf("share(1003, 8, %d) = %d", w, n)
		}
		total += n
	}
	if total != 1003 {
		t.Errorf("shares add up to %d, want 1003", total)
	}
	m := mergeStats([]ConnStats{{CPU: 3 * time.Millisecond}, {CPU: time.Millisecond}})
	m.Conns = 400
	if m.CPU != 4*time.Millisecond || m.CPUPerConn() != 10*time.Microsecond {
		t.Errorf("merged CPU %v, per connection %v", m.CPU, m.CPUPerConn())
	}
}

// TestRawConnect: the connect-only client's blocking connect reaches a
// listener and closes with a reset; a closed port is an error naming it.
func TestRawConnect(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns, _ := testutil.NewNetNS(t, "benchlb")
	err := netnsutil.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 8080, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 64); err != nil {
			return err
		}
		for range 20 {
			if err := rawConnect(netip.MustParseAddrPort("127.0.0.1:8080"), time.Second); err != nil {
				return err
			}
		}
		if err := rawConnect(netip.MustParseAddrPort("127.0.0.1:8081"), time.Second); err == nil || !strings.Contains(err.Error(), "127.0.0.1:8081") {
			return fmt.Errorf("closed port: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
