package controlplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/testutil"
)

// One control plane serves every test of the package: it starts on the
// first test that needs it (a few seconds) and stops after the last.
var shared struct {
	once sync.Once
	cp   *ControlPlane
	dir  string
	err  error
	skip string
}

// extraSAN is an address the shared control plane's serving certificate
// holds besides loopback; TestKubeconfigFor reaches the API through it.
var extraSAN = netip.MustParseAddr("127.0.0.2")

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

// controlPlane returns the shared control plane with the CRDs applied. It
// skips the test when the binaries are missing, except in CI (CI=true),
// where that is a failure.
func controlPlane(t *testing.T) *ControlPlane {
	t.Helper()
	shared.once.Do(func() {
		bin, err := BinDir()
		if err != nil {
			shared.skip = err.Error()
			return
		}
		if shared.dir, shared.err = os.MkdirTemp("", "lumen-controlplane-"); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.cp, shared.err = Start(ctx, Options{Dir: shared.dir, BinDir: bin, ExtraSANs: []netip.Addr{extraSAN}})
		if shared.err != nil {
			return
		}
		t0 := time.Now()
		if shared.err = ApplyCRDs(ctx, shared.cp.RESTConfig(), nil); shared.err == nil {
			crdTime = time.Since(t0)
		}
	})
	if shared.skip != "" {
		testutil.Skip(t, shared.skip)
	}
	if shared.err != nil {
		t.Fatalf("starting the control plane: %v", shared.err)
	}
	return shared.cp
}

var crdTime time.Duration

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
