package labtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/resource"
)

// exampleTopology is the repository's example lab.
var exampleTopology = filepath.Join("..", "..", "examples", "lab", "topology.yaml")

func TestTopologyValidation(t *testing.T) {
	name := newLab(t)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown node", `
nodes: [{name: n1, zone: zone-a}]
pods:
  - {name: a, namespace: shop, node: n1}
  - {name: b, namespace: shop, node: n1}
  - {name: c, namespace: shop, node: n9}`, []string{`pods[2].node: unknown node "n9"`}},
		{"bad port", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["80/tcp", "80/icmp"]}]`, []string{`pods[0].ports[1]: invalid port "80/icmp"`}},
		{"several errors", `
routing: geneve
nodes: [{name: n1}, {name: n1}]
pods: [{name: A, node: n1}]`, []string{`routing: invalid routing "geneve"`, `nodes[1].name: duplicate node "n1"`, `pods[0].name: invalid name "A"`}},
		{"unknown field", `
nodes: [{name: n1, zonee: a}]`, []string{`nodes[0].zonee: unknown field`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := lumen(t, name, "lab", "up", "-f", writeTopology(t, c.yaml))
			if r.code == 0 {
				t.Fatalf("lab up accepted a bad topology:\n%s", r.stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error output does not contain %q:\n%s", w, r.stderr)
				}
			}
			// Nothing was created.
			if names, _ := lab.ListNS(labpath.NSPrefix(name)); len(names) != 0 {
				t.Errorf("namespaces created for a bad topology: %v", names)
			}
			if _, err := os.Stat(labpath.Dir(name)); err == nil {
				t.Errorf("state dir %s created for a bad topology", labpath.Dir(name))
			}
		})
	}
	t.Run("bad lab name", func(t *testing.T) {
		r := lumen(t, "my-lab", "lab", "up", "-f", exampleTopology)
		if r.code == 0 || !strings.Contains(r.stderr, `invalid lab name "my-lab"`) {
			t.Errorf("exit %d, stderr %s", r.code, r.stderr)
		}
	})
	t.Run("bad routing flag", func(t *testing.T) {
		r := lumen(t, name, "lab", "up", "-f", exampleTopology, "--routing", "geneve")
		if r.code == 0 || !strings.Contains(r.stderr, `invalid --routing "geneve"`) {
			t.Errorf("exit %d, stderr %s", r.code, r.stderr)
		}
	})
	t.Run("no lab", func(t *testing.T) {
		r := lumen(t, name, "lab", "status")
		if r.code == 0 || !strings.Contains(r.stderr, "not up") {
			t.Errorf("status of a missing lab: exit %d, stderr %s", r.code, r.stderr)
		}
	})
}

// checkStatus asserts that every node is healthy and every pod has both addresses.
func checkStatus(t *testing.T, st *lab.Report, wantPods int, routing string) {
	t.Helper()
	if st.Routing != routing {
		t.Errorf("routing %q, want %q", st.Routing, routing)
	}
	if !st.Store.Running {
		t.Error("store not running")
	}
	for _, n := range st.Nodes {
		if !n.Agent.Running || n.Agent.Health != api.StateOK {
			t.Errorf("node %s agent: %+v", n.Name, n.Agent)
		}
		if len(n.NodeIPs) != 2 || len(n.PodCIDRs) != 2 {
			t.Errorf("node %s addresses: %v %v", n.Name, n.NodeIPs, n.PodCIDRs)
		}
	}
	if len(st.Pods) != wantPods {
		t.Fatalf("%d pods, want %d", len(st.Pods), wantPods)
	}
	seen := map[string]bool{}
	for _, p := range st.Pods {
		if p.IPv4 == "" || p.IPv6 == "" {
			t.Errorf("pod %s/%s lacks an address: %q %q", p.Namespace, p.Name, p.IPv4, p.IPv6)
		}
		if seen[p.IPv4] || seen[p.IPv6] {
			t.Errorf("pod %s/%s shares an address", p.Namespace, p.Name)
		}
		seen[p.IPv4], seen[p.IPv6] = true, true
		if !p.Serving {
			t.Errorf("pod %s/%s echo server not running", p.Namespace, p.Name)
		}
		if !lab.NSExists(p.NetNS) {
			t.Errorf("pod %s/%s namespace %s missing", p.Namespace, p.Name, p.NetNS)
		}
	}
}

