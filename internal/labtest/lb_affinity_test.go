package labtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/lab"
)

// stickyServices: eight ClusterIP services with ClientIP affinity.
func stickyServices() string {
	var b strings.Builder
	for i := range 8 {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: sticky%d, namespace: shop}
spec:
  selector: {app: be}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{name: http, port: 8080, targetPort: 80, protocol: TCP}]
`, i)
	}
	return b.String()
}

// TestLBSessionAffinity: with sessionAffinity ClientIP every connection
// of a client goes to one backend, and clients are clients: different
// clients choose their backends independently (with three backends and
// eight services, three clients all pick the same one each time with
// probability (1/9)^8, two with (1/3)^8). Checked for socket load balancing (clients in the
// node's cgroup) and per-packet (the test's own sockets in the pods,
// outside that cgroup).
func TestLBSessionAffinity(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	applyYAML(t, name, stickyServices())
	names := podNames(t, name)
	var fronts []string
	for i := range 8 {
		front := hostPort(getService(t, name, "shop", fmt.Sprintf("sticky%d", i)).ip(t, 4), 8080)
		waitBackends(t, name, "n1", front, "TCP", backendAddrs(t, name, 4, lbBackends))
		fronts = append(fronts, front)
	}

	// check: per service, each client's backend (failing when a client is
	// not sticky) and whether some service saw two clients differ.
	check := func(mode string, clients []string, pick func(client, front string) map[string]int) {
		t.Helper()
		differ := false
		for _, front := range fronts {
			chosen := map[string]string{}
			for _, cl := range clients {
				got := pick(cl, front)
				if len(got) != 1 {
					t.Errorf("%s: %s -> %s (ClientIP affinity): backends %v, want one", mode, cl, front, got)
					continue
				}
				for be := range got {
					chosen[cl] = be
				}
			}
			t.Logf("%s: %s: %v", mode, front, chosen)
			seen := map[string]bool{}
			for _, be := range chosen {
				seen[be] = true
			}
			differ = differ || len(seen) > 1
		}
		if !differ {
			t.Errorf("%s: clients %v got the same backend on all %d services: affinity is not per client", mode, clients, len(fronts))
		}
	}

	sock := map[string]*lbClient{}
	socketClients := []string{"tools/cl1", "shop/be-a1", "node/n1"}
	for _, cl := range socketClients {
		sock[cl] = startClient(t, name, cl)
	}
	check("socket LB", socketClients, func(cl, front string) map[string]int {
		r := sock[cl].must("many tcp %s 6", front)
		if len(r.Fails) > 0 {
			t.Errorf("socket LB: %s -> %s: %v", cl, front, r.Fails)
		}
		return countsByPod(names, r.Counts)
	})

	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	// (Not a backend as a client here: hairpin is TestLBHairpin's.)
	check("per packet", []string{"tools/cl1", "tools/cl2"}, func(cl, front string) map[string]int {
		pod, err := st.FindPod(cl)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for range 6 {
			c, err := lab.DialInNS(pod.NetNS, "tcp", front, 5*time.Second)
			if err != nil {
				t.Errorf("per packet: %s -> %s: %v", cl, front, err)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			addrs, err := lab.AskWhoAmI(c)
			c.Close()
			if err != nil {
				t.Errorf("per packet: %s -> %s: %v", cl, front, err)
				continue
			}
			got[whoIs(names, addrStrings(addrs))]++
		}
		return got
	})
}
