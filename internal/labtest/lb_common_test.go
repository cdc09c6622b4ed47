package labtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/resource"
)

// lbClient is a helper process (see lb_helper_test.go) running in a pod, a
// node (node/NAME) or an external client (client/NAME) of a lab.
type lbClient struct {
	t     *testing.T
	where string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	mu    sync.Mutex
	errb  strings.Builder
	done  chan struct{}
}

// startClient starts a helper in where; it is stopped when the test ends.
func startClient(t *testing.T, labName, where string) *lbClient {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &lbClient{t: t, where: where, done: make(chan struct{})}
	c.cmd = exec.Command(filepath.Join(binDir, "lumen"), "--lab", labName, "lab", "exec", where, "--", self)
	c.cmd.Env = append(os.Environ(), lbHelperEnv+"=1")
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = &lockedWriter{mu: &c.mu, b: &c.errb}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting a client in %s: %v", where, err)
	}
	c.out = bufio.NewScanner(stdout)
	c.out.Buffer(make([]byte, 1<<20), 64<<20)
	t.Cleanup(c.stop)
	return c
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (c *lbClient) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.in.Close()
	waited := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-waited
	}
}

// do sends one command and returns its answer.
func (c *lbClient) do(format string, args ...any) helperReply {
	c.t.Helper()
	line := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(c.in, line); err != nil {
		c.t.Fatalf("client in %s: sending %q: %v (stderr: %s)", c.where, line, err, c.stderr())
	}
	// The helper bounds every operation; this only guards against a hang.
	got := make(chan bool, 1)
	go func() { got <- c.out.Scan() }()
	select {
	case ok := <-got:
		if !ok {
			c.t.Fatalf("client in %s: no answer to %q: %v (stderr: %s)", c.where, line, c.out.Err(), c.stderr())
		}
	case <-time.After(3 * time.Minute):
		c.t.Fatalf("client in %s: no answer to %q after 3 minutes", c.where, line)
	}
	var r helperReply
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		c.t.Fatalf("client in %s: answer to %q: %v: %s", c.where, line, err, c.out.Bytes())
	}
	return r
}

// must is do that fails the test on an error answer.
func (c *lbClient) must(format string, args ...any) helperReply {
	c.t.Helper()
	r := c.do(format, args...)
	if !r.OK {
		c.t.Fatalf("client in %s: %s: %s", c.where, fmt.Sprintf(format, args...), r.Err)
	}
	return r
}

func (c *lbClient) stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errb.String()
}

// applyYAML applies manifests through `lumen apply -f -`.
func applyYAML(t *testing.T, labName, yaml string) {
	t.Helper()
	r := lumenStdin(t, labName, yaml, "apply", "-f", "-")
	if r.code != 0 {
		t.Fatalf("lumen apply: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// svcInfo is what the tests need of a stored Service.
type svcInfo struct {
	ClusterIPs []netip.Addr
	NodePorts  map[string]uint16 // port name -> node port
}

// ip returns the service's cluster IP of family 4 or 6.
func (s svcInfo) ip(t *testing.T, family int) netip.Addr {
	t.Helper()
	for _, a := range s.ClusterIPs {
		if (family == 4) == a.Is4() {
			return a
		}
	}
	t.Fatalf("service has no IPv%d cluster IP: %v", family, s.ClusterIPs)
	return netip.Addr{}
}

func getService(t *testing.T, labName, ns, name string) svcInfo {
	t.Helper()
	out := mustLumen(t, labName, "get", "service", "-n", ns, name, "-o", "json")
	obj, err := resource.Unmarshal([]byte(out))
	if err != nil {
		t.Fatalf("decoding service %s/%s: %v\n%s", ns, name, err, out)
	}
	svc, err := lb.ServiceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	info := svcInfo{ClusterIPs: svc.ClusterAddrs(), NodePorts: map[string]uint16{}}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			info.NodePorts[p.Name] = uint16(p.NodePort)
		}
	}
	return info
}

// serviceList is `lumen --node NODE service list -o json`.
func serviceList(t *testing.T, labName, node string) []api.Service {
	t.Helper()
	var l []api.Service
	decode(t, mustLumen(t, labName, "--node", node, "service", "list", "-o", "json"), &l)
	return l
}

// frontendBackends returns the backends of one frontend (any scope when
// scope is ""), by state: "active" or "terminating".
func frontendBackends(l []api.Service, frontend, proto, scope, state string) []string {
	var out []string
	for _, s := range l {
		if s.Frontend != frontend || !strings.EqualFold(s.Protocol, proto) || (scope != "" && s.Scope != scope) {
			continue
		}
		for _, b := range s.Backends {
			if b.State == state {
				out = append(out, b.Address)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// waitBackends waits until node lists exactly want (addr:port, any order)
// as the active backends of frontend.
func waitBackends(t *testing.T, labName, node, frontend, proto string, want []string) {
	t.Helper()
	want = slices.Clone(want)
	sort.Strings(want)
	var got []string
	// Agents converge in well under a second; this only bounds a failure.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = frontendBackends(serviceList(t, labName, node), frontend, proto, "", "active")
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: active backends of %s/%s: got %v, want %v", node, frontend, proto, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podNames maps every pod address of a lab to "namespace/name".
func podNames(t *testing.T, labName string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range status(t, labName).Pods {
		m[p.IPv4] = p.Namespace + "/" + p.Name
		m[p.IPv6] = p.Namespace + "/" + p.Name
	}
	return m
}

// podAddr returns a pod's address:port of family 4 or 6.
func podAddr(t *testing.T, labName, ref string, family int, port uint16) string {
	t.Helper()
	for _, p := range status(t, labName).Pods {
		if p.Namespace+"/"+p.Name != ref {
			continue
		}
		s := p.IPv4
		if family == 6 {
			s = p.IPv6
		}
		return netip.AddrPortFrom(netip.MustParseAddr(s), port).String()
	}
	t.Fatalf("no pod %s", ref)
	return ""
}

// hostPort formats addr:port with brackets for IPv6.
func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// nodeIP returns a lab node's underlay address of family 4 or 6.
func nodeIP(t *testing.T, labName, node string, family int) netip.Addr {
	t.Helper()
	for _, n := range status(t, labName).Nodes {
		if n.Name != node {
			continue
		}
		for _, s := range n.NodeIPs {
			p := netip.MustParsePrefix(s)
			if (family == 4) == p.Addr().Is4() {
				return p.Addr()
			}
		}
	}
	t.Fatalf("no node %s with an IPv%d address", node, family)
	return netip.Addr{}
}

// whoIs names the pods among addrs (a helper's backend answer).
func whoIs(names map[string]string, addrs []string) string {
	for _, a := range addrs {
		if n, ok := names[a]; ok {
			return n
		}
	}
	return strings.Join(addrs, ",")
}

// countsByPod turns a "many" answer into pod -> connections.
func countsByPod(names map[string]string, counts map[string]int) map[string]int {
	out := map[string]int{}
	for a, n := range counts {
		out[whoIs(names, []string{a})] += n
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
