package labtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/testutil"
)

// sameportService has one port number over TCP and UDP, as Kubernetes'
// conformance test "Services should serve endpoints on same port and
// different protocols"; ports lists the "- {...}" port lines. Its selector
// matches no pod until checkSamePort labels the backends.
func sameportService(ports ...string) string {
	return `apiVersion: v1
kind: Service
metadata: {name: mp, namespace: shop}
spec:
  selector: {mp: "yes"}
  ports:
` + "  " + strings.Join(ports, "\n  ") + "\n"
}

const (
	mpTCP = `- {name: tcp-port, port: 80, targetPort: 80, protocol: TCP}`
	mpUDP = `- {name: udp-port, port: 80, targetPort: 80, protocol: UDP}`
)

// checkSamePort follows the conformance test: the service exists before
// its endpoints; then TCP and UDP to the same cluster IP port both reach
// every backend from a pod on each node; with only the TCP port left UDP
// fails and TCP still works, and the other way round.
// In a --k8s lab kubectl writes the objects and the real EndpointSlice
// controller makes the slices.
func checkSamePort(t *testing.T, name string, k8sMode bool) {
	verb := "create"
	apply := func(yaml string) {
		t.Helper()
		if k8sMode {
			// Then replace, not apply: apply's merge keys ports by number
			// alone and drops both ports 80 (the conformance test updates).
			kubectl(t, name, yaml, verb, "-f", "-")
			verb = "replace"
		} else {
			applyYAML(t, name, yaml)
		}
	}
	apply(sameportService(mpTCP, mpUDP))
	var frontend string
	if k8sMode {
		frontend = hostPortString(kubectl(t, name, "", "get", "svc", "-n", "shop", "mp", "-o", "jsonpath={.spec.clusterIP}"), 80)
	} else {
		frontend = hostPort(getService(t, name, "shop", "mp").ip(t, 4), 80)
	}
	want := backendAddrs(t, name, 4, lbBackends)
	for _, node := range []string{"n1", "n2"} {
		waitBackends(t, name, node, frontend, "TCP", nil)
		waitBackends(t, name, node, frontend, "UDP", nil)
	}
	for _, p := range lbBackends {
		if k8sMode {
			ns, pod, _ := strings.Cut(p, "/")
			kubectl(t, name, "", "label", "pod", "-n", ns, pod, "mp=yes")
			continue
		}
		side := "a"
		if strings.Contains(p, "-b") {
			side = "b"
		}
		setLabels(t, name, "pod", p, map[string]string{"app": "be", "side": side, "mp": "yes"})
	}
	waitProtos := func(protos ...string) {
		t.Helper()
		for _, node := range []string{"n1", "n2"} {
			for _, proto := range protos {
				waitBackends(t, name, node, frontend, proto, want)
			}
		}
	}
	waitProtos("TCP", "UDP")

	names := podNames(t, name)
	reach := func(from, proto string) {
		t.Helper()
		c := startClient(t, name, from)
		what := fmt.Sprintf("%s -> %s/%s", from, frontend, proto)
		r := c.must("many %s %s 30", proto, frontend)
		if len(r.Fails) > 0 {
			t.Errorf("%s: %d of 30 connections failed: %v", what, len(r.Fails), r.Fails)
		}
		got := countsByPod(names, r.Counts)
		t.Logf("%s: %v", what, got)
		for _, b := range lbBackends {
			if got[b] == 0 {
				t.Errorf("%s: backend %s never answered in 30 connections: %v", what, b, got)
			}
		}
		for p := range got {
			if !strings.HasPrefix(p, "shop/be-") {
				t.Errorf("%s: answered by %s, not a backend", what, p)
			}
		}
	}
	for _, from := range []string{"tools/cl1", "tools/cl2"} {
		reach(from, "tcp")
		reach(from, "udp")
	}

	// One protocol left: the other one's frontend is gone.
	for _, step := range []struct{ port, keep, gone string }{{mpTCP, "tcp", "udp"}, {mpUDP, "udp", "tcp"}} {
		apply(sameportService(step.port))
		waitProtos(strings.ToUpper(step.keep))
		for _, node := range []string{"n1", "n2"} {
			waitBackends(t, name, node, frontend, strings.ToUpper(step.gone), nil)
		}
		reach("tools/cl1", step.keep)
		if probe(t, name, "tools/cl1", frontend+"/"+step.gone) {
			t.Errorf("only the %s port left: %s/%s still answers", step.keep, frontend, step.gone)
		}
	}
}

func TestLBSocketSamePortTwoProtocols(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	checkSamePort(t, name, false)
}

func TestLBPerPacketSamePortTwoProtocols(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("agentArgs: [\"--bpf-lb-sock-hostns-only\"]\n")))
	checkSamePort(t, name, false)
}

// TestLBKubernetesSamePortTwoProtocols: the same with a real API server and
// EndpointSlice controller.
func TestLBKubernetesSamePortTwoProtocols(t *testing.T) {
	if _, err := controlplane.BinDir(); err != nil {
		testutil.Skip(t, err.Error())
	}
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")), "--k8s")
	checkSamePort(t, name, true)
}
