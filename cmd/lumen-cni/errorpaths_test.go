package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/cni"
	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/lumen-net/lumen/internal/testutil"
)

// Bad input and error paths, against the in-test fakeAgent or no agent at all.

func TestVersion(t *testing.T) {
	testutil.RequirePrivileged(t)
	node := nstest.New(t, nsTag)
	out, err := runPlugin(t, node, map[string]string{"CNI_COMMAND": "VERSION"}, "")
	if err != nil {
		t.Fatalf("VERSION: %v (stdout %s)", err, out)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("VERSION output %q: %v", out, err)
	}
	want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	if !slices.Equal(v.SupportedVersions, want) {
		t.Fatalf("supportedVersions = %v, want %v", v.SupportedVersions, want)
	}
}

func TestBadInvocation(t *testing.T) {
	testutil.RequirePrivileged(t)
	node := nstest.New(t, nsTag)
	podNS := nstest.New(t, nsTag)
	env := func(cmd string) map[string]string {
		return map[string]string{
			"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/" + podNS.Name,
			"CNI_IFNAME": "eth0", "CNI_PATH": binDir,
		}
	}
	sock := filepath.Join(shortTempDir(t), "agent.sock")
	good := `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","agentSocket":"` + sock + `"}`

	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
		want  []string
	}{
		{"bad JSON", env("ADD"), `{"cniVersion":"1.0.0","name":"lumen",`, types.ErrDecodingFailure, []string{"unmarshal"}},
		{"bad field type", env("ADD"), `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","mtu":"big"}`,
			types.ErrInvalidNetworkConfig, []string{`"mtu"`, `"big"`}},
		{"missing env", func() map[string]string { e := env("ADD"); delete(e, "CNI_CONTAINERID"); return e }(), good,
			types.ErrInvalidEnvironmentVariables, []string{"CNI_CONTAINERID"}},
		{"unknown command", env("FROB"), good, types.ErrInvalidEnvironmentVariables, []string{"FROB"}},
		{"netns does not exist", func() map[string]string { e := env("ADD"); e["CNI_NETNS"] = "/run/netns/lmn-cnit-nope"; return e }(), good,
			types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS", "/run/netns/lmn-cnit-nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPlugin(t, node, tc.env, tc.stdin)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1", err)
			}
			var te types.Error
			if err := json.Unmarshal(out, &te); err != nil {
				t.Fatalf("stdout is not a CNI error: %q: %v", out, err)
			}
			wantCNIError(t, &te, tc.code, tc.want...)
		})
	}
}

