package labtest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// annotatePod re-applies a stored Pod with annotation key set to value
// (removed when value is "").
func annotatePod(t *testing.T, labName, ref, key, value string) {
	t.Helper()
	ns, pod, _ := strings.Cut(ref, "/")
	var obj map[string]any
	decode(t, mustLumen(t, labName, "get", "pod", "-n", ns, pod, "-o", "json"), &obj)
	md, _ := obj["metadata"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
	}
	if value == "" {
		delete(ann, key)
	} else {
		ann[key] = value
	}
	md["annotations"] = ann
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, labName, string(b))
}

// waitStates waits until node lists frontend's backends (pods) in the
// given states: want maps pod -> "active" or "terminating"; pods not in
// want must not be listed.
func waitStates(t *testing.T, labName, node, frontend string, want map[string]string) {
	t.Helper()
	names := podNames(t, labName)
	var got map[string]string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = map[string]string{}
		for _, s := range serviceList(t, labName, node) {
			if s.Frontend != frontend || s.Protocol != "TCP" {
				continue
			}
			for _, b := range s.Backends {
				a := strings.Trim(b.Address[:strings.LastIndexByte(b.Address, ':')], "[]")
				got[whoIs(names, []string{a})] = b.State
			}
		}
		if len(got) == len(want) && func() bool {
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: backends of %s: got %v, want %v", node, frontend, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connTo opens TCP connections to frontend until one lands on pod, and
// returns its id (the others are closed).
func connTo(t *testing.T, c *lbClient, names map[string]string, frontend, pod, id string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		d := c.must("dial %s tcp %s", id, frontend)
		if whoIs(names, d.Backend) == pod {
			return
		}
		c.must("close %s", id)
	}
	t.Fatalf("200 connections to %s and none reached %s", frontend, pod)
}

// alive checks that a streaming connection keeps echoing.
func alive(t *testing.T, c *lbClient, id, what string) {
	t.Helper()
	start := c.must("stat %s", id).Echoes
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.do("stat %s", id)
		if !r.OK {
			t.Fatalf("%s: the established connection broke: %s", what, r.Err)
		}
		if r.Echoes >= start+20 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the established connection made no progress (%d echoes)", what, r.Echoes-start)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkGraceful walks a backend through termination: lumen.io/terminating
// keeps its established connections and gives it no new ones; when every
// backend terminates, the serving terminating ones take new connections;
// deleting the pod removes it.
func checkGraceful(t *testing.T, name string, perPacket bool) {
	applyYAML(t, name, dualStackService)
	svc := getService(t, name, "shop", "be")
	names := podNames(t, name)
	all := map[string]string{"shop/be-a1": "active", "shop/be-b1": "active", "shop/be-b2": "active"}
	c := startClient(t, name, "tools/cl1")
	for _, fam := range []int{4, 6} {
		waitStates(t, name, "n1", hostPort(svc.ip(t, fam), 8080), all)
	}
	front4, front6 := hostPort(svc.ip(t, 4), 8080), hostPort(svc.ip(t, 6), 8080)

	// Established connections to be-b1 (both families) and be-a1.
	connTo(t, c, names, front4, "shop/be-b1", "b1v4")
	connTo(t, c, names, front6, "shop/be-b1", "b1v6")
	connTo(t, c, names, front4, "shop/be-a1", "a1v4")
	for _, id := range []string{"b1v4", "b1v6", "a1v4"} {
		c.must("stream %s", id)
	}

	// be-b1 terminates.
	annotatePod(t, name, "shop/be-b1", "lumen.io/terminating", "true")
	for _, fam := range []int{4, 6} {
		waitStates(t, name, "n1", hostPort(svc.ip(t, fam), 8080),
			map[string]string{"shop/be-a1": "active", "shop/be-b1": "terminating", "shop/be-b2": "active"})
	}
	alive(t, c, "b1v4", "be-b1 terminating, IPv4")
	alive(t, c, "b1v6", "be-b1 terminating, IPv6")
	for _, front := range []string{front4, front6} {
		r := c.must("many tcp %s 40", front)
		got := countsByPod(names, r.Counts)
		if len(r.Fails) > 0 || got["shop/be-b1"] > 0 || got["shop/be-a1"] == 0 || got["shop/be-b2"] == 0 {
			t.Errorf("be-b1 terminating: new connections to %s: %v, failures %v; want be-a1 and be-b2 only", front, got, r.Fails)
		}
	}

	// Every backend terminates: the serving terminating ones take new
	// connections rather than none.
	annotatePod(t, name, "shop/be-a1", "lumen.io/terminating", "true")
	annotatePod(t, name, "shop/be-b2", "lumen.io/terminating", "true")
	for _, fam := range []int{4, 6} {
		waitStates(t, name, "n1", hostPort(svc.ip(t, fam), 8080), all)
	}
	for _, front := range []string{front4, front6} {
		r := c.must("many tcp %s 40", front)
		got := countsByPod(names, r.Counts)
		if len(r.Fails) > 0 || slices.ContainsFunc(lbBackends, func(p string) bool { return got[p] == 0 }) {
			t.Errorf("every backend terminating: new connections to %s: %v, failures %v; want all three serving terminating backends", front, got, r.Fails)
		}
	}
	alive(t, c, "b1v4", "every backend terminating")

	// be-a1 and be-b2 come back; be-b1 goes away.
	annotatePod(t, name, "shop/be-a1", "lumen.io/terminating", "")
	annotatePod(t, name, "shop/be-b2", "lumen.io/terminating", "")
	mustLumen(t, name, "delete", "pod", "be-b1", "-n", "shop")
	for _, fam := range []int{4, 6} {
		waitStates(t, name, "n1", hostPort(svc.ip(t, fam), 8080), map[string]string{"shop/be-a1": "active", "shop/be-b2": "active"})
	}
	alive(t, c, "a1v4", "be-b1 deleted, connection to be-a1")
	if !perPacket {
		// The socket is connected to the pod itself; the lab's pod (and its
		// echo server) outlives its Pod object, so the connection may go on.
		r := c.do("stat b1v4")
		t.Logf("socket LB: after be-b1's Pod object is deleted its connection is %v (%s)", map[bool]string{true: "still up", false: "closed"}[r.OK], r.Err)
		return
	}
	// Per packet: the backend is gone from the maps, so its connections end.
	for _, id := range []string{"b1v4", "b1v6"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.do("stat %s", id)
			if !r.OK {
				t.Logf("%s after be-b1 was deleted: %s", id, r.Err)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: be-b1 was deleted 30s ago, its connection through the service still echoes (%d echoes)", id, r.Echoes)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r := c.must("many tcp %s 30", front4)
	if got := countsByPod(names, r.Counts); len(r.Fails) > 0 || got["shop/be-b1"] > 0 {
		t.Errorf("be-b1 deleted: new connections: %v, failures %v", got, r.Fails)
	}
}

// TestLBGracefulTermination: terminating backends with socket load
// balancing (pods' connections are made to the backend directly).
func TestLBGracefulTermination(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	checkGraceful(t, name, false)
}

// TestLBGracefulTerminationPerPacket: the same through per-packet DNAT,
// where the service conntrack entry keeps a connection on its backend.
func TestLBGracefulTerminationPerPacket(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("agentArgs: [\"--bpf-lb-sock-hostns-only\"]\n")))
	checkGraceful(t, name, true)
}
