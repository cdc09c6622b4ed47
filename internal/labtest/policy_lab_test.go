package labtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// policyTopology is the network-policy e2e layout of Kubernetes: namespaces
// x, y and z with pods a, b and c each, spread over two nodes. Pod names
// must be unique per lab node (they name the pod's network namespace), so
// pod "a" of namespace x is called xa and carries the label pod=a; the
// policies only ever select by label. SCTP is not probed: this kernel has no
// SCTP (the lab reports SCTP probes as unsupported).
//
// The lab cannot give namespaces labels of their own: the namespace
// selectors use kubernetes.io/metadata.name, the label the API server puts
// on every namespace.
const policyTopology = `
nodes: [{name: n1, zone: zone-a}, {name: n2, zone: zone-b}]
pods:
  - {name: xa, namespace: x, labels: {pod: a}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: xb, namespace: x, labels: {pod: b}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: xc, namespace: x, labels: {pod: c}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: ya, namespace: "y", labels: {pod: a}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: yb, namespace: "y", labels: {pod: b}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: yc, namespace: "y", labels: {pod: c}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: za, namespace: z, labels: {pod: a}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: zb, namespace: z, labels: {pod: b}, node: n2, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
  - {name: zc, namespace: z, labels: {pod: c}, node: n1, ports: ["80/tcp", "81/tcp", "80/udp", "81/udp"]}
`

// matrixPorts are the ports every peer serves.
var matrixPorts = []lab.Port{{Port: 80, Protocol: "tcp"}, {Port: 81, Protocol: "tcp"}, {Port: 80, Protocol: "udp"}, {Port: 81, Protocol: "udp"}}

type peerKind int

const (
	podPeer   peerKind = iota
	worldPeer          // a machine outside the cluster, on the underlay
	hostPeer           // a node's own network namespace
)

// peer is one end of a probe: a pod, a world client or a node.
type peer struct {
	name  string // "x/xa", "world-a", "host-n1"
	kind  peerKind
	ns    string // pods: namespace
	pod   string // pods: value of the pod label
	node  string // pods and hosts
	ip4   netip.Addr
	ip6   netip.Addr
	netns string
}

func (p *peer) addr(family int) netip.Addr {
	if family == 6 {
		return p.ip6
	}
	return p.ip4
}

// policyLab is a running policy lab with world clients and node servers.
type policyLab struct {
	name    string
	routing string
	st      *lab.State
	pods    []*peer
	extras  []*peer
	byName  map[string]*peer
	byAddr  map[netip.Addr]*peer
	clients map[string]*api.Client // by node
}

// newPolicyLab brings up policyTopology, then adds two world clients on the
// underlay (10.99.0.100 and .101, routed to the pod CIDRs through the nodes)
// and an echo server in each node's namespace, all serving matrixPorts.
func newPolicyLab(t *testing.T, routing string) *policyLab {
	t.Helper()
	name := newLab(t)
	up(t, name, writeTopology(t, policyTopology), "--routing", routing)
	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	pl := &policyLab{name: name, routing: routing, st: st, byName: map[string]*peer{}, byAddr: map[netip.Addr]*peer{}, clients: map[string]*api.Client{}}
	for i := range st.Pods {
		p := &st.Pods[i]
		pl.pods = append(pl.pods, &peer{
			name: p.FullName(), kind: podPeer, ns: p.Namespace, pod: p.Labels["pod"], node: p.Node,
			ip4: netip.MustParseAddr(p.IPv4), ip6: netip.MustParseAddr(p.IPv6), netns: p.NetNS,
		})
	}
	sort.Slice(pl.pods, func(i, j int) bool { return pl.pods[i].name < pl.pods[j].name })
	for i, n := range st.Nodes {
		pl.clients[n.Name] = api.NewClient(labpath.NodeSocket(name, n.Name))
		h := &peer{name: "host-" + n.Name, kind: hostPeer, node: n.Name, ip4: lab.NodeIPv4(i).Addr(), ip6: lab.NodeIPv6(i).Addr(), netns: labpath.NodeNS(name, n.Name)}
		pl.extras = append(pl.extras, h)
	}
	for i, w := range []string{"a", "b"} {
		pl.extras = append(pl.extras, addWorld(t, name, w, 100+i, len(st.Nodes)))
	}
	for _, p := range append(slices.Clone(pl.pods), pl.extras...) {
		pl.byName[p.name] = p
		pl.byAddr[p.ip4], pl.byAddr[p.ip6] = p, p
	}
	for _, p := range pl.extras {
		startEchoServer(t, name, p)
	}
	pl.warmUp(t)
	return pl
}

