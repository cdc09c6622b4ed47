package main

// The tests drive the built lumen-cni binary the way a container runtime
// does: through libcni, with a real conflist, from a goroutine switched into
// a "node" namespace (the plugin inherits that thread's namespace), plugging
// pods that are namespaces of their own. Nothing runs in the host namespace.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/lumen-net/lumen/internal/testutil"
)

// nsTag prefixes this package's namespaces: lmn-cnit-<pid>-<suffix>.
const nsTag = "cnit"

var (
	binDir     string // holds the built lumen-cni
	agentBin   string // built lumen-agent, "" when it does not build yet
	agentBuild string // why agentBin is empty
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lmn-cnit-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if out, err := goBuild(filepath.Join(dir, "lumen-cni"), "github.com/lumen-net/lumen/cmd/lumen-cni"); err != nil {
		fmt.Fprintf(os.Stderr, "building lumen-cni: %v\n%s", err, out)
		return 1
	}
	// The agent is built separately: it lives in another package and may not build yet.
	if out, err := goBuild(filepath.Join(dir, "agent", "lumen-agent"), "github.com/lumen-net/lumen/cmd/lumen-agent"); err != nil {
		agentBuild = fmt.Sprintf("lumen-agent does not build: %v\n%s", err, out)
	} else {
		agentBin = filepath.Join(dir, "agent", "lumen-agent")
	}
	return m.Run()
}

func goBuild(out, pkg string) ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	return exec.Command(goBin, "build", "-o", out, pkg).CombinedOutput()
}

// shortTempDir returns a directory whose paths fit in a unix socket address.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lmn-cnit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// runtimeEnv is one node: its namespace and a libcni runtime bound to a conflist.
type runtimeEnv struct {
	t       *testing.T
	node    *nstest.NS
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	logFile string
}

// newRuntime writes a conflist with the given lumen-cni entry (JSON object
// fields) and returns a runtime that calls the plugin from a new node namespace.
func newRuntime(t *testing.T, cniVersion string, plugin map[string]any) *runtimeEnv {
	t.Helper()
	testutil.RequirePrivileged(t)
	return newRuntimeIn(t, nstest.New(t, nsTag), cniVersion, plugin)
}

// newRuntimeIn is newRuntime on an existing node namespace.
func newRuntimeIn(t *testing.T, node *nstest.NS, cniVersion string, plugin map[string]any) *runtimeEnv {
	t.Helper()
	dir := t.TempDir()
	conf := map[string]any{
		"cniVersion": cniVersion,
		"name":       "lumen",
		"plugins":    []any{plugin},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "10-lumen.conflist")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromFile(path)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	env := &runtimeEnv{
		t:    t,
		node: node,
		cni:  libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), nil),
		list: list,
	}
	if lf, ok := plugin["logFile"].(string); ok {
		env.logFile = lf
	}
	t.Cleanup(func() {
		if t.Failed() && env.logFile != "" {
			if b, err := os.ReadFile(env.logFile); err == nil {
				t.Logf("lumen-cni log:\n%s", b)
			}
		}
	})
	return env
}

// pluginConf is the lumen-cni entry of a conflist.
func pluginConf(socket, logFile string) map[string]any {
	return map[string]any{"type": "lumen-cni", "agentSocket": socket, "mtu": 0, "logFile": logFile}
}

// pod is a pod namespace and the runtime's view of its attachment.
type pod struct {
	ns *nstest.NS
	rt *libcni.RuntimeConf
}

func (e *runtimeEnv) newPod(name string) *pod {
	e.t.Helper()
	p := nstest.New(e.t, nsTag)
	return &pod{ns: p, rt: &libcni.RuntimeConf{
		ContainerID: "ctr-" + name + "-" + testutil.Suffix(),
		NetNS:       filepath.Join("/run/netns", p.Name),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAME", name},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_UID", "uid-" + name},
			{"SOMETHING_UNKNOWN", "x"},
		},
	}}
}

// inNode runs fn on a thread switched into the node namespace, so that the
// plugin process libcni starts runs there.
func (e *runtimeEnv) inNode(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.node.Do(func() error { return fn(ctx) })
}

func (e *runtimeEnv) add(p *pod) (*current.Result, error) {
	var res *current.Result
	err := e.inNode(func(ctx context.Context) error {
		r, err := e.cni.AddNetworkList(ctx, e.list, p.rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	return res, err
}

func (e *runtimeEnv) check(p *pod) error {
	return e.inNode(func(ctx context.Context) error { return e.cni.CheckNetworkList(ctx, e.list, p.rt) })
}

func (e *runtimeEnv) del(p *pod) error {
	return e.inNode(func(ctx context.Context) error { return e.cni.DelNetworkList(ctx, e.list, p.rt) })
}

// mustAdd runs ADD and fails the test on error; DEL runs at cleanup.
func (e *runtimeEnv) mustAdd(p *pod) *current.Result {
	e.t.Helper()
	res, err := e.add(p)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", p.rt.ContainerID, err)
	}
	return res
}

// wantCNIError asserts err is a CNI error with code and a message containing all of want.
func wantCNIError(t *testing.T, err error, code uint, want ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("got error %v (%T), want CNI error code %d", err, err, code)
	}
	t.Logf("CNI error %d: %s", te.Code, te.Msg)
	if te.Code != code {
		t.Errorf("CNI error code = %d, want %d (msg %q)", te.Code, code, te.Msg)
	}
	for _, w := range want {
		if !strings.Contains(te.Msg, w) {
			t.Errorf("CNI error %q does not mention %q", te.Msg, w)
		}
	}
}

// link looks up name in ns; nil if it does not exist.
func link(t *testing.T, ns *nstest.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		t.Fatalf("looking up %s in %s: %v", name, ns.Name, err)
	}
	return l
}

// addrs returns the addresses (as CIDR strings) on name in ns.
func addrs(t *testing.T, ns *nstest.NS, name string) []string {
	t.Helper()
	l := link(t, ns, name)
	if l == nil {
		return nil
	}
	as, err := ns.NL.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("addresses of %s in %s: %v", name, ns.Name, err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}

// hostLinks lists the lxc* interfaces of the node.
func hostLinks(t *testing.T, node *nstest.NS) []string {
	t.Helper()
	ls, err := node.NL.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("links of %s: %v", node.Name, err)
	}
	var out []string
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, "lxc") || strings.HasPrefix(l.Attrs().Name, "tmp") {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// runPlugin executes the binary directly from the node namespace with env and
// stdin, as a runtime without libcni would, and returns stdout and the exit error.
func runPlugin(t *testing.T, node *nstest.NS, env map[string]string, stdin string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "lumen-cni"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	var out []byte
	err := node.Do(func() error {
		var err error
		out, err = cmd.Output()
		return err
	})
	if stderr.Len() > 0 {
		t.Logf("lumen-cni stderr: %s", stderr.String())
	}
	return out, err
}

func ipStrings(ips []*current.IPConfig) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.Address.String())
	}
	return out
}

func mustParseMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("parsing MAC %q: %v", s, err)
	}
	return m
}
