package operator

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lumen-net/lumen/internal/k8s"
)

// testCEP is a CiliumEndpoint as an agent publishes it.
func testCEP(ns, name string, identity int64, ip string) *k8s.CiliumEndpoint {
	c := &k8s.CiliumEndpoint{Status: k8s.EndpointStatus{
		ID:       42,
		Identity: &k8s.EndpointIdentity{ID: identity, Labels: []string{"k8s:app=" + name}},
		Networking: &k8s.EndpointNetworking{
			Addressing: []k8s.AddressPair{{IPv4: ip, IPv6: "fd00:10:200:1::" + fmt.Sprint(identity%1000)}},
			NodeIP:     "10.99.0.1",
		},
		ExternalIdentifiers: &k8s.EndpointIdentifiers{ContainerID: "c-" + name, K8sNamespace: ns, K8sPodName: name, PodName: ns + "/" + name},
		NamedPorts:          []k8s.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}},
		State:               "ready",
	}}
	c.APIVersion, c.Kind, c.Namespace, c.Name = k8s.CiliumEndpoints.GroupVersion().String(), "CiliumEndpoint", ns, name
	c.Labels = map[string]string{k8s.NodeLabel: "n1"}
	return c
}

// cesState is the stored slices, checked for consistency.
type cesState struct {
	endpoints map[string]k8s.CoreCiliumEndpoint // ns/name -> endpoint
	sliceOf   map[string]string                 // ns/name -> slice name
	versions  map[string]string                 // slice name -> resourceVersion
}

func readSlices(ctx context.Context, c *k8s.Clients, max int) (*cesState, error) {
	list, err := c.Dynamic.Resource(k8s.CiliumEndpointSlices).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	st := &cesState{endpoints: map[string]k8s.CoreCiliumEndpoint{}, sliceOf: map[string]string{}, versions: map[string]string{}}
	for i := range list.Items {
		s, err := fromUnstructured[k8s.CiliumEndpointSlice](&list.Items[i])
		if err != nil {
			return nil, err
		}
		st.versions[s.Name] = s.ResourceVersion
		if len(s.Endpoints) == 0 {
			return st, fmt.Errorf("empty slice %s", s.Name)
		}
		if len(s.Endpoints) > max {
			return st, fmt.Errorf("slice %s holds %d endpoints, max %d", s.Name, len(s.Endpoints), max)
		}
		for _, ep := range s.Endpoints {
			key := s.Namespace + "/" + ep.Name
			if other, dup := st.sliceOf[key]; dup {
				return st, fmt.Errorf("%s in slices %s and %s", key, other, s.Name)
			}
			st.sliceOf[key] = s.Name
			st.endpoints[key] = normalizeCore(ep)
		}
	}
	return st, nil
}

// expectSlices waits until the slices hold exactly want.
func expectSlices(ctx context.Context, t *testing.T, c *k8s.Clients, max int, want map[string]*k8s.CiliumEndpoint) *cesState {
	t.Helper()
	var st *cesState
	eventually(t, "slices hold exactly the CiliumEndpoints", func() (err error) {
		if st, err = readSlices(ctx, c, max); err != nil {
			return err
		}
		for key, cep := range want {
			got, ok := st.endpoints[key]
			if !ok {
				return fmt.Errorf("%s missing", key)
			}
			if w := coreEndpoint(cep); !reflect.DeepEqual(got, w) {
				return fmt.Errorf("%s is %+v, want %+v", key, got, w)
			}
		}
		for key := range st.endpoints {
			if want[key] == nil {
				return fmt.Errorf("%s should not be in a slice", key)
			}
		}
		return nil
	})
	return st
}

func putCEP(ctx context.Context, t *testing.T, c *k8s.Clients, cep *k8s.CiliumEndpoint) {
	t.Helper()
	u, err := toUnstructured(cep)
	if err != nil {
		t.Fatal(err)
	}
	res := c.Dynamic.Resource(k8s.CiliumEndpoints).Namespace(cep.Namespace)
	cur, err := res.Get(ctx, cep.Name, metav1.GetOptions{})
	if err != nil {
		create(ctx, t, c, cep, cep.Namespace)
		return
	}
	u.SetResourceVersion(cur.GetResourceVersion())
	if _, err := res.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating %s/%s: %v", cep.Namespace, cep.Name, err)
	}
}

func deleteCEP(ctx context.Context, t *testing.T, c *k8s.Clients, ns, name string) {
	t.Helper()
	if err := c.Dynamic.Resource(k8s.CiliumEndpoints).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting %s/%s: %v", ns, name, err)
	}
}

