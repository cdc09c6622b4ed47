package lab

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/testutil"
)

func testState() *State {
	return &State{
		Name: "t",
		Nodes: []NodeState{
			{Name: "n1", NetNS: "lmn-t-n1"},
			{Name: "n2", NetNS: "lmn-t-n2"},
		},
		Pods: []PodState{
			{Name: "web", Namespace: "shop", Node: "n1", IPv4: "10.200.1.2", IPv6: "fd00:10:200:1::2", Ports: []Port{{Port: 80, Protocol: ProtoTCP}, {Port: 80, Protocol: ProtoUDP}}},
			{Name: "web", Namespace: "tools", Node: "n2", IPv4: "10.200.2.2", IPv6: "fd00:10:200:2::2", Ports: []Port{{Port: 80, Protocol: ProtoTCP}}},
			{Name: "db", Namespace: "shop", Node: "n2", IPv4: "10.200.2.3", Ports: []Port{{Port: 5432, Protocol: ProtoTCP}}},
		},
	}
}

func TestFindPod(t *testing.T) {
	st := testState()
	if p, err := st.FindPod("db"); err != nil || p.FullName() != "shop/db" {
		t.Errorf("db: %v %v", p, err)
	}
	if p, err := st.FindPod("tools/web"); err != nil || p.Node != "n2" {
		t.Errorf("tools/web: %v %v", p, err)
	}
	if _, err := st.FindPod("web"); err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), "shop/web, tools/web") {
		t.Errorf("ambiguous: %v", err)
	}
	for _, bad := range []string{"nope", "shop/nope", "x/web"} {
		if _, err := st.FindPod(bad); err == nil || !strings.Contains(err.Error(), `no pod "`+bad+`"`) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if n, err := st.Node("n2"); err != nil || n.NetNS != "lmn-t-n2" {
		t.Errorf("node n2: %v %v", n, err)
	}
	if _, err := st.Node("n9"); err == nil || !strings.Contains(err.Error(), "n1, n2") {
		t.Errorf("node n9: %v", err)
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in    string
		host  string
		addr  string
		port  Port
		isPod bool
	}{
		{"web:80/tcp", "web", "", Port{Port: 80, Protocol: ProtoTCP}, true},
		{"shop/web:81/UDP", "shop/web", "", Port{Port: 81, Protocol: ProtoUDP}, true},
		{"10.200.1.2:80/udp", "10.200.1.2", "10.200.1.2", Port{Port: 80, Protocol: ProtoUDP}, false},
		{"[fd00::1]:80/sctp", "[fd00::1]", "fd00::1", Port{Port: 80, Protocol: ProtoSCTP}, false},
	}
	for _, c := range cases {
		got, err := ParseTarget(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got.Host != c.host || got.Port != c.port || got.IsPod != c.isPod {
			t.Errorf("%s: got %+v", c.in, got)
		}
		if c.addr != "" && got.Addr != netip.MustParseAddr(c.addr) {
			t.Errorf("%s: addr %v", c.in, got.Addr)
		}
	}
	for _, bad := range []string{"web", "web:80", "web:80/icmp", ":80/tcp", "fd00::1:80/tcp", "[fd00::1:80/tcp", "[10.0.0.1]:80/tcp", "[nope]:80/tcp", "10.0.0.1:0/tcp"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.Contains(err.Error(), "invalid target") {
			t.Errorf("%q: error does not say invalid target: %v", bad, err)
		}
	}
}

func TestParseFamilies(t *testing.T) {
	for in, want := range map[string][]int{"4": {4}, "6": {6}, "all": {4, 6}, "": {4}} {
		got, err := ParseFamilies(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseFamilies("5"); err == nil || !strings.Contains(err.Error(), `"5"`) {
		t.Errorf("5: %v", err)
	}
}

func TestProbeSpecs(t *testing.T) {
	st := testState()
	specs := MatrixSpecs(st, []int{4, 6})
	// shop/web -> tools/web (1 port x 2 fam), -> db (1 port x v4 only)
	// tools/web -> shop/web (2 ports x 2 fam), -> db (1)
	// db -> shop/web (4), -> tools/web (2)
	if len(specs) != 3+5+6 {
		t.Fatalf("matrix has %d probes, want 14", len(specs))
	}
	for _, s := range specs {
		if s.From.FullName() == s.To {
			t.Errorf("probe from a pod to itself: %+v", s)
		}
	}
	tgt, _ := ParseTarget("db:5432/tcp")
	got, err := ProbeSpecsFor(st, "tools/web", tgt, []int{4})
	if err != nil || len(got) != 1 || got[0].Target.String() != "10.200.2.3:5432" || got[0].To != "shop/db" {
		t.Errorf("single probe: %+v %v", got, err)
	}
	if _, err := ProbeSpecsFor(st, "tools/web", tgt, []int{6}); err == nil || !strings.Contains(err.Error(), "no IPv6") {
		t.Errorf("v6 of a v4-only pod: %v", err)
	}
	tgt, _ = ParseTarget("[fd00::9]:80/udp")
	got, err = ProbeSpecsFor(st, "db", tgt, []int{4})
	if err != nil || len(got) != 1 || got[0].Target.String() != "[fd00::9]:80" || got[0].Proto != ProtoUDP {
		t.Errorf("ip probe: %+v %v", got, err)
	}
	if _, err := ProbeSpecsFor(st, "web", tgt, []int{4}); err == nil {
		t.Error("ambiguous FROM accepted")
	}
}

func TestFormatResult(t *testing.T) {
	r := ProbeResult{From: "a/b", To: "c/d", Address: "10.0.0.1:80", Protocol: "tcp", Family: 4, Connected: true}
	if s := FormatResult(r); !strings.HasSuffix(s, "connected") || !strings.HasPrefix(s, "a/b -> c/d") {
		t.Error(s)
	}
	r.Connected, r.Error = false, "refused"
	if s := FormatResult(r); !strings.Contains(s, "NOT connected: refused") {
		t.Error(s)
	}
	r.Unsupported = true
	if s := FormatResult(r); !strings.Contains(s, "unsupported") {
		t.Error(s)
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.startTime != 987654 {
		t.Errorf("got %+v", st)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 4 1 0 0 0 1 2 0 0 20 0 1 0 abc 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseMountsUnder(t *testing.T) {
	info := `22 1 0:21 / /run rw shared:5 - tmpfs tmpfs rw
40 22 0:40 / /run/lumen-lab/x/nodes/n1/bpf rw - bpf bpf rw
41 22 0:41 / /run/lumen-lab/x/nodes/n1/bpf/sub rw - bpf bpf rw
42 22 0:42 / /run/lumen-lab/xy/nodes/n1/bpf rw - bpf bpf rw
43 22 0:43 / /run/lumen-lab/x/with\040space rw - tmpfs tmpfs rw
44 22 0:44 / /run/lumen-lab/x rw - tmpfs tmpfs rw
`
	got := parseMountsUnder(info, "/run/lumen-lab/x")
	want := []string{"/run/lumen-lab/x/nodes/n1/bpf/sub", "/run/lumen-lab/x/nodes/n1/bpf", "/run/lumen-lab/x/with space", "/run/lumen-lab/x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestContainerID(t *testing.T) {
	a := ContainerID("l", "shop", "web")
	if len(a) != 64 || a != ContainerID("l", "shop", "web") || a == ContainerID("l", "tools", "web") || a == ContainerID("m", "shop", "web") {
		t.Errorf("container IDs not stable and distinct: %s", a)
	}
}

func TestServeConfig(t *testing.T) {
	c := ServeConfigFor([]Port{{Port: 80, Protocol: ProtoTCP}, {Port: 81, Protocol: ProtoTCP}, {Port: 80, Protocol: ProtoUDP}, {Port: 80, Protocol: ProtoSCTP}})
	want := []string{"--tcp", "80,81", "--udp", "80", "--sctp", "80"}
	if got := c.Args(); !reflect.DeepEqual(got, want) {
		t.Errorf("args = %q", got)
	}
	if ps, err := ParsePortList("80, 81"); err != nil || !reflect.DeepEqual(ps, []uint16{80, 81}) {
		t.Errorf("ParsePortList = %v %v", ps, err)
	}
	if ps, err := ParsePortList(""); err != nil || ps != nil {
		t.Errorf("empty = %v %v", ps, err)
	}
	for _, bad := range []string{"0", "x", "80,", "70000"} {
		if _, err := ParsePortList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadinessSpecs(t *testing.T) {
	st := testState()
	st.Pods = append(st.Pods, PodState{Name: "quiet", Namespace: "x", Node: "n1", IPv4: "10.200.1.9", IPv6: "fd00:10:200:1::9"})
	specs := readinessSpecs(st)
	// Every pod probes one served pod per node, on each family it has.
	type key struct{ from, to string }
	got := map[key]int{}
	for _, s := range specs {
		got[key{s.From.FullName(), s.To}]++
		if s.To == "x/quiet" {
			t.Errorf("probe to a pod without ports: %+v", s)
		}
	}
	want := map[key]int{
		{"shop/web", "tools/web"}: 2, // n2: first served pod; n1: only itself
		{"tools/web", "shop/web"}: 2, {"tools/web", "shop/db"}: 1,
		{"shop/db", "shop/web"}: 2, {"shop/db", "tools/web"}: 2,
		{"x/quiet", "shop/web"}: 2, {"x/quiet", "tools/web"}: 2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readiness probes:\n got %v\nwant %v", got, want)
	}
}

func TestTopologyObjects(t *testing.T) {
	topo, err := ParseTopology([]byte(goodTopology))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := topologyObjects(topo)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	want := []string{"Namespace /default", "Namespace /shop", "Pod shop/web", "Pod default/client"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("objects %q, want %q", kinds, want)
	}
	web, err := resource.PodOf(&objs[2])
	if err != nil {
		t.Fatal(err)
	}
	if web.Spec.NodeName != "n1" || web.Labels["app"] != "web" {
		t.Errorf("pod web: %+v", web)
	}
	var ports []string
	for _, p := range web.Ports() {
		ports = append(ports, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
	}
	if strings.Join(ports, ",") != "80/TCP,81/TCP,80/UDP,80/SCTP" {
		t.Errorf("pod web ports %v", ports)
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"web:80/tcp", "shop/web:81/udp", "10.0.0.1:80/sctp", "[fd00::1]:80/tcp", "[::ffff:1.2.3.4]:1/udp", "a:b:c", "[fe80::1%eth0]:80/tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid target") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if tg.Port.Port == 0 {
			t.Fatal("port 0 accepted")
		}
		if tg.IsPod == tg.Addr.IsValid() {
			t.Fatalf("target is both or neither a pod and an address: %+v", tg)
		}
		if tg.IsPod && strings.ContainsAny(tg.Host, ":[]") {
			t.Fatalf("pod name with address characters: %q", tg.Host)
		}
		// The parsed target renders back to an equivalent string.
		again, err := ParseTarget(tg.Host + ":" + tg.Port.String())
		if err != nil || again.Port != tg.Port || again.Addr != tg.Addr || again.Host != tg.Host {
			t.Fatalf("round trip of %q: %+v %v", s, again, err)
		}
	})
}

func TestLockSurvivesRemoval(t *testing.T) {
	testutil.RequirePrivileged(t)
	name := "lk" + testutil.Suffix()
	t.Cleanup(func() { _ = os.Remove(labpath.LockFile(name)) })
	unlock, err := lock(name)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := lock(name)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("second lock taken while the first is held")
	case <-time.After(200 * time.Millisecond):
	}
	// Down removes the file while holding the lock.
	if err := os.Remove(labpath.LockFile(name)); err != nil {
		t.Fatal(err)
	}
	unlock()
	u2 := <-got
	// The waiter must hold a lock on the file now at the path, so that a
	// third locker excludes it.
	third := make(chan func(), 1)
	go func() {
		u, _ := lock(name)
		third <- u
	}()
	select {
	case u := <-third:
		u()
		t.Fatal("third lock taken while the second is held")
	case <-time.After(200 * time.Millisecond):
	}
	u2()
	(<-third)()
}
