package loadbalancer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/resource"
)

// storeService allocates (with the index) and stores obj, as `lumen apply`.
func storeService(t *testing.T, ctx context.Context, c *kvstore.Client, a *Allocator, obj *resource.Object) *Service {
	t.Helper()
	idx, err := OpenIndex(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AssignWith(obj, nil, idx); err != nil {
		t.Fatalf("assigning %s: %v", obj, err)
	}
	svc, err := ServiceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.Claim(svc); err != nil {
		t.Fatalf("claiming for %s: %v", obj, err)
	}
	v, _ := json.Marshal(obj)
	if _, err := c.Put(ctx, obj.Key(), v); err != nil {
		t.Fatal(err)
	}
	return svc
}

func indexed(t *testing.T, ctx context.Context, c *kvstore.Client) map[string]string {
	t.Helper()
	kvs, _, err := c.List(ctx, AllocationsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		if kv.Key != IndexedKey {
			out[strings.TrimPrefix(kv.Key, AllocationsPrefix)] = parseIndexValue(kv).owner
		}
	}
	return out
}

// TestAllocationIndex: allocation reads and records one key per address
// and node port; a store of services written before the index is indexed
// once; conflicts name the holder; stale entries are taken over; a lost
// race is reported for a retry; releasing keeps what the new version holds.
func TestAllocationIndex(t *testing.T) {
	ctx := context.Background()
	c := kvstoretest.Client(t)
	a := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, NodePortMin: 30000, NodePortMax: 30009}

	// A service stored before the index existed.
	old := svcObj(t, "old", `{type: NodePort, clusterIP: 10.96.0.5, ports: [{port: 80, nodePort: 30005}]}`)
	v, _ := json.Marshal(old)
	if _, err := c.Put(ctx, old.Key(), v); err != nil {
		t.Fatal(err)
	}
	np := svcObj(t, "np", `{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81, protocol: UDP}]}`)
	npSvc := storeService(t, ctx, c, a, &np)
	got := indexed(t, ctx, c)
	if got["clusterips/10.96.0.5"] != "shop/old" || got["nodeports/30005"] != "shop/old" {
		t.Errorf("the stored service was not indexed: %v", got)
	}
	for _, k := range AllocationKeys(npSvc) {
		if got[strings.TrimPrefix(k, AllocationsPrefix)] != "shop/np" {
			t.Errorf("%s not recorded for shop/np: %v", k, got)
		}
	}
	if len(got) != 5 { // old: IP + port; np: IP + 2 ports
		t.Errorf("index = %v, want 5 entries", got)
	}

	// Explicit requests of held values name the holder.
	idx, err := OpenIndex(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	clash := svcObj(t, "clash", `{type: NodePort, clusterIP: 10.96.0.5, ports: [{port: 80, nodePort: 30005}]}`)
	err = a.AssignWith(&clash, nil, idx)
	for _, want := range []string{`spec.clusterIPs[0]: invalid value "10.96.0.5": provided IP is already allocated (to service shop/old)`,
		"spec.ports[0].nodePort: invalid value 30005: provided port is already allocated (to service shop/old)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("clash: %v, want %q", err, want)
		}
	}

	// A stale entry (its service is gone, the claim is old) is free.
	if _, err := c.Put(ctx, ClusterIPsPrefix+"10.96.0.7", IndexValue("shop/gone", time.Now().Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	taker := svcObj(t, "taker", `{clusterIP: 10.96.0.7, ports: [{port: 80}]}`)
	storeService(t, ctx, c, a, &taker)
	if got := indexed(t, ctx, c)["clusterips/10.96.0.7"]; got != "shop/taker" {
		t.Errorf("stale entry not taken over: held by %q", got)
	}
	// A fresh one is believed even before its service is stored (an apply
	// between its claim and its write).
	if _, err := c.Put(ctx, ClusterIPsPrefix+"10.96.0.8", IndexValue("shop/coming", time.Now())); err != nil {
		t.Fatal(err)
	}
	idx, _ = OpenIndex(ctx, c)
	early := svcObj(t, "early", `{clusterIP: 10.96.0.8, ports: [{port: 80}]}`)
	if err := a.AssignWith(&early, nil, idx); err == nil || !strings.Contains(err.Error(), "already allocated (to service shop/coming)") {
		t.Errorf("fresh claim: %v", err)
	}

	// Two applies racing for the only address: the second claim loses.
	one := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.98.0.1/32")}}
	i1, _ := OpenIndex(ctx, c)
	i2, _ := OpenIndex(ctx, c)
	r1, r2 := svcObj(t, "r1", `{ports: [{port: 80}]}`), svcObj(t, "r2", `{ports: [{port: 80}]}`)
	if err := one.AssignWith(&r1, nil, i1); err != nil {
		t.Fatal(err)
	}
	if err := one.AssignWith(&r2, nil, i2); err != nil {
		t.Fatal(err)
	}
	s1, _ := ServiceOf(&r1)
	s2, _ := ServiceOf(&r2)
	if s1.Spec.ClusterIP != "10.98.0.1" || s2.Spec.ClusterIP != "10.98.0.1" {
		t.Fatalf("both should have picked the only address: %s %s", s1.Spec.ClusterIP, s2.Spec.ClusterIP)
	}
	if err := i1.Claim(s1); err != nil {
		t.Fatal(err)
	}
	if err := i2.Claim(s2); !IsLostRace(err) {
		t.Errorf("second claim: %v, want a lost race", err)
	}

	// An update that changes node ports releases the old ones only.
	upd := svcObj(t, "np", `{type: NodePort, ports: [{name: a, port: 80, nodePort: 30009}]}`)
	idx, _ = OpenIndex(ctx, c)
	if err := a.AssignWith(&upd, npSvc, idx); err != nil {
		t.Fatal(err)
	}
	updSvc, _ := ServiceOf(&upd)
	if err := idx.Claim(updSvc); err != nil {
		t.Fatal(err)
	}
	if err := ReleaseAllocations(ctx, c, npSvc, updSvc); err != nil {
		t.Fatal(err)
	}
	got = indexed(t, ctx, c)
	for _, p := range npSvc.Spec.Ports {
		if o := got[fmt.Sprintf("nodeports/%d", p.NodePort)]; o != "" {
			t.Errorf("old node port %d still held by %q", p.NodePort, o)
		}
	}
	if got["nodeports/30009"] != "shop/np" || got["clusterips/"+npSvc.Spec.ClusterIP] != "shop/np" {
		t.Errorf("after the update: %v", got)
	}
	// Releasing a deleted service leaves others' entries alone.
	if err := ReleaseAllocations(ctx, c, &Service{Namespace: "shop", Name: "other", Spec: updSvc.Spec}, nil); err != nil {
		t.Fatal(err)
	}
	if got := indexed(t, ctx, c); got["nodeports/30009"] != "shop/np" {
		t.Errorf("another service's release removed shop/np's entry: %v", got)
	}
}

// TestAllocationIndexCrowded: in a nearly full range the index is read
// once instead of key by key, and the last free address is found.
func TestAllocationIndexCrowded(t *testing.T) {
	ctx := context.Background()
	c := kvstoretest.Client(t)
	a := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/25")}} // 126 addresses
	if err := BuildIndex(ctx, c); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 126; i++ {
		if i == 77 {
			continue
		}
		if _, err := c.Put(ctx, ClusterIPsPrefix+fmt.Sprintf("10.96.0.%d", i), IndexValue("shop/filler", time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	obj := svcObj(t, "last", `{ports: [{port: 80}]}`)
	svc := storeService(t, ctx, c, a, &obj)
	if svc.Spec.ClusterIP != "10.96.0.77" {
		t.Errorf("got %s, want the only free address 10.96.0.77", svc.Spec.ClusterIP)
	}
	full := svcObj(t, "full", `{ports: [{port: 80}]}`)
	idx, _ := OpenIndex(ctx, c)
	if err := a.AssignWith(&full, nil, idx); err == nil || !strings.Contains(err.Error(), "no free address left in the service CIDR 10.96.0.0/25") {
		t.Errorf("full range: %v", err)
	}
}