func TestEndpointSlicesFollowEndpointsAndSurviveRestart(t *testing.T) {
	c := clients(t)
	ctx := testContext(t)
	t.Cleanup(func() {
		deleteAll(t, c, k8s.CiliumEndpoints)
		deleteAll(t, c, k8s.CiliumEndpointSlices)
	})
	for _, ns := range []string{"ces-a", "ces-b", "ces-c"} {
		ensureNamespace(ctx, t, c, ns)
	}
	const max = 3
	cfg := onlyConfig()
	cfg.EnableCES, cfg.CESMaxPerSlice, cfg.CESSyncInterval, cfg.CESSliceMode = true, max, 200*time.Millisecond, SliceModeFCFS
	cfg.CESWriteQPS, cfg.CESWriteBurst = 1000, 1000
	op, stop := startOperator(t, c, cfg)

	want := map[string]*k8s.CiliumEndpoint{}
	put := func(cep *k8s.CiliumEndpoint) {
		putCEP(ctx, t, c, cep)
		want[cep.Namespace+"/"+cep.Name] = cep
	}
	del := func(ns, name string) {
		deleteCEP(ctx, t, c, ns, name)
		delete(want, ns+"/"+name)
	}
	for i := range 7 {
		put(testCEP("ces-a", fmt.Sprintf("a%d", i), 1000+int64(i%2), fmt.Sprintf("10.200.1.%d", i+10)))
	}
	put(testCEP("ces-b", "b0", 2000, "10.200.2.10"))
	put(testCEP("ces-b", "b1", 2000, "10.200.2.11"))
	// No identity yet: not in any slice (nor counted for the slice count).
	noID := testCEP("ces-c", "pending", 0, "10.200.3.99")
	noID.Status.Identity = nil
	putCEP(ctx, t, c, noID)
	st := expectSlices(ctx, t, c, max, want)
	if n := len(st.versions); n != 4 {
		t.Errorf("%d slices for 7+2 endpoints at 3 per slice, want 4", n)
	}

	// Update: only the endpoint's slice is written.
	a3 := testCEP("ces-a", "a3", 1099, "10.200.1.99")
	put(a3)
	st2 := expectSlices(ctx, t, c, max, want)
	for name, rv := range st.versions {
		changed := st2.versions[name] != rv
		if changed != (name == st.sliceOf["ces-a/a3"]) {
			t.Errorf("slice %s changed=%v on an update of ces-a/a3 (in %s)", name, changed, st.sliceOf["ces-a/a3"])
		}
	}
	// A status change the slices do not carry writes nothing: once a
	// later change is visible the earlier one was handled.
	writes := testCounter(t, op.metrics.cesWrites.WithLabelValues(opUpdate))
	ready := testCEP("ces-b", "b0", 2000, "10.200.2.10")
	ready.Status.State = "regenerating"
	putCEP(ctx, t, c, ready)
	put(testCEP("ces-a", "a0", 1000, "10.200.1.77"))
	expectSlices(ctx, t, c, max, want)
	if got := testCounter(t, op.metrics.cesWrites.WithLabelValues(opUpdate)) - writes; got != 1 {
		t.Errorf("%v slice updates for one slim change and one status-only change, want 1", got)
	}

	// Delete; a namespace's last endpoint takes its slice with it.
	del("ces-a", "a1")
	del("ces-b", "b0")
	del("ces-b", "b1")
	st = expectSlices(ctx, t, c, max, want)
	eventually(t, "empty slices are deleted", func() error {
		s, err := readSlices(ctx, c, max)
		if err != nil {
			return err
		}
		if len(s.versions) != len(distinct(s.sliceOf)) {
			return fmt.Errorf("%d slices for %d non-empty", len(s.versions), len(distinct(s.sliceOf)))
		}
		return nil
	})

	// Restart with changes made while the operator is away.
	stop()
	del("ces-a", "a2")
	put(testCEP("ces-a", "a4", 1004, "10.200.1.44"))
	for i := range 4 {
		put(testCEP("ces-c", fmt.Sprintf("c%d", i), 3000, fmt.Sprintf("10.200.3.%d", i+10)))
	}
	untouched := map[string]string{}
	for _, key := range []string{"ces-a/a0", "ces-a/a3", "ces-a/a5", "ces-a/a6"} {
		untouched[key] = st.sliceOf[key]
	}
	startOperator(t, c, cfg)
	st = expectSlices(ctx, t, c, max, want)
	for key, slice := range untouched {
		if st.sliceOf[key] != slice {
			t.Errorf("%s moved from slice %s to %s across the restart", key, slice, st.sliceOf[key])
		}
	}
	if len(st.versions) != len(distinct(st.sliceOf)) {
		t.Errorf("empty slices left after the restart: %v", st.versions)
	}
}

func TestEndpointSlicesIdentityMode(t *testing.T) {
	c := clients(t)
	ctx := testContext(t)
	t.Cleanup(func() {
		deleteAll(t, c, k8s.CiliumEndpoints)
		deleteAll(t, c, k8s.CiliumEndpointSlices)
	})
	ensureNamespace(ctx, t, c, "ces-id")
	cfg := onlyConfig()
	cfg.EnableCES, cfg.CESMaxPerSlice, cfg.CESSyncInterval, cfg.CESSliceMode = true, 10, 200*time.Millisecond, "cesSliceModeIdentity" // Cilium's spelling
	startOperator(t, c, cfg)
	want := map[string]*k8s.CiliumEndpoint{}
	for i := range 6 {
		cep := testCEP("ces-id", fmt.Sprintf("p%d", i), 500+int64(i%3), fmt.Sprintf("10.200.4.%d", i+10))
		putCEP(ctx, t, c, cep)
		want["ces-id/"+cep.Name] = cep
	}
	st := expectSlices(ctx, t, c, 10, want)
	identityOf := map[string]int64{} // slice -> its identity
	for key, slice := range st.sliceOf {
		id := st.endpoints[key].IdentityID
		if prev, ok := identityOf[slice]; ok && prev != id {
			t.Errorf("slice %s mixes identities %d and %d", slice, prev, id)
		}
		identityOf[slice] = id
	}
	if len(identityOf) != 3 {
		t.Errorf("%d slices for 3 identities, want 3", len(identityOf))
	}
}

func distinct(m map[string]string) []string {
	var out []string
	for _, v := range m {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}
