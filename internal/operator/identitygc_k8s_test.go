package operator

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lumen-net/lumen/internal/k8s"
)

func testIdentity(id int64, app string) *k8s.CiliumIdentity {
	i := &k8s.CiliumIdentity{SecurityLabels: map[string]string{"k8s:app": app, "k8s:io.kubernetes.pod.namespace": "gc"}}
	i.APIVersion, i.Kind, i.Name = k8s.CiliumIdentities.GroupVersion().String(), "CiliumIdentity", fmt.Sprint(id)
	return i
}

func identityExists(ctx context.Context, t *testing.T, c *k8s.Clients, id int64) bool {
	t.Helper()
	_, err := c.Dynamic.Resource(k8s.CiliumIdentities).Get(ctx, fmt.Sprint(id), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// waitDeleted waits until identity id is gone and returns when it saw it gone.
func waitDeleted(ctx context.Context, t *testing.T, c *k8s.Clients, id int64) time.Time {
	t.Helper()
	eventually(t, fmt.Sprintf("identity %d is deleted", id), func() error {
		if identityExists(ctx, t, c, id) {
			return fmt.Errorf("identity %d still exists", id)
		}
		return nil
	})
	return time.Now()
}

func TestIdentityGCDeletesOnlyUnusedOldIdentities(t *testing.T) {
	c := clients(t)
	ctx := testContext(t)
	t.Cleanup(func() {
		deleteAll(t, c, k8s.CiliumEndpoints)
		deleteAll(t, c, k8s.CiliumIdentities)
	})
	ensureNamespace(ctx, t, c, "gc")
	const timeout = 4 * time.Second
	cfg := onlyConfig()
	cfg.IdentityGCInterval, cfg.IdentityHeartbeatTimeout = 200*time.Millisecond, timeout
	op, _ := startOperator(t, c, cfg)

	// 1001 is used; 1002 is never used; 1003 is allocated first and its
	// endpoint published a second later (an agent's normal order).
	t0 := time.Now()
	create(ctx, t, c, testIdentity(1001, "web"), "")
	create(ctx, t, c, testIdentity(1002, "stale"), "")
	create(ctx, t, c, testIdentity(1003, "late"), "")
	putCEP(ctx, t, c, testCEP("gc", "web", 1001, "10.200.9.1"))
	time.Sleep(time.Second)
	putCEP(ctx, t, c, testCEP("gc", "late", 1003, "10.200.9.2"))

	gone := waitDeleted(ctx, t, c, 1002)
	if d := gone.Sub(t0); d < timeout {
		t.Errorf("unused identity deleted after %v, before the %v heartbeat timeout", d, timeout)
	}
	// Two more passes: the used identities stay.
	runs := testCounter(t, op.metrics.identityGCRuns)
	eventually(t, "two more GC passes", func() error {
		if n := testCounter(t, op.metrics.identityGCRuns); n < runs+2 {
			return fmt.Errorf("%v passes", n)
		}
		return nil
	})
	for _, id := range []int64{1001, 1003} {
		if !identityExists(ctx, t, c, id) {
			t.Errorf("identity %d in use was deleted", id)
		}
	}

	// Once its endpoint goes, an identity is deleted after the timeout.
	deleteCEP(ctx, t, c, "gc", "web")
	t1 := time.Now()
	if d := waitDeleted(ctx, t, c, 1001).Sub(t1); d < timeout {
		t.Errorf("identity deleted %v after its last endpoint went, before the %v timeout", d, timeout)
	}
	if !identityExists(ctx, t, c, 1003) {
		t.Error("identity 1003 in use was deleted")
	}
	if n := testCounter(t, op.metrics.identitiesDeleted); n != 2 {
		t.Errorf("lumen_operator_identities_deleted_total = %v, want 2", n)
	}
}
