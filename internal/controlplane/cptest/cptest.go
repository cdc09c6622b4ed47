// Package cptest starts a real Kubernetes control plane for a test.
package cptest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/testutil"
)

// Start starts a control plane without controllers, with Lumen's CRDs,
// for t. It is stopped when t ends; its state and logs are kept when t
// failed. Without the Kubernetes binaries t skips (fails in CI).
func Start(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	bin, err := controlplane.BinDir()
	if err != nil {
		testutil.Skip(t, err.Error())
	}
	dir, err := os.MkdirTemp("", "lumen-cp-test-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, BinDir: bin, NoControllers: true})
	if err != nil {
		t.Fatalf("starting the control plane: %v (state in %s)", err, dir)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("control plane state and logs kept in %s", dir)
		}
	})
	if err := controlplane.ApplyCRDs(ctx, cp.RESTConfig(), nil); err != nil {
		t.Fatal(err)
	}
	return cp
}