// warmUp connects every world client and node to every pod it can reach and
// back, on both families, until each connects: the first IPv6 contact
// between a node and its own pods can take over a second (neighbour
// discovery), longer than the matrix's probe timeout. It also checks that
// the world clients and node servers work before any policy.
func (pl *policyLab) warmUp(t *testing.T) {
	t.Helper()
	var cells []cell
	for _, c := range pl.cells([]int{4, 6}, true) {
		if (c.src.kind != podPeer || c.dst.kind != podPeer) && c.port == 80 && pl.reachable(c) {
			cells = append(cells, c)
		}
	}
	for try := 0; ; try++ {
		var failed []cell
		for i, ok := range pl.reprobe(cells) {
			if !ok {
				failed = append(failed, cells[i])
			}
		}
		if len(failed) == 0 {
			return
		}
		if try == 5 {
			t.Fatalf("without policy, %d world/node cells do not connect, e.g. %s%s", len(failed), failed[0], labLogs(pl.name))
		}
		cells = failed
	}
}

// addWorld creates namespace lmn-<lab>-w<suffix>, joined to the underlay
// bridge, with addresses 10.99.0.<host>/24 and fd00:10:99::<host>/64 and
// routes to every node's pod CIDRs through that node.
func addWorld(t *testing.T, labName, suffix string, host, nodes int) *peer {
	t.Helper()
	nsName := labpath.NSPrefix(labName) + "w" + suffix
	if err := lab.CreateNS(nsName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.DeleteNS(nsName) })
	ip4 := netip.AddrFrom4([4]byte{10, 99, 0, byte(host)})
	ip6 := netip.MustParseAddr(fmt.Sprintf("fd00:10:99::%d", host))
	err := func() error {
		uns, err := netns.GetFromPath(labpath.NSPath(labpath.UnderlayNS(labName)))
		if err != nil {
			return err
		}
		defer uns.Close()
		wns, err := netns.GetFromPath(labpath.NSPath(nsName))
		if err != nil {
			return err
		}
		defer wns.Close()
		uh, err := netlink.NewHandleAt(uns)
		if err != nil {
			return err
		}
		defer uh.Close()
		wh, err := netlink.NewHandleAt(wns)
		if err != nil {
			return err
		}
		defer wh.Close()
		port := "to-w" + suffix
		if err := uh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(wns))}); err != nil {
			return fmt.Errorf("adding veth: %w", err)
		}
		br, err := uh.LinkByName("br0")
		if err != nil {
			return err
		}
		pl, err := uh.LinkByName(port)
		if err != nil {
			return err
		}
		if err := uh.LinkSetMaster(pl, br); err != nil {
			return err
		}
		if err := uh.LinkSetUp(pl); err != nil {
			return err
		}
		for _, n := range []string{"lo", "eth0"} {
			l, err := wh.LinkByName(n)
			if err != nil {
				return err
			}
			if err := wh.LinkSetUp(l); err != nil {
				return err
			}
		}
		eth, err := wh.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, a := range []*netlink.Addr{
			{IPNet: &net.IPNet{IP: ip4.AsSlice(), Mask: net.CIDRMask(24, 32)}},
			{IPNet: &net.IPNet{IP: ip6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD},
		} {
			if err := wh.AddrAdd(eth, a); err != nil {
				return fmt.Errorf("adding %s: %w", a.IPNet, err)
			}
		}
		for i := 0; i < nodes; i++ {
			for _, r := range [][2]netip.Prefix{{lab.PodCIDRv4(i), lab.NodeIPv4(i)}, {lab.PodCIDRv6(i), lab.NodeIPv6(i)}} {
				dst := r[0]
				route := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}, Gw: r[1].Addr().AsSlice()}
				if err := wh.RouteAdd(route); err != nil {
					return fmt.Errorf("adding route to %s: %w", dst, err)
				}
			}
		}
		return nil
	}()
	if err != nil {
		t.Fatalf("world client %s: %v", nsName, err)
	}
	return &peer{name: "world-" + suffix, kind: worldPeer, ip4: ip4, ip6: ip6, netns: nsName}
}

