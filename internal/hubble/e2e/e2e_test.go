// Package e2e tests Lumen's Hubble API end to end: a real lab (agents in
// node namespaces, pods, probes), lumen-relay, `lumen observe` and the real
// hubble CLI (built by hack/build-hubble.sh into the cache). They need root.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

// binDir holds lumen, lumen-agent, lumen-cni and lumen-relay built for the run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "lumen-hubble-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/lumen", "./cmd/lumen-agent", "./cmd/lumen-cni", "./cmd/lumen-relay")
		cmd.Dir = filepath.Join("..", "..", "..")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the binaries:", err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// hubbleBinary is the real hubble CLI from the cache (LUMEN_HUBBLE overrides).
// Missing, the test skips, except in CI where it fails.
func hubbleBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("LUMEN_HUBBLE")
	if p == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(cache, "lumen", "hubble", "v1.20.2", "hubble")
	}
	if _, err := os.Stat(p); err != nil {
		testutil.Skip(t, "no hubble CLI at "+p+": run hack/build-hubble.sh")
	}
	return p
}

const topology = `
routing: native
nodes: [{name: n1, zone: zone-a}, {name: n2, zone: zone-b}]
pods:
  - {name: frontend, namespace: shop, labels: {app: frontend}, node: n1, ports: ["80/tcp", "53/udp"]}
  - {name: catalog, namespace: shop, labels: {app: catalog}, node: n2, ports: ["80/tcp", "81/tcp", "53/udp"]}
  - {name: debug, namespace: tools, labels: {app: debug}, node: n1, ports: ["80/tcp"]}
`

// Only app=frontend may reach catalog, on 80/tcp.
const policy = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: catalog-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: catalog}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
    ports:
    - {port: 80, protocol: TCP}