func TestBadConfigThroughLibcni(t *testing.T) {
	fake := startFakeAgent(t)
	for _, tc := range []struct {
		name   string
		plugin map[string]any
		want   []string
	}{
		{"mtu string", map[string]any{"type": "lumen-cni", "agentSocket": fake.socket, "mtu": "1500"}, []string{`"mtu"`, `"1500"`}},
		{"mtu out of range", map[string]any{"type": "lumen-cni", "agentSocket": fake.socket, "mtu": 100}, []string{`"mtu"`, "100", "1280"}},
		{"unknown field", map[string]any{"type": "lumen-cni", "agentSocket": fake.socket, "agent_socket": "/x"}, []string{`unknown field "agent_socket"`}},
		{"relative socket", map[string]any{"type": "lumen-cni", "agentSocket": "agent.sock"}, []string{`"agentSocket"`, `"agent.sock"`, "absolute"}},
		{"relative logFile", map[string]any{"type": "lumen-cni", "agentSocket": fake.socket, "logFile": "cni.log"}, []string{`"logFile"`, `"cni.log"`}},
		{"ipam section", map[string]any{"type": "lumen-cni", "agentSocket": fake.socket, "ipam": map[string]any{"type": "host-local"}}, []string{`"ipam"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, "1.0.0", tc.plugin)
			p := rt.newPod("bad")
			_, err := rt.add(p)
			wantCNIError(t, err, types.ErrInvalidNetworkConfig, tc.want...)
			if l := link(t, p.ns, "eth0"); l != nil {
				t.Errorf("eth0 created in the pod despite the bad config")
			}
			if ls := hostLinks(t, rt.node); len(ls) > 0 {
				t.Errorf("node has %v despite the bad config", ls)
			}
		})
	}
	if calls := fake.callList(); len(calls) > 0 {
		t.Errorf("the agent was called despite bad configs: %v", calls)
	}
}

func TestBadArgs(t *testing.T) {
	fake := startFakeAgent(t)
	rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, ""))
	p := rt.newPod("args")
	p.rt.Args = [][2]string{{"K8S_POD_NAME", "web"}, {"COLOUR", "blue"}} // no IgnoreUnknown
	_, err := rt.add(p)
	wantCNIError(t, err, types.ErrInvalidEnvironmentVariables, "CNI_ARGS", "COLOUR=blue")
	if calls := fake.callList(); len(calls) > 0 {
		t.Errorf("the agent was called despite bad CNI_ARGS: %v", calls)
	}
}

// With no agentSocket the plugin uses the default socket, and an agent that
// does not answer is "try again later" naming the socket, for every command.
func TestNodeNamespaceRefused(t *testing.T) {
	fake := startFakeAgent(t)
	rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, ""))
	p := rt.newPod("self")
	p.rt.NetNS = "/run/netns/" + rt.node.Name
	_, err := rt.add(p)
	wantCNIError(t, err, types.ErrInvalidNetNS, rt.node.Name, "node")
	if ls := hostLinks(t, rt.node); len(ls) > 0 || link(t, rt.node, "eth0") != nil {
		t.Errorf("ADD into the node's own namespace created %v", ls)
	}
	if calls := fake.callList(); slices.Contains(calls, "POST /v1/ipam") {
		t.Errorf("addresses allocated for an impossible ADD: %v", calls)
	}
}

func TestUnreachableAgent(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "agent.sock")
	for _, tc := range []struct {
		name, socket, want string
	}{
		{"configured socket", sock, sock},
		{"default socket", "", api.DefaultSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plugin := map[string]any{"type": "lumen-cni"}
			if tc.socket != "" {
				plugin["agentSocket"] = tc.socket
			} else if _, err := os.Stat(api.DefaultSocket); err == nil {
				testutil.Skip(t, "an agent socket exists at "+api.DefaultSocket)
			}
			rt := newRuntime(t, "1.1.0", plugin)
			p := rt.newPod("unreach")
			_, err := rt.add(p)
			wantCNIError(t, err, types.ErrTryAgainLater, tc.want)
			if l := link(t, p.ns, "eth0"); l != nil {
				t.Errorf("eth0 created in the pod without an agent")
			}
			if ls := hostLinks(t, rt.node); len(ls) > 0 {
				t.Errorf("node has %v without an agent", ls)
			}
			err = rt.del(p)
			wantCNIError(t, err, types.ErrTryAgainLater, tc.want)
			err = rt.inNode(func(ctx context.Context) error { return rt.cni.GetStatusNetworkList(ctx, rt.list) })
			wantCNIError(t, err, types.ErrPluginNotAvailable, tc.want)
		})
	}
}

func TestDuplicateAdd(t *testing.T) {
	fake := startFakeAgent(t)
	logFile := filepath.Join(t.TempDir(), "log", "lumen-cni.log")
	rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, logFile))
	p := rt.newPod("dup")
	res := rt.mustAdd(p)
	t.Cleanup(func() { _ = rt.del(p) })

	hostName := cni.HostIfName(p.rt.ContainerID)
	before := link(t, rt.node, hostName)
	if before == nil {
		t.Fatalf("host veth %s missing after ADD", hostName)
	}
	epBefore, ipsBefore := fake.state(p.rt.ContainerID)
	addrsBefore := addrs(t, p.ns, "eth0")

	_, err := rt.add(p)
	wantCNIError(t, err, cni.ErrDuplicateAdd, "duplicate ADD", p.rt.ContainerID)

	// Nothing of the first attachment was disturbed.
	after := link(t, rt.node, hostName)
	if after == nil || after.Attrs().Index != before.Attrs().Index {
		t.Fatalf("host veth changed by the duplicate ADD: before %v, after %v", before.Attrs(), after)
	}
	if got := addrs(t, p.ns, "eth0"); !slices.Equal(got, addrsBefore) {
		t.Fatalf("pod addresses changed: %v -> %v", addrsBefore, got)
	}
	epAfter, ipsAfter := fake.state(p.rt.ContainerID)
	if epAfter == nil || epAfter.ID != epBefore.ID || ipsAfter == nil || ipsAfter.IPv4.Address != ipsBefore.IPv4.Address {
		t.Fatalf("agent state changed: %+v/%+v -> %+v/%+v", epBefore, ipsBefore, epAfter, ipsAfter)
	}
	if err := rt.check(p); err != nil {
		t.Fatalf("CHECK after the duplicate ADD: %v", err)
	}
	if len(res.IPs) != 2 {
		t.Fatalf("ADD result IPs = %v", ipStrings(res.IPs))
	}

	// Logs went to the file (stdout carried only the result, or libcni would have failed).
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	for _, w := range []string{`"cmd":"ADD"`, `"cmd":"CHECK"`, "duplicate ADD", p.rt.ContainerID} {
		if !strings.Contains(string(data), w) {
			t.Errorf("log file lacks %q:\n%s", w, data)
		}
	}
}

func TestDelIdempotent(t *testing.T) {
	fake := startFakeAgent(t)
	rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, ""))

	t.Run("unknown container", func(t *testing.T) {
		p := rt.newPod("unknown")
		for i := range 2 {
			if err := rt.del(p); err != nil {
				t.Fatalf("DEL #%d of a container never added: %v", i+1, err)
			}
		}
	})
	t.Run("netns gone", func(t *testing.T) {
		p := rt.newPod("gone")
		p.rt.NetNS = "/run/netns/lmn-cnit-never-existed"
		if err := rt.del(p); err != nil {
			t.Fatalf("DEL with a missing netns: %v", err)
		}
	})
	t.Run("no netns", func(t *testing.T) {
		p := rt.newPod("nonetns")
		p.rt.NetNS = ""
		if err := rt.del(p); err != nil {
			t.Fatalf("DEL without CNI_NETNS: %v", err)
		}
	})
	t.Run("agent forgot the endpoint", func(t *testing.T) {
		p := rt.newPod("forgot")
		rt.mustAdd(p)
		fake.set(func(a *fakeAgent) {
			delete(a.endpoints, p.rt.ContainerID)
			delete(a.ipam, p.rt.ContainerID)
		})
		if err := rt.del(p); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if l := link(t, rt.node, cni.HostIfName(p.rt.ContainerID)); l != nil {
			t.Fatalf("host veth left behind")
		}
		if l := link(t, p.ns, "eth0"); l != nil {
			t.Fatalf("pod eth0 left behind")
		}
		if err := rt.del(p); err != nil {
			t.Fatalf("second DEL: %v", err)
		}
	})
	t.Run("not our interface", func(t *testing.T) {
		// Something else called eth0 in the netns is left alone, and said so.
		p := rt.newPod("foreign")
		if err := p.ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}); err != nil {
			t.Fatal(err)
		}
		err := rt.del(p)
		wantCNIError(t, err, cni.ErrInterface, "eth0", "bridge")
		if l := link(t, p.ns, "eth0"); l == nil {
			t.Fatalf("DEL removed a bridge eth0 it did not create")
		}
	})
}

func TestRollback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(a *fakeAgent)
		code  uint
		want  []string
	}{
		{"agent refuses the endpoint", func(a *fakeAgent) { a.createErr = "identity allocation failed" },
			cni.ErrAgent, []string{"registering endpoint", "identity allocation failed"}},
		{"unusable IPAM answer", func(a *fakeAgent) {
			a.ipamAnswer = &api.IPAMResponse{IPv4: &api.IPConfig{Address: "10.99.0.300/32", Gateway: "10.99.0.1"}}
		}, cni.ErrAgent, []string{`ipv4.address "10.99.0.300/32"`}},
		{"MTU too small for IPv6", func(a *fakeAgent) {
			a.ipamAnswer = &api.IPAMResponse{
				IPv4: &api.IPConfig{Address: "10.99.0.9/32", Gateway: "10.99.0.1"},
				IPv6: &api.IPConfig{Address: "fd00:99::9/128", Gateway: "fd00:99::1"},
				MTU:  1000,
			}
		}, cni.ErrAgent, []string{"MTU 1000", "1280"}},
		{"pod setup fails half way", nil, cni.ErrInterface, []string{"adding route 10.99.0.1/32", "exists"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := startFakeAgent(t)
			if tc.setup != nil {
				fake.set(tc.setup)
			}
			rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, filepath.Join(t.TempDir(), "cni.log")))
			p := rt.newPod("rb")
			if tc.setup == nil {
				// A route to the gateway the pod already has makes the kernel refuse
				// the plugin's, after the veth is in the pod and addressed.
				other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "other0"}}
				if err := p.ns.NL.LinkAdd(other); err != nil {
					t.Fatal(err)
				}
				o := link(t, p.ns, "other0")
				if err := p.ns.NL.LinkSetUp(o); err != nil {
					t.Fatal(err)
				}
				gw := &net.IPNet{IP: net.ParseIP("10.99.0.1").To4(), Mask: net.CIDRMask(32, 32)}
				if err := p.ns.NL.RouteAdd(&netlink.Route{LinkIndex: o.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := rt.add(p)
			wantCNIError(t, err, tc.code, tc.want...)

			if ls := hostLinks(t, rt.node); len(ls) > 0 {
				t.Errorf("node still has %v after rollback", ls)
			}
			if l := link(t, p.ns, "eth0"); l != nil {
				t.Errorf("pod still has eth0 after rollback")
			}
			ep, ips := fake.state(p.rt.ContainerID)
			if ep != nil || ips != nil {
				t.Errorf("agent still holds endpoint %+v / addresses %+v after rollback", ep, ips)
			}
			if calls := fake.callList(); !slices.Contains(calls, "DELETE /v1/ipam/"+p.rt.ContainerID) {
				t.Errorf("addresses not released; calls: %v", calls)
			}
		})
	}

	t.Run("interface name taken in the pod", func(t *testing.T) {
		fake := startFakeAgent(t)
		rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, ""))
		p := rt.newPod("taken")
		if err := p.ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}); err != nil {
			t.Fatal(err)
		}
		_, err := rt.add(p)
		wantCNIError(t, err, cni.ErrInterface, "eth0", "already exists")
		if l := link(t, p.ns, "eth0"); l == nil || l.Type() != "bridge" {
			t.Errorf("the existing eth0 was disturbed: %v", l)
		}
		if calls := fake.callList(); slices.Contains(calls, "POST /v1/ipam") {
			t.Errorf("addresses allocated although the ADD could not work: %v", calls)
		}
	})
}

func TestCheckReportsWhatIsMissing(t *testing.T) {
	fake := startFakeAgent(t)
	rt := newRuntime(t, "1.0.0", pluginConf(fake.socket, ""))
	p := rt.newPod("check")
	res := rt.mustAdd(p)
	t.Cleanup(func() { _ = rt.del(p) })
	if err := rt.check(p); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	eth0 := link(t, p.ns, "eth0")
	// Removing the only IPv4 address would make the kernel flush the
	// device's IPv4 routes and neighbours too; the IPv6 one shows the check alone.
	v6 := res.IPs[1].Address
	addr := &netlink.Addr{IPNet: &v6, Flags: unix.IFA_F_NODAD}
	if err := p.ns.NL.AddrDel(eth0, addr); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, rt.check(p), cni.ErrCheck, "address "+v6.IP.String(), "missing", "eth0")
	if err := p.ns.NL.AddrAdd(eth0, addr); err != nil {
		t.Fatal(err)
	}
	if err := rt.check(p); err != nil {
		t.Fatalf("CHECK after restoring the address: %v", err)
	}

	def6 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: res.IPs[1].Gateway}
	if err := p.ns.NL.RouteDel(def6); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, rt.check(p), cni.ErrCheck, "default route via "+res.IPs[1].Gateway.String())
	if err := p.ns.NL.RouteAdd(def6); err != nil {
		t.Fatal(err)
	}

	gw := res.IPs[0].Gateway
	if err := p.ns.NL.NeighDel(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, IP: gw}); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, rt.check(p), cni.ErrCheck, "neighbour "+gw.String())

	fake.set(func(a *fakeAgent) { delete(a.endpoints, p.rt.ContainerID) })
	wantCNIError(t, rt.check(p), cni.ErrCheck, "no endpoint")
}

// GC removes what lumen-cni made for containers the runtime no longer knows,
// and nothing else.
func TestGC(t *testing.T) {
	fake := startFakeAgent(t)
	rt := newRuntime(t, "1.1.0", pluginConf(fake.socket, ""))
	keep := rt.newPod("keep")
	rt.mustAdd(keep)
	t.Cleanup(func() { _ = rt.del(keep) })

	// A second runtime (own cache) on the same node leaks an attachment the
	// first one never heard of.
	other := *rt
	other.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(t.TempDir(), "cache2"), nil)
	leak := other.newPod("leak")
	other.mustAdd(leak)
	t.Cleanup(func() { _ = other.del(leak) })

	err := rt.inNode(func(ctx context.Context) error {
		return rt.cni.GCNetworkList(ctx, rt.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
			{ContainerID: keep.rt.ContainerID, IfName: "eth0"},
		}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if ep, ips := fake.state(leak.rt.ContainerID); ep != nil || ips != nil {
		t.Errorf("GC left the leaked endpoint %+v / addresses %+v", ep, ips)
	}
	if l := link(t, rt.node, cni.HostIfName(leak.rt.ContainerID)); l != nil {
		t.Errorf("GC left the leaked host veth")
	}
	if ep, _ := fake.state(keep.rt.ContainerID); ep == nil {
		t.Errorf("GC removed the valid endpoint")
	}
	if err := rt.check(keep); err != nil {
		t.Errorf("CHECK of the valid attachment after GC: %v", err)
	}
}