// startEchoServer runs `lumen lab serve` on matrixPorts in p's namespace
// until the end of the test.
func startEchoServer(t *testing.T, labName string, p *peer) {
	t.Helper()
	args := []string{filepath.Join(binDir, "lumen"), "lab", "serve", "--tcp", "80,81", "--udp", "80,81"}
	proc, err := lab.StartDetached(p.netns, filepath.Join(t.TempDir(), p.name+".log"), args)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop(5 * time.Second) })
	waitUntil(t, "echo server of "+p.name, func() bool {
		return lab.ProbeInNS(context.Background(), p.netns, netip.AddrPortFrom(p.ip4, 81), "tcp", time.Second) == nil &&
			lab.ProbeInNS(context.Background(), p.netns, netip.AddrPortFrom(p.ip6, 81), "udp", time.Second) == nil
	})
}

// cell is one probe of the matrix.
type cell struct {
	src, dst *peer
	family   int
	port     uint16
	proto    string // tcp, udp
}

func (c cell) String() string {
	return fmt.Sprintf("%s -> %s %d/%s IPv%d", c.src.name, c.dst.name, c.port, c.proto, c.family)
}

type cellKey struct {
	src, dst string
	family   int
	port     uint16
	proto    string
}

func (c cell) key() cellKey { return cellKey{c.src.name, c.dst.name, c.family, c.port, c.proto} }

// cells lists every probe between peers: pod to pod, and (withExtras) pod to
// world/host and world/host to pod.
func (pl *policyLab) cells(families []int, withExtras bool) []cell {
	var out []cell
	add := func(src, dst *peer) {
		for _, f := range families {
			for _, p := range matrixPorts {
				out = append(out, cell{src: src, dst: dst, family: f, port: p.Port, proto: p.Protocol})
			}
		}
	}
	for _, s := range pl.pods {
		for _, d := range pl.pods {
			if s != d {
				add(s, d)
			}
		}
	}
	if withExtras {
		for _, p := range pl.pods {
			for _, e := range pl.extras {
				add(p, e)
				add(e, p)
			}
		}
	}
	return out
}

// probeTimeout is short: a denied probe waits for all of it. An allowed
// probe that misses it is retried with retryTimeout before it counts as
// not connected; a denied probe that connects is never excused.
const (
	probeTimeout = time.Second
	retryTimeout = 5 * time.Second
)

