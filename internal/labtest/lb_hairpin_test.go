package labtest

import (
	"testing"
)

// TestLBHairpin: a backend pod that connects to its own service and is
// given itself as the backend ("hairpin") still gets an answer, through
// socket load balancing and through per-packet DNAT (kube-proxy and Cilium
// translate the source for it; a packet from the pod's own address to
// itself arriving on its eth0 is dropped by its kernel otherwise).
func TestLBHairpin(t *testing.T) {
	for _, mode := range []struct{ name, args string }{
		{"socket", ""},
		{"per-packet", "agentArgs: [\"--bpf-lb-sock-hostns-only\"]\n"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			name := newLab(t)
			up(t, name, writeTopology(t, lbTopology(mode.args)))
			svc := setupDualStack(t, name)
			names := podNames(t, name)
			c := startClient(t, name, "shop/be-a1")
			c.must("timeout 1s") // a hairpin failure is a timeout
			for _, fam := range []int{4, 6} {
				for _, pp := range []struct {
					proto string
					port  uint16
				}{{"tcp", 8080}, {"udp", 5353}} {
					front := hostPort(svc.ip(t, fam), pp.port)
					r := c.must("many %s %s 15", pp.proto, front)
					got := countsByPod(names, r.Counts)
					t.Logf("shop/be-a1 -> %s/%s: %v, %d failed", front, pp.proto, got, len(r.Fails))
					if len(r.Fails) > 0 {
						t.Errorf("shop/be-a1 -> its own service %s/%s: %d of 15 connections failed (%v answered): %s", front, pp.proto, len(r.Fails), got, r.Fails[0])
					}
					if got["shop/be-a1"] == 0 && len(r.Fails) == 0 {
						t.Errorf("shop/be-a1 -> %s/%s: never given itself in 15 connections: %v", front, pp.proto, got)
					}
				}
			}
		})
	}
}