// checkMatrix probes every pod from every pod on both families and requires
// every probe to connect, except SCTP where the kernel lacks it.
func checkMatrix(t *testing.T, name string, st *lab.Report) {
	t.Helper()
	r := lumen(t, name, "lab", "probe", "--matrix", "--family", "all", "-o", "json")
	var res []lab.ProbeResult
	decode(t, r.stdout, &res)
	want := 0
	for _, from := range st.Pods {
		for _, to := range st.Pods {
			if from.NetNS != to.NetNS {
				want += 2 * len(to.Ports)
			}
		}
	}
	if len(res) != want {
		t.Errorf("matrix has %d probes, want %d", len(res), want)
	}
	sctpOK := lab.SCTPSupported()
	failed := 0
	for _, p := range res {
		switch {
		case p.Protocol == lab.ProtoSCTP && !sctpOK:
			if p.Connected || !p.Unsupported {
				t.Errorf("SCTP without kernel support not reported unsupported: %+v", p)
			}
		case !p.Connected:
			failed++
			if failed <= 10 {
				t.Errorf("not connected: %s", lab.FormatResult(p))
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d probes failed%s", failed, len(res), labLogs(name))
	}
	if (failed == 0) != (r.code == 0) {
		t.Errorf("probe --matrix exit %d with %d failures", r.code, failed)
	}
}

func TestLabNative(t *testing.T) {
	name := newLab(t)
	st := up(t, name, exampleTopology)
	checkStatus(t, st, 6, lab.RoutingNative)
	if len(st.Nodes) != 2 || st.Nodes[0].Zone != "zone-a" || st.Nodes[1].Zone != "zone-b" {
		t.Errorf("nodes: %+v", st.Nodes)
	}
	checkMatrix(t, name, st)

	t.Run("probe", func(t *testing.T) {
		// Connected: exit 0; a closed port: exit 1; IPv6 literal in brackets.
		if r := lumen(t, name, "lab", "probe", "shop/frontend", "catalog:80/tcp"); r.code != 0 || !strings.Contains(r.stdout, "connected") {
			t.Errorf("probe to catalog: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		if r := lumen(t, name, "lab", "probe", "frontend", "catalog:82/tcp", "--timeout", "2s"); r.code != 1 || !strings.Contains(r.stdout, "NOT connected") {
			t.Errorf("probe to a closed port: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		var catalog lab.PodReport
		for _, p := range st.Pods {
			if p.Name == "catalog" {
				catalog = p
			}
		}
		var res []lab.ProbeResult
		decode(t, mustLumen(t, name, "lab", "probe", "toolbox", "["+catalog.IPv6+"]:80/udp", "-o", "json"), &res)
		if len(res) != 1 || !res[0].Connected || res[0].Family != 6 || res[0].Protocol != "udp" {
			t.Errorf("IPv6 literal probe: %+v", res)
		}
		decode(t, mustLumen(t, name, "lab", "probe", "debug", "checkout:81/tcp", "--family", "all", "-o", "json"), &res)
		if len(res) != 2 || !res[0].Connected || !res[1].Connected || res[0].Family != 4 || res[1].Family != 6 {
			t.Errorf("--family all: %+v", res)
		}
		if r := lumen(t, name, "lab", "probe", "nope", "catalog:80/tcp"); r.code == 0 || !strings.Contains(r.stderr, `no pod "nope"`) {
			t.Errorf("unknown pod: exit %d %s", r.code, r.stderr)
		}
	})

	t.Run("exec", func(t *testing.T) {
		out := mustLumen(t, name, "lab", "exec", "shop/frontend", "--", "cat", "/proc/net/if_inet6")
		var frontend lab.PodReport
		for _, p := range st.Pods {
			if p.Name == "frontend" {
				frontend = p
			}
		}
		// /proc/net shows the namespace of the process: the pod's.
		if !strings.Contains(out, "eth0") || strings.Contains(out, "lxc") {
			t.Errorf("exec did not run in the pod namespace:\n%s", out)
		}
		r := lumen(t, name, "lab", "exec", "frontend", "--", "ip", "-o", "addr", "show", "dev", "eth0")
		if r.code != 0 || !strings.Contains(r.stdout, frontend.IPv4+"/32") {
			t.Errorf("pod address not seen from exec: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		if r := lumen(t, name, "lab", "exec", "frontend", "--", "sh", "-c", "exit 7"); r.code != 7 {
			t.Errorf("exit status not passed through: %d", r.code)
		}
		if r := lumenStdin(t, name, "hello pod\n", "lab", "exec", "debug", "--", "cat"); r.code != 0 || r.stdout != "hello pod\n" {
			t.Errorf("stdin not attached: exit %d %q", r.code, r.stdout)
		}
	})

	t.Run("store", func(t *testing.T) {
		// up stored the pods and namespaces like `lumen apply` would.
		ctx := context.Background()
		c, err := kvstore.Dial(ctx, labpath.StoreURL(name))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pod, err := resource.GetPod(ctx, c, "shop", "frontend")
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.NodeName != "n1" || pod.Labels["app"] != "frontend" || len(pod.Ports()) != 3 {
			t.Errorf("stored pod: %+v", pod)
		}
		for _, ns := range []string{"shop", "tools"} {
			if _, err := resource.GetNamespace(ctx, c, ns); err != nil {
				t.Errorf("namespace %s: %v", ns, err)
			}
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		var eps []api.Endpoint
		decode(t, mustLumen(t, name, "--node", "n1", "endpoint", "list", "-o", "json"), &eps)
		if len(eps) != 3 {
			t.Errorf("node n1 has %d endpoints, want 3", len(eps))
		}
	})

	checkDown(t, name)
}

func TestLabVXLAN(t *testing.T) {
	name := newLab(t)
	st := up(t, name, exampleTopology, "--routing", "vxlan")
	checkStatus(t, st, 6, lab.RoutingVXLAN)
	var as api.Status
	decode(t, mustLumen(t, name, "--node", "n2", "status", "-o", "json"), &as)
	if as.Routing != lab.RoutingVXLAN {
		t.Errorf("agent routing %q, want vxlan", as.Routing)
	}
	checkMatrix(t, name, st)
	checkDown(t, name)
}

// checkDown takes the lab down and checks that nothing is left: no
// namespace, no process, no mount, no state.
func checkDown(t *testing.T, name string) {
	t.Helper()
	state, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	procs := []*lab.Proc{state.Store}
	for _, n := range state.Nodes {
		procs = append(procs, n.Agent)
	}
	for _, p := range state.Pods {
		procs = append(procs, p.Server)
	}
	mustLumen(t, name, "lab", "down")
	if names, _ := lab.ListNS(labpath.NSPrefix(name)); len(names) != 0 {
		t.Errorf("namespaces left after down: %v", names)
	}
	for _, p := range procs {
		if p.Alive() {
			t.Errorf("process %d (%s) still runs after down", p.PID, p.Args[0])
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), labpath.Dir(name)+"/") {
		t.Errorf("mounts left under %s", labpath.Dir(name))
	}
	if _, err := os.Stat(labpath.Dir(name)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	if _, err := os.Stat(labpath.LockFile(name)); !os.IsNotExist(err) {
		t.Errorf("lock file left: %v", err)
	}
	// Idempotent.
	mustLumen(t, name, "lab", "down")
}

func TestDownSweepsLeftovers(t *testing.T) {
	name := newLab(t)
	// A crashed run: namespaces and a state dir, but no state file.
	for _, ns := range []string{labpath.NodeNS(name, "n1"), labpath.PodNS(name, "n1", "web"), labpath.UnderlayNS(name)} {
		if err := lab.CreateNS(ns); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(labpath.LogDir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	// Another lab whose name shares the prefix must survive.
	other := name + "x"
	if err := lab.CreateNS(labpath.NodeNS(other, "n1")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.DeleteNS(labpath.NodeNS(other, "n1")) })

	mustLumen(t, name, "lab", "down")
	if names, _ := lab.ListNS(labpath.NSPrefix(name)); len(names) != 0 {
		t.Errorf("leftover namespaces: %v", names)
	}
	if !lab.NSExists(labpath.NodeNS(other, "n1")) {
		t.Error("down removed another lab's namespace")
	}
	if _, err := os.Stat(labpath.Dir(name)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
}

func TestUpReplacesLab(t *testing.T) {
	name := newLab(t)
	topo := writeTopology(t, `
nodes: [{name: n1}]
pods: [{name: a, namespace: x, node: n1, ports: ["80/tcp"]}, {name: b, namespace: x, node: n1, ports: ["80/udp"]}]`)
	first := up(t, name, topo)
	checkStatus(t, first, 2, lab.RoutingNative)
	state, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	second := up(t, name, topo)
	checkStatus(t, second, 2, lab.RoutingNative)
	if state.Nodes[0].Agent.Alive() || state.Store.Alive() {
		t.Error("processes of the replaced lab still run")
	}
	if second.Nodes[0].Agent.PID == first.Nodes[0].Agent.PID {
		t.Error("agent not restarted by the second up")
	}
	if r := lumen(t, name, "lab", "probe", "a", "b:80/udp"); r.code != 0 {
		t.Errorf("probe after replacing the lab: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
}
