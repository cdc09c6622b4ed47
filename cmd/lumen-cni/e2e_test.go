package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/cni"
	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/lumen-net/lumen/internal/testutil"
)

// End to end against the real lumen-agent, started inside the node namespace.

const (
	e2eV4CIDR = "10.201.1.0/24"
	e2eV6CIDR = "fd00:10:201:1::/64"
	e2eGW4    = "10.201.1.1"
	e2eGW6    = "fd00:10:201:1::1"
	nodeMTU   = 1450 // the agent hands out its devices' MTU; not the default, so it shows
)

// agentProc is a lumen-agent the test started.
type agentProc struct {
	socket string
	log    string
}

// newNode creates a node namespace whose eth0 leads to an underlay namespace
// of its own (so device detection finds an uplink) and runs lumen-agent in it.
func newNode(t *testing.T) (*nstest.NS, *agentProc) {
	t.Helper()
	testutil.RequirePrivileged(t)
	if agentBin == "" {
		testutil.Skip(t, agentBuild)
	}
	node := nstest.New(t, nsTag)
	underlay := nstest.New(t, nsTag)
	eth0, peer := nstest.Veth(t, node, "eth0", underlay, "n1")
	if err := node.NL.LinkSetMTU(eth0, nodeMTU); err != nil {
		t.Fatal(err)
	}
	if err := underlay.NL.LinkSetMTU(peer, nodeMTU); err != nil {
		t.Fatal(err)
	}
	node.AddAddr(t, eth0, "192.168.77.2/24")
	underlay.AddAddr(t, peer, "192.168.77.1/24")
	if err := node.NL.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("192.168.77.1").To4(),
		Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}

	stateDir := shortTempDir(t)
	a := &agentProc{socket: filepath.Join(stateDir, "agent.sock"), log: filepath.Join(t.TempDir(), "agent.log")}
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBin, "--node-name", "n1", "--state-dir", stateDir,
		"--ipv4-pod-cidr", e2eV4CIDR, "--ipv6-pod-cidr", e2eV6CIDR, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Started from a thread inside the node namespace, the agent lives there.
	if err := node.Do(cmd.Start); err != nil {
		t.Fatalf("starting lumen-agent: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		// Stop it by PID, gently first.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		// Its pins outlive it by design: unmount the private bpffs it mounted.
		if err := unix.Unmount(filepath.Join(stateDir, "bpf"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmounting the agent's bpffs: %v", err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(a.log); err == nil {
				t.Logf("lumen-agent log:\n%s", b)
			}
		}
	})

	client := api.NewClient(a.socket)
	nstest.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-done:
			b, _ := os.ReadFile(a.log)
			t.Fatalf("lumen-agent exited: %v\n%s", err, b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := client.Status(ctx)
		if err != nil {
			return err
		}
		if !st.Healthy() {
			return fmt.Errorf("agent not healthy: %+v", st.Subsystems)
		}
		return nil
	})
	return node, a
}

// envOnNode is a runtime whose node namespace already runs an agent.
func envOnNode(t *testing.T, node *nstest.NS, a *agentProc, cniVersion string) *runtimeEnv {
	t.Helper()
	return newRuntimeIn(t, node, cniVersion, pluginConf(a.socket, filepath.Join(t.TempDir(), "lumen-cni.log")))
}