`

type env struct {
	t        *testing.T
	lab      string
	hubble   string
	sock     map[string]string // node -> hubble socket
	relay    string            // relay socket
	identity map[string]uint32 // namespace/pod -> identity
	ip       map[string]string // namespace/pod -> IPv4
}

// exe runs a binary and returns its stdout; a non-zero exit fails the test
// unless allowFail.
func (e *env) exe(allowFail bool, stdin string, bin string, args ...string) (string, string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader(stdin)
	err := cmd.Run()
	if err != nil && !allowFail {
		e.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String(), err
}

func (e *env) lumen(args ...string) string {
	e.t.Helper()
	out, _, _ := e.exe(false, "", filepath.Join(binDir, "lumen"), append([]string{"--lab", e.lab}, args...)...)
	return out
}

func (e *env) lumenIn(stdin string, args ...string) string {
	e.t.Helper()
	out, _, _ := e.exe(false, stdin, filepath.Join(binDir, "lumen"), append([]string{"--lab", e.lab}, args...)...)
	return out
}

// probe runs a lab probe; want tells whether it must connect.
func (e *env) probe(from, to string, want bool) {
	e.t.Helper()
	out, _, err := e.exe(true, "", filepath.Join(binDir, "lumen"), "--lab", e.lab, "lab", "probe", from, to, "--timeout", "2s")
	if (err == nil) != want {
		e.t.Fatalf("probe %s -> %s: %v, want connected=%v\n%s", from, to, err, want, out)
	}
}

// flows parses JSON lines of GetFlowsResponses (hubble -o json, lumen observe -o json).
func flows(t *testing.T, out string) []*flowpb.Flow {
	t.Helper()
	var fs []*flowpb.Flow
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r observerpb.GetFlowsResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decoding %q: %v", line, err)
		}
		if f := r.GetFlow(); f != nil {
			fs = append(fs, f)
		}
	}
	return fs
}

func name(ep *flowpb.Endpoint) string { return ep.GetNamespace() + "/" + ep.GetPodName() }

func describe(f *flowpb.Flow) string {
	return fmt.Sprintf("%s %s(%d) -> %s(%d) %v/%v %v %s", f.GetNodeName(), name(f.GetSource()), f.GetSource().GetIdentity(),
		name(f.GetDestination()), f.GetDestination().GetIdentity(), f.GetEventType().GetType(), f.GetEventType().GetSubType(),
		f.GetVerdict(), f.GetSummary())
}

// find returns the flows matching pred, failing with what there was when none.
func find(t *testing.T, what string, fs []*flowpb.Flow, pred func(*flowpb.Flow) bool) []*flowpb.Flow {
	t.Helper()
	var out []*flowpb.Flow
	for _, f := range fs {
		if pred(f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		var all []string
		for _, f := range fs {
			all = append(all, describe(f))
		}
		t.Fatalf("no flow %s among %d:\n%s", what, len(fs), strings.Join(all, "\n"))
	}
	return out
}

func dport(f *flowpb.Flow) uint32 {
	if tcp := f.GetL4().GetTCP(); tcp != nil {
		return tcp.GetDestinationPort()
	}
	return f.GetL4().GetUDP().GetDestinationPort()
}

func setup(t *testing.T) *env {
	testutil.RequirePrivileged(t)
	e := &env{t: t, lab: "h" + testutil.Suffix(), sock: map[string]string{}, identity: map[string]uint32{}, ip: map[string]string{}}
	e.hubble = hubbleBinary(t)
	topo := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(topo, []byte(topology), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, errOut, err := e.exe(true, "", filepath.Join(binDir, "lumen"), "--lab", e.lab, "lab", "down"); err != nil {
			t.Errorf("lab down: %v %s", err, errOut)
		}
	})
	e.lumen("lab", "up", "-f", topo)
	for _, n := range []string{"n1", "n2"} {
		e.sock[n] = "unix://" + filepath.Join(labpath.NodeDir(e.lab, n), "hubble.sock")
		var eps []api.Endpoint
		if err := json.Unmarshal([]byte(e.lumen("--node", n, "endpoint", "list", "-o", "json")), &eps); err != nil {
			t.Fatal(err)
		}
		for _, ep := range eps {
			e.identity[ep.Namespace+"/"+ep.PodName] = ep.Identity
			e.ip[ep.Namespace+"/"+ep.PodName] = ep.IPv4
		}
	}
	if len(e.identity) != 3 {
		t.Fatalf("endpoints: %v", e.identity)
	}
	// `lumen lab up` runs a relay with every node's agent as a peer; the
	// relay subtests check that both nodes' flows come through it in time
	// order.
	var st lab.Report
	if err := json.Unmarshal([]byte(e.lumen("lab", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Relay == nil || !st.Relay.Running || st.Relay.Socket != "unix://"+lab.RelaySocket(e.lab) {
		t.Fatalf("lab status: relay %+v, want running on %s", st.Relay, lab.RelaySocket(e.lab))
	}
	e.relay = lab.RelaySocket(e.lab)
	return e
}

func TestHubble(t *testing.T) {
	e := setup(t)
	frontend, catalog, debug := e.identity["shop/frontend"], e.identity["shop/catalog"], e.identity["tools/debug"]

	// Traffic: cross-node TCP and UDP, same-node TCP, then a policy denial.
	e.probe("shop/frontend", "catalog:80/tcp", true)
	e.probe("shop/frontend", "catalog:53/udp", true)
	e.probe("tools/debug", "frontend:80/tcp", true)
	e.lumenIn(policy, "apply", "-f", "-")
	waitFor(t, "the policy to deny debug -> catalog", func() bool {
		_, _, err := e.exe(true, "", filepath.Join(binDir, "lumen"), "--lab", e.lab, "lab", "probe", "tools/debug", "catalog:80/tcp", "--timeout", "1s")
		return err != nil
	})
	e.probe("shop/frontend", "catalog:80/tcp", true)

	t.Run("status", func(t *testing.T) {
		out, _, _ := e.exe(false, "", e.hubble, "status", "--server", e.sock["n1"])
		if !strings.Contains(out, "Healthcheck") || !strings.Contains(out, "Ok") || !strings.Contains(out, "/4,095") {
			t.Errorf("hubble status (agent):\n%s", out)
		}
		out, _, _ = e.exe(false, "", e.hubble, "status", "--server", "unix://"+e.relay)
		if !strings.Contains(out, "Connected Nodes: 2/2") || !strings.Contains(out, "/8,190") {
			t.Errorf("hubble status (relay):\n%s", out)
		}
	})

	t.Run("list nodes", func(t *testing.T) {
		out, _, _ := e.exe(false, "", e.hubble, "list", "nodes", "--server", "unix://"+e.relay)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[1], "n1 ") || !strings.HasPrefix(lines[2], "n2 ") ||
			!strings.Contains(lines[1], "Connected") || !strings.Contains(lines[2], "Connected") {
			t.Errorf("hubble list nodes (relay):\n%s", out)
		}
		out, _, _ = e.exe(false, "", e.hubble, "list", "nodes", "--server", e.sock["n2"])
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "n2 ") {
			t.Errorf("hubble list nodes (agent):\n%s", out)
		}
		out, _, _ = e.exe(false, "", e.hubble, "list", "namespaces", "--server", "unix://"+e.relay)
		if !strings.Contains(out, "shop") || !strings.Contains(out, "tools") {
			t.Errorf("hubble list namespaces:\n%s", out)
		}
	})

	t.Run("icmp", func(t *testing.T) {
		// A real ping: the flows carry the ICMP type and the hubble CLI
		// prints it.
		e.lumen("lab", "exec", "shop/frontend", "--", "ping", "-c", "1", "-W", "5", e.ip["tools/debug"])
		out, _, _ := e.exe(false, "", e.hubble, "observe", "--server", e.sock["n1"], "--protocol", "icmp", "--from-pod", "shop/frontend", "-o", "json", "--last", "100")
		req := find(t, "frontend -> debug echo request", flows(t, out), func(f *flowpb.Flow) bool {
			return name(f.GetDestination()) == "tools/debug" && f.GetL4().GetICMPv4() != nil
		})[0]
		if i := req.GetL4().GetICMPv4(); i.GetType() != 8 || i.GetCode() != 0 || req.GetSummary() != "ICMPv4 EchoRequest" {
			t.Errorf("echo request: ICMPv4 %v, summary %q", i, req.GetSummary())
		}
		out, _, _ = e.exe(false, "", e.hubble, "observe", "--server", e.sock["n1"], "--protocol", "icmp", "--to-pod", "shop/frontend", "--last", "100")
		if !strings.Contains(out, "EchoReply") {
			t.Errorf("hubble observe (compact) shows no EchoReply:\n%s", out)
		}
	})

	t.Run("agent flows", func(t *testing.T) {
		out, _, _ := e.exe(false, "", e.hubble, "observe", "--server", e.sock["n1"], "--pod", "shop/frontend", "-o", "json", "--last", "1000")
		fs := flows(t, out)
		for _, f := range fs {
			if name(f.GetSource()) != "shop/frontend" && name(f.GetDestination()) != "shop/frontend" {
				t.Errorf("--pod shop/frontend returned %s", describe(f))
			}
			if f.GetNodeName() != "n1" || !contains(f.GetNodeLabels(), "topology.kubernetes.io/zone=zone-a") {
				t.Errorf("n1's agent returned a flow of %s %v", f.GetNodeName(), f.GetNodeLabels())
			}
		}
		// frontend's SYN to catalog (on n2) leaves n1 by the FIB: to-network,
		// egress.
		syn := find(t, "frontend -> catalog:80 SYN to-network", fs, func(f *flowpb.Flow) bool {
			// IPv4: lab up also probes over IPv6, and those flows may come first.
			return name(f.GetSource()) == "shop/frontend" && name(f.GetDestination()) == "shop/catalog" && dport(f) == 80 &&
				f.GetIP().GetIpVersion() == flowpb.IPVersion_IPv4 &&
				f.GetL4().GetTCP().GetFlags().GetSYN() && !f.GetL4().GetTCP().GetFlags().GetACK() &&
				f.GetTraceObservationPoint() == flowpb.TraceObservationPoint_TO_NETWORK
		})[0]
		checks := []struct {
			what      string
			got, want any
		}{
			{"verdict", syn.GetVerdict(), flowpb.Verdict_FORWARDED},
			{"event type", syn.GetEventType().GetType(), int32(4)},
			{"event subtype", syn.GetEventType().GetSubType(), int32(11)},
			{"source identity", syn.GetSource().GetIdentity(), frontend},
			{"destination identity", syn.GetDestination().GetIdentity(), catalog},
			{"direction", syn.GetTrafficDirection(), flowpb.TrafficDirection_EGRESS},
			{"is_reply", syn.GetIsReply().GetValue(), false},
			{"source ip", syn.GetIP().GetSource(), e.ip["shop/frontend"]},
			{"destination ip", syn.GetIP().GetDestination(), e.ip["shop/catalog"]},
			{"summary", syn.GetSummary(), "TCP Flags: SYN"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: %v, want %v (%s)", c.what, c.got, c.want, describe(syn))
			}
		}
		if !contains(syn.GetSource().GetLabels(), "k8s:app=frontend") || !contains(syn.GetDestination().GetLabels(), "k8s:app=catalog") {
			t.Errorf("labels: %v -> %v", syn.GetSource().GetLabels(), syn.GetDestination().GetLabels())
		}
		if syn.GetSource().GetID() == 0 {
			t.Errorf("local endpoint without ID: %v", syn.GetSource())
		}
		// Same node: debug's SYN leaves its pod (from-endpoint, egress, not
		// a reply), frontend's SYN-ACK is a reply.
		find(t, "debug -> frontend:80 SYN from-endpoint", fs, func(f *flowpb.Flow) bool {
			return name(f.GetSource()) == "tools/debug" && f.GetSource().GetIdentity() == debug && dport(f) == 80 &&
				f.GetTraceObservationPoint() == flowpb.TraceObservationPoint_FROM_ENDPOINT && f.GetEventType().GetSubType() == 5 &&
				f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && f.GetIsReply() != nil && !f.GetIsReply().GetValue() &&
				f.GetL4().GetTCP().GetFlags().GetSYN() && !f.GetL4().GetTCP().GetFlags().GetACK()
		})
		find(t, "frontend -> debug SYN-ACK from-endpoint, a reply", fs, func(f *flowpb.Flow) bool {
			return name(f.GetSource()) == "shop/frontend" && name(f.GetDestination()) == "tools/debug" &&
				f.GetTraceObservationPoint() == flowpb.TraceObservationPoint_FROM_ENDPOINT && f.GetIsReply().GetValue() &&
				f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && f.GetL4().GetTCP().GetFlags().GetACK()
		})
		// The same-node connection from debug is delivered to frontend's veth.
		find(t, "debug -> frontend:80 SYN to-endpoint", fs, func(f *flowpb.Flow) bool {
			return name(f.GetSource()) == "tools/debug" && f.GetSource().GetIdentity() == debug && dport(f) == 80 &&
				f.GetTraceObservationPoint() == flowpb.TraceObservationPoint_TO_ENDPOINT && f.GetEventType().GetSubType() == 0 &&
				f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && f.GetL4().GetTCP().GetFlags().GetSYN()
		})
	})

	t.Run("remote names and policy drops", func(t *testing.T) {
		out, _, _ := e.exe(false, "", e.hubble, "observe", "--server", e.sock["n2"], "--to-pod", "shop/catalog", "-o", "json", "--all")
		fs := flows(t, out)
		// On n2, frontend (a remote pod) is named from the store.
		find(t, "frontend -> catalog SYN to-endpoint on n2", fs, func(f *flowpb.Flow) bool {
			return name(f.GetSource()) == "shop/frontend" && f.GetSource().GetIdentity() == frontend &&
				f.GetTraceObservationPoint() == flowpb.TraceObservationPoint_TO_ENDPOINT && f.GetL4().GetTCP().GetFlags().GetSYN()
		})
		find(t, "policy verdict allowing frontend", fs, func(f *flowpb.Flow) bool {
			return f.GetEventType().GetType() == 5 && name(f.GetSource()) == "shop/frontend" && f.GetVerdict() == flowpb.Verdict_FORWARDED &&
				f.GetPolicyMatchType() == 2 && f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS
		})
		find(t, "policy verdict denying debug", fs, func(f *flowpb.Flow) bool {
			return f.GetEventType().GetType() == 5 && name(f.GetSource()) == "tools/debug" && f.GetSource().GetIdentity() == debug &&
				f.GetVerdict() == flowpb.Verdict_DROPPED && f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENIED
		})
		find(t, "drop of debug's SYN", fs, func(f *flowpb.Flow) bool {
			return f.GetEventType().GetType() == 1 && f.GetEventType().GetSubType() == 133 && name(f.GetSource()) == "tools/debug" &&
				f.GetVerdict() == flowpb.Verdict_DROPPED
		})
		// The verdict filter returns exactly the drops.
		out, _, _ = e.exe(false, "", e.hubble, "observe", "--server", e.sock["n2"], "--verdict", "DROPPED", "-o", "json", "--all")
		drops := flows(t, out)
		if len(drops) == 0 {
			t.Fatal("no drops")
		}
		for _, f := range drops {
			if f.GetVerdict() != flowpb.Verdict_DROPPED || name(f.GetSource()) != "tools/debug" {
				t.Errorf("--verdict DROPPED returned %s", describe(f))
			}
		}
		// Compact output names the policy verdict as hubble does.
		out, _, _ = e.exe(false, "", e.hubble, "observe", "--server", e.sock["n2"], "--type", "policy-verdict", "--all")
		if !strings.Contains(out, "policy-verdict:none INGRESS DENIED") || !strings.Contains(out, "policy-verdict:L3-L4 INGRESS ALLOWED") {
			t.Errorf("policy verdicts (compact):\n%s", out)
		}
	})

	t.Run("relay", func(t *testing.T) {
		out, _, _ := e.exe(false, "", e.hubble, "observe", "--server", "unix://"+e.relay, "--pod", "shop/catalog", "-o", "json", "--all")
		fs := flows(t, out)
		nodes := map[string]int{}
		for i, f := range fs {
			nodes[f.GetNodeName()]++
			if name(f.GetSource()) != "shop/catalog" && name(f.GetDestination()) != "shop/catalog" {
				t.Errorf("--pod shop/catalog returned %s", describe(f))
			}
			if i > 0 && f.GetTime().AsTime().Before(fs[i-1].GetTime().AsTime()) {
				t.Errorf("flow %d (%s) is older than the one before it", i, describe(f))
			}
		}
		if nodes["n1"] == 0 || nodes["n2"] == 0 {
			t.Errorf("flows per node through the relay: %v", nodes)
		}
		// Node label and node name filters select one node's flows.
		for _, args := range [][]string{{"--node-label", "topology.kubernetes.io/zone=zone-b"}, {"--node-name", "n2"}} {
			out, _, _ = e.exe(false, "", e.hubble, append([]string{"observe", "--server", "unix://" + e.relay, "--all", "-o", "json"}, args...)...)
			fs := flows(t, out)
			if len(fs) == 0 {
				t.Errorf("%v: no flows", args)
			}
			for _, f := range fs {
				if f.GetNodeName() != "n2" {
					t.Errorf("%v returned a flow of %s", args, f.GetNodeName())
				}
			}
		}
		// The relay's last N is the last N over both nodes.
		out, _, _ = e.exe(false, "", e.hubble, "observe", "--server", "unix://"+e.relay, "--last", "5", "-o", "json")
		if last := flows(t, out); len(last) != 5 {
			t.Errorf("--last 5 through the relay: %d flows", len(last))
		}
	})

	t.Run("follow through the relay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.hubble, "observe", "--server", "unix://"+e.relay, "--follow",
			"--to-pod", "shop/frontend", "--protocol", "udp", "-o", "json")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Probe until a new flow shows: the stream may start after a probe.
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("hubble observe --follow ended")
				}
				for _, f := range flows(t, l) {
					if name(f.GetDestination()) != "shop/frontend" || f.GetL4().GetUDP() == nil {
						t.Fatalf("--follow --to-pod shop/frontend --protocol udp returned %s", describe(f))
					}
					if name(f.GetSource()) == "shop/catalog" && dport(f) == 53 {
						return
					}
				}
			case <-tick.C:
				_, _, _ = e.exe(true, "", filepath.Join(binDir, "lumen"), "--lab", e.lab, "lab", "probe", "shop/catalog", "frontend:53/udp", "--timeout", "1s")
			case <-ctx.Done():
				t.Fatal("no followed flow")
			}
		}
	})

	t.Run("lumen observe", func(t *testing.T) {
		out := e.lumen("--node", "n1", "observe", "--from-pod", "tools/debug", "-o", "json", "--all")
		fs := flows(t, out)
		for _, f := range fs {
			if name(f.GetSource()) != "tools/debug" {
				t.Errorf("--from-pod tools/debug returned %s", describe(f))
			}
		}
		find(t, "debug -> frontend", fs, func(f *flowpb.Flow) bool { return name(f.GetDestination()) == "shop/frontend" })
		// Without --node, the lab's relay is used: both nodes' flows.
		out = e.lumen("observe", "--protocol", "udp", "--print-node-name", "--all")
		if !strings.Contains(out, "[n1]") || !strings.Contains(out, "[n2]") || !strings.Contains(out, "shop/catalog:53") {
			t.Errorf("lumen observe through the relay:\n%s", out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasSuffix(line, "(UDP)") {
				t.Errorf("--protocol udp printed %q", line)
			}
		}
	})

	t.Run("invalid filter", func(t *testing.T) {
		for _, srv := range []string{e.sock["n1"], "unix://" + e.relay} {
			conn, err := transport.Dial(srv, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), &observerpb.GetFlowsRequest{
				Whitelist: []*flowpb.FlowFilter{{DestinationPort: []string{"80"}}, {SourceIp: []string{"10.0.0"}}}})
			if err == nil {
				_, err = st.Recv()
			}
			conn.Close()
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "whitelist[1].source_ip[0]: ") {
				t.Errorf("%s: %v", srv, err)
			}
		}
		// The lumen CLI reports it too, and fails.
		_, errOut, err := e.exe(true, "", filepath.Join(binDir, "lumen"), "--lab", e.lab, "--node", "n1", "observe", "--from-ip", "10.0.0")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(errOut, "whitelist[0].source_ip[0]") {
			t.Errorf("lumen observe --from-ip 10.0.0: %v %s", err, errOut)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		out := e.lumen("--node", "n2", "metrics")
		for _, want := range []string{
			`lumen_hubble_flows_processed_total{subtype="to-endpoint",type="Trace",verdict="FORWARDED"}`,
			`lumen_hubble_drop_total{direction="INGRESS",protocol="TCP",reason="POLICY_DENIED"}`,
			`lumen_hubble_tcp_flags_total{family="IPv4",flag="SYN"}`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// waitFor polls cond; the timeout only guards against hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
