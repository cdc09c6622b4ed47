package operator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/testutil"
)

// One control plane serves every test of the package. The tests run one
// after the other (an operator acts on every object of the cluster) and
// delete what they created.
var shared struct {
	once sync.Once
	cp   *controlplane.ControlPlane
	dir  string
	err  error
	skip string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cp != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
			code = 1
		}
	}
	if shared.dir != "" {
		if code == 0 {
			os.RemoveAll(shared.dir)
		} else {
			fmt.Fprintf(os.Stderr, "control plane state and logs kept in %s\n", shared.dir)
		}
	}
	os.Exit(code)
}

// clients starts (once) the shared control plane with the CRDs and returns
// clients for it. It skips when the Kubernetes binaries are missing, except
// in CI (CI=true), where that fails.
func clients(t *testing.T) *k8s.Clients {
	t.Helper()
	shared.once.Do(func() {
		bin, err := controlplane.BinDir()
		if err != nil {
			shared.skip = err.Error()
			return
		}
		if shared.dir, shared.err = os.MkdirTemp("", "lumen-operator-test-"); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.cp, shared.err = controlplane.Start(ctx, controlplane.Options{Dir: shared.dir, BinDir: bin, NoControllers: true})
		if shared.err != nil {
			return
		}
		shared.err = controlplane.ApplyCRDs(ctx, shared.cp.RESTConfig(), nil)
	})
	if shared.skip != "" {
		testutil.Skip(t, shared.skip)
	}
	if shared.err != nil {
		t.Fatalf("starting the control plane: %v", shared.err)
	}
	c, err := k8s.NewClientsFor(shared.cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	c.Config.QPS, c.Config.Burst = 500, 1000
	if c, err = k8s.NewClientsFor(c.Config); err != nil {
		t.Fatal(err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testLog sends the operator's log to the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startOperator runs an operator until stop is called (or the test ends)
// and waits until it is ready.
func startOperator(t *testing.T, c *k8s.Clients, cfg Config) (op *Operator, stop func()) {
	t.Helper()
	op, err := New(c, cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- op.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("operator: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-op.Ready():
	case err := <-done:
		t.Fatalf("operator stopped before it was ready: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("operator not ready after 2 minutes")
	}
	return op, stop
}

// onlyConfig is a configuration with every controller off; tests turn on
// the one they test.
func onlyConfig() Config {
	c := DefaultConfig()
	c.IPv4Pools, c.IPv6Pools = nil, nil
	c.IdentityGCInterval = 0
	return c
}

// eventually polls cond until it returns nil, failing with its last error
// after a generous timeout (only there to avoid hanging).
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func create(ctx context.Context, t *testing.T, c *k8s.Clients, obj any, namespace string) {
	t.Helper()
	u, err := toUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	gvr := resourceOf(u)
	if _, err := c.Dynamic.Resource(gvr).Namespace(namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func resourceOf(u *unstructured.Unstructured) (gvr schema.GroupVersionResource) {
	switch u.GetKind() {
	case "CiliumEndpoint":
		return k8s.CiliumEndpoints
	case "CiliumNode":
		return k8s.CiliumNodes
	case "CiliumIdentity":
		return k8s.CiliumIdentities
	case "CiliumEndpointSlice":
		return k8s.CiliumEndpointSlices
	}
	panic("unknown kind " + u.GetKind())
}

func ensureNamespace(ctx context.Context, t *testing.T, c *k8s.Clients, name string) {
	t.Helper()
	_, err := c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// deleteAll deletes every object of the resource (all namespaces) and
// waits until they are gone.
func deleteAll(t *testing.T, c *k8s.Clients, gvr schema.GroupVersionResource) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("cleanup: listing %s: %v", gvr.Resource, err)
		return
	}
	for _, u := range list.Items {
		err := c.Dynamic.Resource(gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: deleting %s %s: %v", gvr.Resource, u.GetName(), err)
		}
	}
}

func testGauge(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue()
}

func testCounter(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