func TestEndToEnd(t *testing.T) {
	node, agent := newNode(t)
	rt := envOnNode(t, node, agent, "1.0.0")
	client := api.NewClient(agent.socket)
	ctx := context.Background()

	podA, podB := rt.newPod("a"), rt.newPod("b")
	resA := rt.mustAdd(podA)
	t.Cleanup(func() { _ = rt.del(podA) })
	resB := rt.mustAdd(podB)
	t.Cleanup(func() { _ = rt.del(podB) })

	t.Logf("ADD pod A: %s", resA)
	t.Logf("ADD pod B: %s", resB)

	// The result describes the attachment.
	hostName := cni.HostIfName(podA.rt.ContainerID)
	host := link(t, node, hostName)
	if host == nil {
		t.Fatalf("host veth %s missing in the node", hostName)
	}
	if len(resA.Interfaces) != 2 || resA.Interfaces[0].Name != hostName || resA.Interfaces[0].Mac != host.Attrs().HardwareAddr.String() ||
		resA.Interfaces[0].Sandbox != "" {
		t.Fatalf("result host interface = %+v, want %s with MAC %s", resA.Interfaces[0], hostName, host.Attrs().HardwareAddr)
	}
	eth0 := link(t, podA.ns, "eth0")
	if eth0 == nil {
		t.Fatalf("eth0 missing in pod A")
	}
	if pi := resA.Interfaces[1]; pi.Name != "eth0" || pi.Sandbox != podA.rt.NetNS || pi.Mac != eth0.Attrs().HardwareAddr.String() {
		t.Fatalf("result pod interface = %+v, want eth0 in %s with MAC %s", pi, podA.rt.NetNS, eth0.Attrs().HardwareAddr)
	}
	if len(resA.IPs) != 2 {
		t.Fatalf("result IPs = %v, want one IPv4 and one IPv6", ipStrings(resA.IPs))
	}
	for _, ip := range resA.IPs {
		want, prefix := e2eGW6, e2eV6CIDR
		if ip.Address.IP.To4() != nil {
			want, prefix = e2eGW4, e2eV4CIDR
		}
		ones, bits := ip.Address.Mask.Size()
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		if ip.Gateway.String() != want || ones != bits || !netip.MustParsePrefix(prefix).Contains(a.Unmap()) ||
			ip.Interface == nil || *ip.Interface != 1 {
			t.Errorf("result IP %s gw %s interface %v: want a host prefix in %s via %s on interface 1", ip.Address.String(), ip.Gateway, ip.Interface, prefix, want)
		}
	}
	var defaults []string
	for _, r := range resA.Routes {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			defaults = append(defaults, r.GW.String())
		}
	}
	if slices.Sort(defaults); !slices.Equal(defaults, []string{e2eGW4, e2eGW6}) {
		t.Errorf("result default routes via %v, want %s and %s", defaults, e2eGW4, e2eGW6)
	}

	// The pod namespace: host addresses, MTU, routes, permanent gateway neighbours.
	got := addrs(t, podA.ns, "eth0")
	for _, ip := range resA.IPs {
		if !slices.Contains(got, ip.Address.String()) {
			t.Errorf("pod A eth0 has %v, lacks %s", got, ip.Address.String())
		}
	}
	if eth0.Attrs().MTU != nodeMTU || host.Attrs().MTU != nodeMTU {
		t.Errorf("MTU pod %d host %d, want the agent's %d", eth0.Attrs().MTU, host.Attrs().MTU, nodeMTU)
	}
	if eth0.Attrs().OperState != netlink.OperUp && eth0.Attrs().OperState != netlink.OperUnknown {
		t.Errorf("pod eth0 operstate %s", eth0.Attrs().OperState)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		gw := net.ParseIP(e2eGW4)
		if fam == netlink.FAMILY_V6 {
			gw = net.ParseIP(e2eGW6)
		}
		routes, err := podA.ns.NL.RouteList(eth0, fam)
		if err != nil {
			t.Fatal(err)
		}
		var haveGW, haveDefault bool
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.Equal(gw) && r.Gw == nil {
				haveGW = true
			}
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(gw) {
				haveDefault = true
			}
		}
		if !haveGW || !haveDefault {
			t.Errorf("pod routes %v: want %s on link and a default via it", routes, gw)
		}
		neighs, err := podA.ns.NL.NeighList(eth0.Attrs().Index, fam)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.Equal(gw) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == host.Attrs().HardwareAddr.String()
		}) {
			t.Errorf("pod neighbours %v: want %s PERMANENT at %s", neighs, gw, host.Attrs().HardwareAddr)
		}
	}

	// The host side: up, IPv6 on, no router advertisements taken.
	if host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is down", hostName)
	}
	err := node.Do(func() error {
		for k, want := range map[string]string{"accept_ra": "0", "disable_ipv6": "0"} {
			b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", hostName, k))
			if err != nil {
				return err
			}
			if v := strings.TrimSpace(string(b)); v != want {
				return fmt.Errorf("net.ipv6.conf.%s.%s = %s, want %s", hostName, k, v, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// The agent has the endpoint as the plugin described it.
	ep, err := client.Endpoint(ctx, podA.rt.ContainerID)
	if err != nil {
		t.Fatalf("agent endpoint of pod A: %v", err)
	}
	if ep.HostIfName != hostName || ep.HostIfIndex != host.Attrs().Index || ep.MAC != eth0.Attrs().HardwareAddr.String() ||
		ep.NetNS != podA.rt.NetNS || ep.IfName != "eth0" || ep.PodName != "a" || ep.Namespace != "default" ||
		ep.IPv4+"/32" != resA.IPs[0].Address.String() || ep.IPv6+"/128" != resA.IPs[1].Address.String() || ep.State != api.EndpointReady {
		t.Errorf("agent endpoint %+v does not match the attachment", ep)
	}

	if err := rt.check(podA); err != nil {
		t.Errorf("CHECK pod A: %v", err)
	}

	// Pod to pod through the datapath, both families. The pods send to the
	// gateway's MAC without asking (nothing answers ARP/ND for it), so this
	// only works with the permanent neighbours pointing at the host veths.
	for _, dst := range []string{resB.IPs[0].Address.IP.String(), resB.IPs[1].Address.IP.String()} {
		ping(t, podA.ns, dst)
	}
	ping(t, podB.ns, resA.IPs[0].Address.IP.String())

	// DEL removes everything, and a second DEL is fine.
	if err := rt.del(podA); err != nil {
		t.Fatalf("DEL pod A: %v", err)
	}
	if _, err := client.Endpoint(ctx, podA.rt.ContainerID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("agent still has pod A's endpoint after DEL: %v", err)
	}
	if err := client.ReleaseIPs(ctx, podA.rt.ContainerID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("pod A's addresses still allocated after DEL: %v", err)
	}
	if l := link(t, node, hostName); l != nil {
		t.Errorf("host veth %s still there after DEL", hostName)
	}
	if l := link(t, podA.ns, "eth0"); l != nil {
		t.Errorf("pod A eth0 still there after DEL")
	}
	if err := rt.del(podA); err != nil {
		t.Errorf("second DEL pod A: %v", err)
	}
	// Pod B is untouched.
	if err := rt.check(podB); err != nil {
		t.Errorf("CHECK pod B after DEL of pod A: %v", err)
	}
	if err := rt.del(podB); err != nil {
		t.Fatalf("DEL pod B: %v", err)
	}
	if ls := hostLinks(t, node); len(ls) > 0 {
		t.Errorf("node still has %v after all DELs", ls)
	}
	eps, err := client.Endpoints(ctx)
	if err != nil || len(eps) != 0 {
		t.Errorf("agent endpoints after all DELs: %v, %v", eps, err)
	}
}

// Every supported spec version works through libcni with the real agent;
// duplicate ADD and a DEL of a gone netns are exercised against it too.
func TestEndToEndVersionsAndRepeats(t *testing.T) {
	node, agent := newNode(t)
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			rt := envOnNode(t, node, agent, v)
			p := rt.newPod("v" + strings.ReplaceAll(v, ".", ""))
			res, err := rt.add(p)
			if err != nil {
				t.Fatalf("ADD with cniVersion %s: %v", v, err)
			}
			t.Cleanup(func() { _ = rt.del(p) })
			if len(res.IPs) != 2 || len(res.Interfaces) != 2 {
				t.Errorf("result %s", res)
			}
			if v != "0.3.0" && v != "0.3.1" {
				if err := rt.check(p); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := rt.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}

	rt := envOnNode(t, node, agent, "1.0.0")
	p := rt.newPod("dup")
	rt.mustAdd(p)
	before, _ := api.NewClient(agent.socket).Endpoint(context.Background(), p.rt.ContainerID)
	_, err := rt.add(p)
	wantCNIError(t, err, cni.ErrDuplicateAdd, "duplicate ADD")
	after, err := api.NewClient(agent.socket).Endpoint(context.Background(), p.rt.ContainerID)
	if err != nil || after.ID != before.ID || after.HostIfIndex != before.HostIfIndex {
		t.Errorf("duplicate ADD disturbed the endpoint: %+v -> %+v (%v)", before, after, err)
	}
	// The pod's namespace vanishes before the runtime's DEL: still a clean DEL.
	if err := netns.DeleteNamed(p.ns.Name); err != nil {
		t.Fatal(err)
	}
	if err := rt.del(p); err != nil {
		t.Fatalf("DEL after the netns is gone: %v", err)
	}
	if _, err := api.NewClient(agent.socket).Endpoint(context.Background(), p.rt.ContainerID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("endpoint survived DEL: %v", err)
	}
	if ls := hostLinks(t, node); len(ls) > 0 {
		t.Errorf("node still has %v", ls)
	}
}

// ping sends ICMP echo from inside ns until one answer comes back; the
// retries only absorb the first packets after setup.
func ping(t *testing.T, ns *nstest.NS, dst string) {
	t.Helper()
	var out []byte
	nstest.Eventually(t, 30*time.Second, func() error {
		return ns.Do(func() error {
			var err error
			out, err = exec.Command("ping", "-c", "1", "-W", "1", dst).CombinedOutput()
			if err != nil {
				return fmt.Errorf("ping %s from %s: %v\n%s", dst, ns.Name, err, out)
			}
			return nil
		})
	})
}
