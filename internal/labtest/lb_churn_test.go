package labtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const churnService = `apiVersion: v1
kind: Service
metadata: {name: churn, namespace: shop}
spec:
  type: NodePort
  selector: {app: be}
  ports: [{name: http, port: 8080, targetPort: 80, nodePort: 30090, protocol: TCP}]
`

// TestLBBackendChurn removes and re-adds backends (their Pod objects)
// while clients open connections back to back: pods through socket load
// balancing on both nodes, and an external client through n1's node port
// (per-packet, with SNAT to the remote backends). Once both agents have
// dropped a backend, no connection opened after that may reach it, and no
// connection may fail (every backend pod keeps running, so a failure means a
// hole in the maps) except, per packet, one in flight to a backend being
// removed: its packets after the removal go elsewhere and are reset.
func TestLBBackendChurn(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	applyYAML(t, name, churnService)
	svc := getService(t, name, "shop", "churn")
	names := podNames(t, name)
	frontend := hostPort(svc.ip(t, 4), 8080)
	nodePort := hostPort(nodeIP(t, name, "n1", 4), 30090)
	all := map[string]string{"shop/be-a1": "active", "shop/be-b1": "active", "shop/be-b2": "active"}
	for _, node := range []string{"n1", "n2"} {
		waitStates(t, name, node, frontend, all)
	}
	waitStates(t, name, "n1", nodePort, all)

	saved := map[string]string{}
	for _, p := range lbBackends {
		ns, pod, _ := strings.Cut(p, "/")
		saved[p] = mustLumen(t, name, "get", "pod", "-n", ns, pod, "-o", "json")
	}
	type churner struct {
		c      *lbClient
		target string
	}
	churners := []churner{
		{startClient(t, name, "tools/cl1"), frontend},
		{startClient(t, name, "tools/cl2"), frontend},
		{startClient(t, name, "client/ext"), nodePort},
	}
	for _, ch := range churners {
		ch.c.must("churn tcp %s", ch.target)
	}

	// gone: the windows in which a backend must not be chosen.
	type window struct {
		pod                string
		issued, from, till int64 // delete issued; removal seen by both agents; re-added
	}
	var gone []window
	for round, pod := range []string{"shop/be-b1", "shop/be-a1", "shop/be-b2", "shop/be-b1"} {
		ns, podName, _ := strings.Cut(pod, "/")
		issued := time.Now().UnixNano()
		mustLumen(t, name, "delete", "pod", podName, "-n", ns)
		rest := map[string]string{}
		for p := range all {
			if p != pod {
				rest[p] = "active"
			}
		}
		for _, node := range []string{"n1", "n2"} {
			waitStates(t, name, node, frontend, rest)
		}
		waitStates(t, name, "n1", nodePort, rest)
		from := time.Now().UnixNano()
		time.Sleep(400 * time.Millisecond)
		till := time.Now().UnixNano()
		gone = append(gone, window{pod, issued, from, till})
		applyYAML(t, name, saved[pod])
		for _, node := range []string{"n1", "n2"} {
			waitStates(t, name, node, frontend, all)
		}
		waitStates(t, name, "n1", nodePort, all)
		t.Logf("round %d: %s removed and back", round, pod)
		time.Sleep(200 * time.Millisecond)
	}

	for _, ch := range churners {
		r := ch.c.must("churnstop")
		perPacket := strings.HasPrefix(ch.c.where, "client/")
		total, bad, failed, inFlight := len(r.Records), 0, 0, 0
		seen := map[string]int{}
		for _, rec := range r.Records {
			if rec.Err != "" {
				if perPacket && slices.ContainsFunc(gone, func(w window) bool {
					return rec.Start >= w.issued-int64(2*time.Second) && rec.Start < w.from
				}) {
					inFlight++
					continue
				}
				failed++
				if failed <= 5 {
					near := ""
					for i, w := range gone {
						near += fmt.Sprintf(" round %d %+v;", i, time.Duration(rec.Start-w.issued))
					}
					t.Errorf("%s -> %s: a connection failed during churn: %s (started, relative to each removal:%s)", ch.c.where, ch.target, rec.Err, near)
				}
				continue
			}
			pod := whoIs(names, []string{rec.Backend})
			seen[pod]++
			for _, w := range gone {
				if pod == w.pod && rec.Start >= w.from && rec.Start < w.till {
					bad++
					if bad <= 5 {
						t.Errorf("%s -> %s: a connection opened %v after %s was removed reached it", ch.c.where, ch.target, time.Duration(rec.Start-w.from), pod)
					}
				}
			}
		}
		t.Logf("%s -> %s: %d connections, %d failed (and %d in flight to a backend being removed), %d to removed backends; by backend %v", ch.c.where, ch.target, total, failed, inFlight, bad, seen)
		if total < 100 {
			t.Errorf("%s -> %s: only %d connections during churn", ch.c.where, ch.target, total)
		}
	}
}
