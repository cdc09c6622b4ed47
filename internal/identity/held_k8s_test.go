package identity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane/cptest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/k8s"
)

// TestK8sDeletedHeldIdentityIsRecreated: in CRD mode an identity is one
// CiliumIdentity, created atomically. When the object vanishes (garbage
// collection racing an endpoint, kubectl delete) while a local endpoint
// holds it, the allocator creates it again with the same number and
// labels; one no endpoint holds stays deleted, and no new label set gets
// the held number. Runs against a real kube-apiserver.
func TestK8sDeletedHeldIdentityIsRecreated(t *testing.T) {
	cp := cptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := k8s.NewClientsFor(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	store := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: "n1", Log: slog.Default()})

	var mu sync.Mutex
	var held []identity.ID
	a := identity.NewAllocator(store)
	a.SetInUse(identity.InUse{Local: func() []identity.ID { mu.Lock(); defer mu.Unlock(); return held }})
	go a.Run(ctx)

	cartLabels := identity.PodLabels(map[string]string{"app": "cart"}, "shop", nil)
	dbLabels := identity.PodLabels(map[string]string{"app": "db"}, "shop", nil)
	cart, err := a.Allocate(ctx, cartLabels)
	if err != nil {
		t.Fatal(err)
	}
	db, err := a.Allocate(ctx, dbLabels)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	held = []identity.ID{cart}
	mu.Unlock()
	wait(t, "the allocator to list the identities", a.Synced)

	res := c.Dynamic.Resource(k8s.CiliumIdentities)
	for _, id := range []identity.ID{cart, db} {
		if err := res.Delete(ctx, fmt.Sprint(id), metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting CiliumIdentity %d: %v", id, err)
		}
	}
	wait(t, "db's identity forgotten", func() bool { _, ok := a.Lookup(db); return !ok })
	wait(t, fmt.Sprintf("CiliumIdentity %d re-created with cart's labels", cart), func() bool {
		kv, ok, err := store.Get(ctx, identity.IDsPrefix+fmt.Sprint(cart))
		return err == nil && ok && sameLabels(t, kv.Value, cartLabels)
	})
	if _, err := res.Get(ctx, fmt.Sprint(db), metav1.GetOptions{}); err == nil {
		t.Errorf("CiliumIdentity %d, held by no endpoint, was re-created", db)
	}
	other := identity.NewAllocator(store)
	intruder, err := other.Allocate(ctx, identity.PodLabels(map[string]string{"app": "intruder2"}, "shop", nil))
	if err != nil {
		t.Fatal(err)
	}
	if intruder == cart {
		t.Errorf("a new label set got %d, held by a live endpoint", intruder)
	}
	if id, err := a.Allocate(ctx, cartLabels); err != nil || id != cart {
		t.Errorf("cart's labels: %d %v, want %d", id, err, cart)
	}
	if p := a.Problems(); p != "" {
		t.Errorf("Problems() = %q", p)
	}
}

func sameLabels(t *testing.T, value []byte, want identity.Labels) bool {
	t.Helper()
	var v struct {
		Labels []string `json:"labels"`
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return false
	}
	ls, err := identity.ParseLabels(v.Labels...)
	return err == nil && ls.String() == want.String()
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