// probe runs the pod matrix with `lumen lab probe --matrix -o json`, and the
// world/host cells in process with the same prober, and returns whether each
// cell connected.
func (pl *policyLab) probe(t *testing.T, families []int, withExtras bool) map[cellKey]bool {
	t.Helper()
	fam := "4"
	switch {
	case len(families) == 2:
		fam = "all"
	case families[0] == 6:
		fam = "6"
	}
	out := map[cellKey]bool{}
	var wg sync.WaitGroup
	var extraRes []lab.ProbeResult
	var extraCells []cell
	if withExtras {
		for _, c := range pl.cells(families, true) {
			if c.src.kind != podPeer || c.dst.kind != podPeer {
				extraCells = append(extraCells, c)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			extraRes = lab.RunProbes(context.Background(), pl.specs(extraCells), probeTimeout, len(extraCells))
		}()
	}
	r := lumen(t, pl.name, "lab", "probe", "--matrix", "--family", fam, "-o", "json", "--timeout", probeTimeout.String(), "--parallel", "300")
	wg.Wait()
	var res []lab.ProbeResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("lab probe --matrix: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	for _, x := range res {
		src, dst := pl.byName[x.From], pl.byName[x.To]
		if src == nil || dst == nil {
			t.Fatalf("probe result for unknown pods: %+v", x)
		}
		out[cellKey{src.name, dst.name, x.Family, x.Port, x.Protocol}] = x.Connected
	}
	for i, x := range extraRes {
		out[extraCells[i].key()] = x.Connected
	}
	return out
}

// specs turns cells into probe specs.
func (pl *policyLab) specs(cells []cell) []lab.ProbeSpec {
	specs := make([]lab.ProbeSpec, len(cells))
	for i, c := range cells {
		from := &lab.PodState{Name: c.src.name, NetNS: c.src.netns}
		specs[i] = lab.ProbeSpec{From: from, To: c.dst.name, Target: netip.AddrPortFrom(c.dst.addr(c.family), c.port), Proto: c.proto}
	}
	return specs
}

// reprobe probes cells again with a generous timeout.
func (pl *policyLab) reprobe(cells []cell) []bool {
	res := lab.RunProbes(context.Background(), pl.specs(cells), retryTimeout, len(cells)+1)
	out := make([]bool, len(res))
	for i, r := range res {
		out[i] = r.Connected
	}
	return out
}

// explainSides asks the agents, like `lumen policy explain` does: the
// source's node about its egress, the destination's node about its
// ingress. Pods and nodes (the host endpoint) have sides; world clients
// do not.
func (pl *policyLab) explainSides(ctx context.Context, c cell) (egress, ingress *api.Explanation, err error) {
	ask := func(ep, other *peer, dir string) (*api.Explanation, error) {
		if ep.kind == worldPeer {
			return nil, nil
		}
		return pl.clients[ep.node].Explain(ctx, &api.ExplainRequest{
			Endpoint: ep.addr(c.family).String(), Peer: other.addr(c.family).String(), Direction: dir, Protocol: c.proto, Port: c.port,
		})
	}
	if egress, err = ask(c.src, c.dst, "egress"); err != nil {
		return nil, nil, fmt.Errorf("explaining egress of %s: %w", c, err)
	}
	if ingress, err = ask(c.dst, c.src, "ingress"); err != nil {
		return nil, nil, fmt.Errorf("explaining ingress of %s: %w", c, err)
	}
	return egress, ingress, nil
}

// endpoints lists every node's endpoints by pod ("ns/name").
func (pl *policyLab) endpoints(ctx context.Context) (map[string]api.Endpoint, error) {
	out := map[string]api.Endpoint{}
	for node, c := range pl.clients {
		eps, err := c.Endpoints(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing endpoints of %s: %w", node, err)
		}
		for _, ep := range eps {
			out[ep.Namespace+"/"+ep.PodName] = ep
		}
	}
	return out, nil
}

// waitSelected waits until every pod's endpoint reports exactly the
// policies that select it (want: pod -> policy names, missing: none). An
// endpoint's report is updated after its policy map is written, so once it
// matches, the maps enforce the policies.
func (pl *policyLab) waitSelected(t *testing.T, want map[string][]string) {
	t.Helper()
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for {
		eps, err := pl.endpoints(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var diffs []string
		for _, p := range pl.pods {
			ep, ok := eps[p.name]
			if !ok {
				diffs = append(diffs, p.name+": no endpoint")
				continue
			}
			w := slices.Clone(want[p.name])
			slices.Sort(w)
			got := slices.Clone(ep.Policy.SelectedBy)
			slices.Sort(got)
			if !slices.Equal(got, w) || ep.Policy.Error != "" {
				diffs = append(diffs, fmt.Sprintf("%s: selected by %q (error %q), want %q", p.name, got, ep.Policy.Error, w))
			}
		}
		if len(diffs) == 0 {
			return
		}
		last = strings.Join(diffs, "\n")
		if time.Now().After(deadline) {
			t.Fatalf("policies not in force after 60s:\n%s%s", last, labLogs(pl.name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runLumen runs the lumen binary against a lab; unlike lumen it never
// stops the test, so it may run on any goroutine.
func runLumen(labName string, args ...string) (result, error) {
	cmd := exec.Command(filepath.Join(binDir, "lumen"), append([]string{"--lab", labName}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("running lumen %v: %w", args, err)
	}
	return r, nil
}

// writeFile writes a test file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
