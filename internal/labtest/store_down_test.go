package labtest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

const storeDownTopology = `
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n1, ports: ["80/tcp"]}
  - {name: c, namespace: x, labels: {app: c}, node: n2, ports: ["80/tcp"]}
`

// subsystem returns the named subsystem of a status.
func subsystem(s *api.Status, name string) api.SubsystemStatus {
	for _, ss := range s.Subsystems {
		if ss.Name == name {
			return ss
		}
	}
	return api.SubsystemStatus{}
}

// waitStoreState waits until node's agent says the store is in state
// (ok, or degraded with a message containing every want), in `lumen
// status` (text and exit code), its JSON and the subsystem gauge.
func waitStoreState(t *testing.T, labName, node, state string, want ...string) api.Status {
	t.Helper()
	var last api.Status
	eventually(t, 60*time.Second, fmt.Sprintf("node %s: kvstore %s %q", node, state, want), func() string {
		last = *agentStatus(t, labName, node)
		ss := subsystem(&last, "kvstore")
		if ss.State != state {
			return fmt.Sprintf("kvstore subsystem %+v", ss)
		}
		for _, w := range want {
			if !strings.Contains(ss.Message, w) {
				return fmt.Sprintf("kvstore subsystem %+v lacks %q", ss, w)
			}
		}
		r := lumen(t, labName, "--node", node, "status")
		line := regexp.MustCompile(`(?m)^kvstore:\s+` + state + `\s`)
		if !line.MatchString(r.stdout) || (state == api.StateDegraded && r.code != 1) {
			return fmt.Sprintf("lumen status: exit %d, want a line %q (and exit 1 when degraded):\n%s", r.code, line, r.stdout)
		}
		gauge := `lumen_subsystem_healthy{subsystem="kvstore"} 0`
		if state == api.StateOK {
			gauge = `lumen_subsystem_healthy{subsystem="kvstore"} 1`
		}
		if m := mustLumen(t, labName, "--node", node, "metrics"); !strings.Contains(m, gauge) {
			return "metrics lack " + gauge
		}
		return ""
	})
	return last
}

// TestAgentStoreDown: an agent whose store goes away says so (naming the
// store and the error) and recovers when it is back; an agent restarted
// while the store is down restores every endpoint's datapath and policy
// from its local state and announces them once the store returns.
func TestAgentStoreDown(t *testing.T) {
	ctx := context.Background()
	name := newLab(t)
	up(t, name, writeTopology(t, storeDownTopology))
	storeURL := labpath.StoreURL(name)
	waitStoreState(t, name, "n1", api.StateOK, storeURL)
	before := endpointsOf(t, name, "n1")
	if len(before) != 2 {
		t.Fatalf("n1 has %d endpoints, want 2", len(before))
	}

	// Dead store.
	if err := lab.StopStore(name); err != nil {
		t.Fatal(err)
	}
	waitStoreState(t, name, "n1", api.StateDegraded, storeURL, "unreachable")
	waitStoreState(t, name, "n2", api.StateDegraded, storeURL, "unreachable")

	// Restart n1's agent with the store still down: it must serve every
	// endpoint (datapath and policy from its pinned maps and state files)
	// without the store. The store stays down until this has been checked.
	_, err := lab.RestartAgentUntil(ctx, name, "n1", 2*time.Minute, func(s *api.Status) error {
		if s.Endpoints != len(before) {
			return fmt.Errorf("%d endpoints", s.Endpoints)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("restarting n1's agent with the store down: %v%s", err, labLogs(name))
	}
	after := endpointsOf(t, name, "n1")
	if len(after) != len(before) {
		t.Fatalf("%d endpoints after the restart, %d before", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ContainerID != b.ContainerID || a.Identity != b.Identity || a.IPv4 != b.IPv4 || a.State != api.EndpointReady {
			t.Errorf("endpoint after restart with the store down:\nbefore %+v\nafter  %+v", b, a)
		}
	}
	st := waitStoreState(t, name, "n1", api.StateDegraded, storeURL, "unreachable")
	if cl := subsystem(&st, "cluster"); cl.State != api.StateDegraded || !strings.Contains(cl.Message, "2 local endpoints not announced") {
		t.Errorf("cluster subsystem with the store down: %+v", cl)
	}
	for _, p := range [][2]string{{"a", "b:80/tcp"}, {"b", "a:80/tcp"}, {"a", "c:80/tcp"}, {"c", "a:80/tcp"}} {
		if !probe(t, name, p[0], p[1]) {
			t.Errorf("probe %s -> %s with the store down after the restart: not connected", p[0], p[1])
		}
	}
	if err := checkStoreStillDown(storeURL); err != nil {
		t.Fatal(err)
	}

	// The store comes back (with its data): health returns to ok, the
	// restarted agent announces its endpoints.
	if err := lab.StartStore(ctx, name, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"n1", "n2"} {
		waitStoreState(t, name, node, api.StateOK, storeURL, "reachable")
		eventually(t, 60*time.Second, "agent "+node+" healthy", func() string {
			if s := agentStatus(t, name, node); !s.Healthy() {
				return fmt.Sprintf("%+v", s.Subsystems)
			}
			return ""
		})
	}

	// Paused store (SIGSTOP): connections open, no answers.
	state, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Store.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := state.Store.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	waitStoreState(t, name, "n1", api.StateDegraded, storeURL, "no answer within")
	resume()
	waitStoreState(t, name, "n1", api.StateOK, storeURL)
}

// checkStoreStillDown makes sure the store did not come back by itself
// while the restart was checked.
func checkStoreStillDown(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := kvstore.Dial(ctx, url)
	if err == nil {
		c.Close()
		return fmt.Errorf("the store at %s answers: the restart was not checked with the store down", url)
	}
	return nil
}
