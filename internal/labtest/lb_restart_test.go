package labtest

import (
	"fmt"
	"sort"
	"syscall"
	"testing"

	"github.com/lumen-net/lumen/internal/lab"
)

const restartService = `apiVersion: v1
kind: Service
metadata: {name: rs, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  selector: {app: be}
  ports: [{name: http, port: 8080, targetPort: 80, nodePort: 30070, protocol: TCP}]
`

// ids lists a node's frontends with their service and backend ids, which
// conntrack entries refer to and a restart must keep.
func lbIDs(t *testing.T, labName, node string) []string {
	t.Helper()
	var out []string
	for _, s := range serviceList(t, labName, node) {
		row := fmt.Sprintf("%s/%s %s id %d:", s.Frontend, s.Protocol, s.Scope, s.ID)
		for _, b := range s.Backends {
			row += fmt.Sprintf(" %d=%s", b.ID, b.Address)
		}
		out = append(out, row)
	}
	sort.Strings(out)
	return out
}

// TestLBAgentRestart kills each agent with SIGKILL while connections
// through a service stream (pods through per-packet DNAT on both nodes,
// node n1 through socket LB, an external client through both node ports
// with SNAT) and new connections are opened back to back, then restarts it
// the way up did. No established connection may break, new ones keep
// succeeding, and the restarted agent keeps its service and backend ids.
func TestLBAgentRestart(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("agentArgs: [\"--bpf-lb-sock-hostns-only\"]\n")))
	applyYAML(t, name, restartService)
	svc := getService(t, name, "shop", "rs")
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			want := backendAddrs(t, name, fam, lbBackends)
			waitBackends(t, name, node, hostPort(svc.ip(t, fam), 8080), "TCP", want)
			waitBackends(t, name, node, hostPort(nodeIP(t, name, node, fam), 30070), "TCP", want)
		}
	}
	type conn struct {
		c      *lbClient
		id     string
		target string
	}
	var conns []conn
	clients := map[string]*lbClient{}
	for _, where := range []string{"tools/cl1", "tools/cl2", "node/n1", "client/ext"} {
		c := startClient(t, name, where)
		clients[where] = c
		for _, fam := range []int{4, 6} {
			targets := []string{hostPort(svc.ip(t, fam), 8080)}
			if where == "client/ext" {
				targets = []string{hostPort(nodeIP(t, name, "n1", fam), 30070), hostPort(nodeIP(t, name, "n2", fam), 30070)}
			}
			for i, target := range targets {
				for j := range 3 {
					id := fmt.Sprintf("v%d-%d-%d", fam, i, j)
					c.must("dial %s tcp %s", id, target)
					c.must("stream %s", id)
					conns = append(conns, conn{c, id, target})
				}
			}
		}
	}
	progress := func(stage string) {
		t.Helper()
		for _, cn := range conns {
			alive(t, cn.c, cn.id, fmt.Sprintf("%s: %s -> %s (%s)", stage, cn.c.where, cn.target, cn.id))
		}
	}
	progress("before the restarts")
	// New connections all along: pods' per-packet path and the node port.
	clients["tools/cl2"].must("churn tcp %s", hostPort(svc.ip(t, 4), 8080))
	churnExt := startClient(t, name, "client/ext")
	churnExt.must("churn tcp %s", hostPort(nodeIP(t, name, "n1", 4), 30070))

	for _, node := range []string{"n1", "n2"} {
		before := lbIDs(t, name, node)
		st, err := lab.LoadState(name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := st.Node(node)
		if err != nil {
			t.Fatal(err)
		}
		agent := n.Agent
		if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the killed agent to be gone", func() bool { return !agent.Alive() })
		progress(node + "'s agent killed")
		mustLumen(t, name, "lab", "restart-agent", node)
		progress(node + "'s agent restarted")
		after := lbIDs(t, name, node)
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("node %s: service and backend ids changed across the restart:\nbefore %v\nafter  %v", node, before, after)
		}
	}
	for _, ch := range []*lbClient{clients["tools/cl2"], churnExt} {
		r := ch.must("churnstop")
		failed := 0
		for _, rec := range r.Records {
			if rec.Err != "" {
				failed++
				if failed <= 5 {
					t.Errorf("%s: a new connection failed during the restarts: %s", ch.where, rec.Err)
				}
			}
		}
		t.Logf("%s: %d new connections during the restarts, %d failed", ch.where, len(r.Records), failed)
	}
	for _, cn := range conns {
		r := cn.c.must("close %s", cn.id)
		t.Logf("%s -> %s (%s): %d echoes", cn.c.where, cn.target, cn.id, r.Echoes)
	}
}
