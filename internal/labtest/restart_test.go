package labtest

import (
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
)

// stream keeps a TCP connection between two pods busy: it sends numbered
// messages and checks that each comes back unchanged.
type stream struct {
	conn   net.Conn
	echoes atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func startStream(t *testing.T, fromNS, address string) *stream {
	t.Helper()
	c, err := lab.DialInNS(fromNS, "tcp", address, 10*time.Second)
	if err != nil {
		t.Fatalf("opening a stream to %s: %v", address, err)
	}
	s := &stream{conn: c, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *stream) run() {
	defer close(s.done)
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		select {
		case <-s.stop:
			return
		default:
		}
		msg := []byte(fmt.Sprintf("message %08d\n", i))
		// Generous: only guards against a hang; a stall of a few seconds
		// during a restart is still a broken stream for TCP's purposes only
		// if the connection errors.
		_ = s.conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := s.conn.Write(msg); err != nil {
			s.fail(fmt.Errorf("message %d: write: %w", i, err))
			return
		}
		if _, err := io.ReadFull(s.conn, buf[:len(msg)]); err != nil {
			s.fail(fmt.Errorf("message %d: read: %w", i, err))
			return
		}
		if string(buf[:len(msg)]) != string(msg) {
			s.fail(fmt.Errorf("message %d: echo %q", i, buf[:len(msg)]))
			return
		}
		s.echoes.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// progress waits until n more echoes arrived, or the stream failed.
func (s *stream) progress(t *testing.T, n int64) {
	t.Helper()
	target := s.echoes.Load() + n
	waitUntil(t, fmt.Sprintf("%d more echoes", n), func() bool { return s.echoes.Load() >= target || s.Err() != nil })
	if err := s.Err(); err != nil {
		t.Fatalf("stream broken: %v", err)
	}
}

func (s *stream) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.conn.Close()
}

// endpointsOf lists a node's endpoints through its agent.
func endpointsOf(t *testing.T, name, node string) []api.Endpoint {
	t.Helper()
	var eps []api.Endpoint
	decode(t, mustLumen(t, name, "--node", node, "endpoint", "list", "-o", "json"), &eps)
	sort.Slice(eps, func(i, j int) bool { return eps[i].ContainerID < eps[j].ContainerID })
	return eps
}

// TestAgentRestartKeepsTraffic kills an agent with SIGKILL while pods on two
// nodes stream to each other, restarts it like up did, and requires the
// streams to carry on without an error and the endpoints to be restored.
func TestAgentRestartKeepsTraffic(t *testing.T) {
	for _, routing := range []string{lab.RoutingNative, lab.RoutingVXLAN} {
		t.Run(routing, func(t *testing.T) {
			name := newLab(t)
			topo := writeTopology(t, `
nodes: [{name: n1, zone: zone-a}, {name: n2, zone: zone-b}]
pods:
  - {name: client, namespace: shop, labels: {app: client}, node: n1, ports: ["80/tcp"]}
  - {name: other, namespace: shop, labels: {app: other}, node: n1, ports: ["80/tcp"]}
  - {name: server, namespace: shop, labels: {app: server}, node: n2, ports: ["80/tcp", "81/tcp"]}`)
			st := up(t, name, topo, "--routing", routing)
			checkStatus(t, st, 3, routing)
			state, err := lab.LoadState(name)
			if err != nil {
				t.Fatal(err)
			}
			client, err := state.FindPod("client")
			if err != nil {
				t.Fatal(err)
			}
			server, err := state.FindPod("server")
			if err != nil {
				t.Fatal(err)
			}
			streams := []*stream{
				startStream(t, client.NetNS, net.JoinHostPort(server.IPv4, "80")),
				startStream(t, client.NetNS, net.JoinHostPort(server.IPv6, "81")),
			}
			for _, s := range streams {
				s.progress(t, 20)
			}

			for _, node := range []string{"n1", "n2"} {
				before := endpointsOf(t, name, node)
				n, err := state.Node(node)
				if err != nil {
					t.Fatal(err)
				}
				agent := n.Agent
				if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the killed agent to be gone", func() bool { return !agent.Alive() })
				// The datapath keeps forwarding without its agent.
				for _, s := range streams {
					s.progress(t, 20)
				}
				out := mustLumen(t, name, "lab", "restart-agent", node)
				t.Logf("%s", out)
				for _, s := range streams {
					s.progress(t, 50)
				}
				after := endpointsOf(t, name, node)
				if len(after) != len(before) {
					t.Fatalf("node %s: %d endpoints after restart, %d before", node, len(after), len(before))
				}
				for i := range before {
					b, a := before[i], after[i]
					if a.ContainerID != b.ContainerID || a.ID != b.ID || a.IPv4 != b.IPv4 || a.IPv6 != b.IPv6 || a.Identity != b.Identity {
						t.Errorf("node %s: endpoint changed across restart:\nbefore %+v\nafter  %+v", node, b, a)
					}
					if a.State != api.EndpointReady {
						t.Errorf("node %s: endpoint %s state %q after restart", node, a.PodName, a.State)
					}
				}
				// The restarted agent handles new pods' traffic too: a fresh probe.
				if r := lumen(t, name, "lab", "probe", "other", "server:81/tcp", "--family", "all"); r.code != 0 {
					t.Errorf("probe after restarting %s: %s %s", node, r.stdout, r.stderr)
				}
				state, err = lab.LoadState(name)
				if err != nil {
					t.Fatal(err)
				}
				if n2, _ := state.Node(node); n2.Agent.PID == agent.PID || !n2.Agent.Alive() {
					t.Errorf("node %s: restarted agent not recorded: %+v", node, n2.Agent)
				}
			}
			for _, s := range streams {
				if err := s.Err(); err != nil {
					t.Errorf("stream: %v", err)
				}
				t.Logf("stream carried %d echoes", s.echoes.Load())
			}
		})
	}
}
