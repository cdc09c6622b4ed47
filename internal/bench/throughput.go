package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/netnsutil"
)

// Throughput compares pod-to-pod TCP through Lumen with a bare veth pair.
type Throughput struct {
	BareGbps float64 `json:"bareVethGbps"`
	Runs     []Run   `json:"runs"`
}

// Run is one measured path.
type Run struct {
	Name  string  `json:"name"`
	Gbps  float64 `json:"gbps"`
	Ratio float64 `json:"ratioToBareVeth"`
}

// benchTopology: one pod per node plus a second pod on the first node.
const benchTopology = `nodes:
  - name: n1
    zone: a
  - name: n2
    zone: b
pods:
  - {name: client, namespace: bench, node: n1}
  - {name: local, namespace: bench, node: n1}
  - {name: remote, namespace: bench, node: n2}
`

// MeasureThroughput runs iperf3 over a bare veth pair, then through a lab
// built with the lumen binaries in bins: same node, and across nodes in
// native routing and VXLAN mode.
func MeasureThroughput(ctx context.Context, bins string, seconds int) (*Throughput, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, fmt.Errorf("iperf3 not found (apt-get install iperf3): %w", err)
	}
	bare, err := bareVeth(ctx, seconds)
	if err != nil {
		return nil, fmt.Errorf("bare veth: %w", err)
	}
	tp := &Throughput{BareGbps: bare}
	dir, err := os.MkdirTemp("", "lumen-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	topo := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(topo, []byte(benchTopology), 0o644); err != nil {
		return nil, err
	}
	for _, routing := range []string{"native", "vxlan"} {
		lab := fmt.Sprintf("bench%d", os.Getpid()%100000)
		lumen := func(args ...string) *exec.Cmd {
			return exec.CommandContext(ctx, filepath.Join(bins, "lumen"), append([]string{"--lab", lab}, args...)...)
		}
		if out, err := lumen("lab", "up", "-f", topo, "--routing", routing).CombinedOutput(); err != nil {
			_ = lumen("lab", "down").Run()
			return nil, fmt.Errorf("lab up: %v: %s", err, out)
		}
		ips, err := labIPs(lumen)
		if err == nil && routing == "native" {
			var g float64
			g, err = labIperf(lumen, "bench/local", ips["local"], seconds)
			tp.Runs = append(tp.Runs, Run{Name: "Lumen, pods on one node", Gbps: g})
		}
		if err == nil {
			var g float64
			g, err = labIperf(lumen, "bench/remote", ips["remote"], seconds)
			tp.Runs = append(tp.Runs, Run{Name: "Lumen, pods on two nodes (" + routing + ")", Gbps: g})
		}
		_ = lumen("lab", "down").Run()
		if err != nil {
			return nil, err
		}
	}
	for i := range tp.Runs {
		tp.Runs[i].Ratio = tp.Runs[i].Gbps / tp.BareGbps
	}
	return tp, nil
}

func labIPs(lumen func(...string) *exec.Cmd) (map[string]string, error) {
	out, err := lumen("lab", "status", "-o", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	var st struct {
		Pods []struct {
			Name string `json:"name"`
			IPv4 string `json:"ipv4"`
		} `json:"pods"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	ips := map[string]string{}
	for _, p := range st.Pods {
		ips[p.Name] = p.IPv4
	}
	return ips, nil
}

// labIperf runs an iperf3 server in pod and the client in bench/client.
func labIperf(lumen func(...string) *exec.Cmd, pod, ip string, seconds int) (float64, error) {
	srv := lumen("lab", "exec", pod, "--", "iperf3", "-s", "-1")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		time.Sleep(250 * time.Millisecond)
		out, err = lumen("lab", "exec", "bench/client", "--", "iperf3", "-c", ip, "-t", strconv.Itoa(seconds), "-J").Output()
		if err == nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3 to %s: %v: %s", pod, err, out)
	}
	return parseIperf(out)
}

func parseIperf(out []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parsing iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// bareVeth measures two namespaces joined by one veth pair, no programs.
func bareVeth(ctx context.Context, seconds int) (float64, error) {
	suffix := strconv.Itoa(os.Getpid())
	a, b := "lmn-bare-a-"+suffix, "lmn-bare-b-"+suffix
	nsA, err := netnsutil.NewNamed(a)
	if err != nil {
		return 0, err
	}
	defer func() { nsA.Close(); _ = netns.DeleteNamed(a) }()
	nsB, err := netnsutil.NewNamed(b)
	if err != nil {
		return 0, err
	}
	defer func() { nsB.Close(); _ = netns.DeleteNamed(b) }()

	h, err := netlink.NewHandleAt(nsA)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(nsB)}
	if err := h.LinkAdd(veth); err != nil {
		return 0, fmt.Errorf("creating veth: %w", err)
	}
	hb, err := netlink.NewHandleAt(nsB)
	if err != nil {
		return 0, err
	}
	defer hb.Close()
	for i, hh := range []*netlink.Handle{h, hb} {
		l, err := hh.LinkByName("eth0")
		if err != nil {
			return 0, err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 250, 0, byte(i+1)), Mask: net.CIDRMask(24, 32)}}
		if err := hh.AddrAdd(l, addr); err != nil {
			return 0, err
		}
		if err := hh.LinkSetUp(l); err != nil {
			return 0, err
		}
	}
	time.Sleep(time.Second) // a fresh veth drops packets for a moment
	srv, err := startIn(nsB, exec.CommandContext(ctx, "iperf3", "-s", "-1"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	cli := exec.CommandContext(ctx, "iperf3", "-c", "10.250.0.2", "-t", strconv.Itoa(seconds), "-J")
	var out []byte
	err = netnsutil.Do(nsA, func() error {
		var err error
		out, err = cli.Output()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("iperf3: %v: %s", err, out)
	}
	return parseIperf(out)
}

// startIn starts cmd with the namespace of a thread switched into ns.
func startIn(ns netns.NsHandle, cmd *exec.Cmd) (*exec.Cmd, error) {
	return cmd, netnsutil.Do(ns, cmd.Start)
}
