package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/testutil"
)

// Two replicas with --leader-elect against a real API server: one holds
// the Lease and allocates, the other is a healthy standby; when the leader
// stops, the standby takes over and allocates.
func TestLeaderElection(t *testing.T) {
	bin, err := controlplane.BinDir()
	if err != nil {
		testutil.Skip(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), BinDir: bin, NoControllers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if err := controlplane.ApplyCRDs(ctx, cp.RESTConfig(), nil); err != nil {
		t.Fatal(err)
	}
	clients, err := k8s.NewClients(cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	type replica struct {
		addr string
		stop context.CancelFunc
		done chan error
	}
	start := func() *replica {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{addr: ln.Addr().String(), done: make(chan error, 1)}
		ln.Close()
		var rctx context.Context
		rctx, r.stop = context.WithCancel(ctx)
		cmd := newCommand()
		cmd.SetArgs([]string{"--kubeconfig", cp.Kubeconfig(), "--prometheus-serve-addr", r.addr, "--log-level", "warn",
			"--leader-elect", "--leader-election-namespace", "default", "--leader-election-lease-duration", "4s",
			"--leader-election-renew-deadline", "3s", "--leader-election-retry-period", "500ms"})
		go func() { r.done <- cmd.ExecuteContext(rctx) }()
		return r
	}
	health := func(r *replica) string {
		resp, err := http.Get("http://" + r.addr + "/healthz")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	wait := func(what string, ok func() (bool, string)) {
		t.Helper()
		var last string
		for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			var done bool
			if done, last = ok(); done {
				return
			}
		}
		t.Fatalf("%s: not within 90s (last: %s)", what, last)
	}
	holder := func() string {
		l, err := clients.Core.CoordinationV1().Leases("default").Get(ctx, "lumen-operator-resource-lock", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	allocated := func(name string) func() (bool, string) {
		node := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"addresses": []any{map[string]any{"type": "InternalIP", "ip": "10.99.0.1"}}},
		}}
		if _, err := clients.Dynamic.Resource(k8s.CiliumNodes).Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return func() (bool, string) {
			got, err := clients.Dynamic.Resource(k8s.CiliumNodes).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			c, _, _ := unstructured.NestedStringSlice(got.Object, "spec", "ipam", "podCIDRs")
			return len(c) > 0, fmt.Sprint(c)
		}
	}

	a := start()
	wait("a leader", func() (bool, string) { h := holder(); return h != "", h })
	first := holder()
	wait("the leader healthy", func() (bool, string) { h := health(a); return strings.HasPrefix(h, "200 ok\n"), h })
	b := start()
	wait("the standby healthy", func() (bool, string) { h := health(b); return strings.Contains(h, "standby"), h })
	wait("n1 allocated by the leader", allocated("n1"))
	if h := holder(); h != first {
		t.Fatalf("lease holder changed from %s to %s with both running", first, h)
	}
	a.stop()
	if err := <-a.done; err != nil {
		t.Errorf("leader: %v", err)
	}
	wait("the standby takes the lease", func() (bool, string) { h := holder(); return h != "" && h != first, h })
	wait("n2 allocated by the new leader", allocated("n2"))
	wait("the new leader healthy", func() (bool, string) { h := health(b); return strings.HasPrefix(h, "200 ok\n"), h })
	b.stop()
	if err := <-b.done; err != nil {
		t.Errorf("second leader: %v", err)
	}
}
