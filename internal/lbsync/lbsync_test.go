package lbsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// world is a small cluster whose objects random events change: the store
// (services, pods, slices) and the node manager (nodes, endpoints).
type world struct {
	rng      *rand.Rand
	gen      int
	store    map[string]map[string][]byte // kind -> key -> value
	nodes    *fakeNodes
	local    lb.NodeInfo
	nsvc     int
	npod     int
	nslice   int
	controll bool // ControllerSlices: no pods, slices for every service
}

var localNode = lb.NodeInfo{Name: "n1", Zone: "a", IPs: []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:99::1")}}

func newWorld(seed uint64, controller bool) *world {
	w := &world{
		rng:   rand.New(rand.NewPCG(seed, seed*7+1)),
		store: map[string]map[string][]byte{"Service": {}, "Pod": {}, "EndpointSlice": {}},
		nodes: &fakeNodes{nodes: []model.Node{
			{Name: "n1", Zone: "a"}, {Name: "n2", Zone: "b"}, {Name: "n3", Zone: "a"},
		}},
		local: localNode, nsvc: 8, npod: 12, nslice: 6, controll: controller,
	}
	for i := range w.nsvc {
		w.putService(i)
	}
	if !controller {
		for i := range w.npod {
			w.putPod(i)
			if w.rng.IntN(5) > 0 {
				w.putEndpoint(i)
			}
		}
	}
	for i := range w.nslice {
		w.putSlice(i)
	}
	return w
}

func (w *world) pick(xs ...string) string { return xs[w.rng.IntN(len(xs))] }
func (w *world) chance(p float64) bool    { return w.rng.Float64() < p }

func ns(i int) string { return []string{"a", "b"}[i%2] }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// putService stores a random version of service i.
func (w *world) putService(i int) kvstore.Event {
	name := fmt.Sprintf("s%d", i)
	spec := lb.ServiceSpec{Type: w.pick(lb.TypeClusterIP, lb.TypeClusterIP, lb.TypeNodePort, lb.TypeLoadBalancer)}
	ip4 := netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)})
	spec.ClusterIPs = []string{ip4.String()}
	spec.IPFamilies = []string{lb.IPv4}
	if w.chance(0.3) {
		spec.ClusterIPs = append(spec.ClusterIPs, fmt.Sprintf("fd00:96::%x", i+1))
		spec.IPFamilies = append(spec.IPFamilies, lb.IPv6)
	}
	if w.chance(0.05) && spec.Type == lb.TypeClusterIP {
		spec.ClusterIPs, spec.IPFamilies = []string{lb.ClusterIPNone}, nil
	}
	spec.ClusterIP = spec.ClusterIPs[0]
	if w.chance(0.8) {
		spec.Selector = map[string]string{"app": w.pick("x", "y", "z")}
	}
	target := lb.FromString("http")
	if w.chance(0.4) {
		target = lb.FromInt(8080)
	}
	spec.Ports = []lb.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: target}}
	if w.chance(0.3) {
		spec.Ports = append(spec.Ports, lb.ServicePort{Name: "dns", Port: 53, Protocol: "UDP", TargetPort: lb.FromInt(53)})
	}
	if spec.Type != lb.TypeClusterIP {
		for j := range spec.Ports {
			spec.Ports[j].NodePort = int32(30000 + 2*i + j)
		}
	}
	if w.chance(0.2) {
		spec.ExternalIPs = []string{"192.0.2.1"} // claimed by several services
	}
	external := spec.Type != lb.TypeClusterIP || len(spec.ExternalIPs) > 0
	if external {
		spec.ExternalTrafficPolicy = lb.PolicyCluster
		if w.chance(0.3) {
			spec.ExternalTrafficPolicy = lb.PolicyLocal
		}
	}
	spec.InternalTrafficPolicy = lb.PolicyCluster
	if w.chance(0.15) {
		spec.InternalTrafficPolicy = lb.PolicyLocal
	}
	if w.chance(0.15) {
		t := int32(60)
		spec.SessionAffinity = lb.AffinityClientIP
		spec.SessionAffinityConfig = &lb.SessionAffinityConfig{ClientIP: &lb.ClientIPConfig{TimeoutSeconds: &t}}
	}
	obj := resource.Object{APIVersion: "v1", Kind: "Service", Metadata: resource.Metadata{Namespace: ns(i), Name: name}, Spec: mustJSON(spec)}
	if w.chance(0.3) {
		obj.Metadata.Annotations = map[string]string{lb.AnnotationTopologyMode: "Auto"}
	}
	if spec.Type == lb.TypeLoadBalancer {
		in := lb.LoadBalancerIngress{IP: fmt.Sprintf("192.0.2.%d", 10+i%3)}
		if w.chance(0.2) {
			in.IPMode = lb.IPModeProxy
		}
		obj.Other = map[string]json.RawMessage{"status": mustJSON(lb.ServiceStatus{LoadBalancer: lb.LoadBalancerStatus{Ingress: []lb.LoadBalancerIngress{in}}})}
	}
	return w.put("Service", obj.Key(), mustJSON(obj))
}

func (w *world) putPod(i int) kvstore.Event {
	obj := resource.Object{APIVersion: "v1", Kind: "Pod", Metadata: resource.Metadata{
		Namespace: ns(i), Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": w.pick("x", "y", "z")},
		Annotations: map[string]string{},
	}}
	if w.chance(0.15) {
		obj.Metadata.Annotations[lb.AnnotationReady] = "false"
	}
	if w.chance(0.15) {
		obj.Metadata.Annotations[lb.AnnotationTerminating] = "true"
	}
	ports := []resource.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: "UDP"}}
	if w.chance(0.85) {
		ports = append(ports, resource.ContainerPort{Name: "http", ContainerPort: 8080})
	}
	obj.Spec = mustJSON(resource.PodSpec{Containers: []resource.Container{{Name: "c", Ports: ports}}})
	return w.put("Pod", obj.Key(), mustJSON(obj))
}

// putEndpoint announces (or moves, or readdresses) pod i's endpoint.
func (w *world) putEndpoint(i int) {
	w.gen++
	cid := fmt.Sprintf("c%d", i)
	w.nodes.eps = slices.DeleteFunc(w.nodes.eps, func(e model.Endpoint) bool { return e.ContainerID == cid })
	w.nodes.eps = append(w.nodes.eps, model.Endpoint{
		Node: w.pick("n1", "n2", "n3"), ContainerID: cid, PodName: fmt.Sprintf("p%d", i), Namespace: ns(i),
		IPv4: fmt.Sprintf("10.1.%d.%d", w.rng.IntN(2), i+1), IPv6: fmt.Sprintf("fd00:1::%x", i+1),
	})
}

func (w *world) putSlice(i int) kvstore.Event {
	svc := fmt.Sprintf("s%d", w.rng.IntN(w.nsvc))
	fam := lb.IPv4
	if w.chance(0.2) {
		fam = lb.IPv6
	}
	sl := &lb.EndpointSlice{
		Namespace: ns(i), Name: fmt.Sprintf("manual-%d", i), AddressType: fam,
		Labels: map[string]string{lb.LabelServiceName: svc},
	}
	port, dns := int32(8080), int32(53)
	sl.Ports = []lb.EndpointPort{{Name: "http", Protocol: "TCP", Port: &port}, {Name: "dns", Protocol: "UDP", Port: &dns}}
	for j := range 1 + w.rng.IntN(4) {
		addr := fmt.Sprintf("10.2.%d.%d", i, j+1+w.rng.IntN(3))
		if fam == lb.IPv6 {
			addr = fmt.Sprintf("fd00:2::%x:%x", i, j+1)
		}
		ready, serving, term := w.chance(0.7), w.chance(0.8), w.chance(0.2)
		ep := lb.Endpoint{Addresses: []string{addr}, NodeName: w.pick("n1", "n2", "n3"), Zone: w.pick("a", "b"),
			Conditions: lb.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}}
		if w.chance(0.5) {
			ep.Hints = &lb.EndpointHints{ForZones: []lb.ForZone{{Name: w.pick("a", "b")}}}
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	obj, err := sl.Object()
	if err != nil {
		panic(err)
	}
	return w.put("EndpointSlice", obj.Key(), mustJSON(obj))
}

func (w *world) put(kind, key string, v []byte) kvstore.Event {
	w.store[kind][key] = v
	return kvstore.Event{Type: kvstore.EventPut, KV: kvstore.KV{Key: key, Value: v}}
}

func (w *world) del(kind string) (kvstore.Event, bool) {
	keys := sortedKeys(w.store[kind])
	if len(keys) == 0 {
		return kvstore.Event{}, false
	}
	k := keys[w.rng.IntN(len(keys))]
	delete(w.store[kind], k)
	return kvstore.Event{Type: kvstore.EventDelete, KV: kvstore.KV{Key: k}}, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// resync is the store's content as a listing.
func (w *world) resync(kind string) kvstore.Update {
	u := kvstore.Update{Resync: true}
	for _, k := range sortedKeys(w.store[kind]) {
		u.KVs = append(u.KVs, kvstore.KV{Key: k, Value: w.store[kind][k]})
	}
	return u
}

func (w *world) kinds() []string {
	if w.controll {
		return []string{"Service", "EndpointSlice"}
	}
	return kinds
}

// step makes one random change and tells s about it.
func (w *world) step(s *Syncer) string {
	switch r := w.rng.IntN(100); {
	case r < 25:
		i := w.rng.IntN(w.nsvc)
		s.apply("Service", kvstore.Update{Events: []kvstore.Event{w.putService(i)}})
		return fmt.Sprintf("service s%d", i)
	case r < 30:
		if ev, ok := w.del("Service"); ok {
			s.apply("Service", kvstore.Update{Events: []kvstore.Event{ev}})
			return "delete " + ev.KV.Key
		}
	case r < 45:
		i := w.rng.IntN(w.nslice)
		s.apply("EndpointSlice", kvstore.Update{Events: []kvstore.Event{w.putSlice(i)}})
		return fmt.Sprintf("slice %d", i)
	case r < 50:
		if ev, ok := w.del("EndpointSlice"); ok {
			s.apply("EndpointSlice", kvstore.Update{Events: []kvstore.Event{ev}})
			return "delete " + ev.KV.Key
		}
	case r < 65 && !w.controll:
		i := w.rng.IntN(w.npod)
		s.apply("Pod", kvstore.Update{Events: []kvstore.Event{w.putPod(i)}})
		return fmt.Sprintf("pod p%d", i)
	case r < 70 && !w.controll:
		if ev, ok := w.del("Pod"); ok {
			s.apply("Pod", kvstore.Update{Events: []kvstore.Event{ev}})
			return "delete " + ev.KV.Key
		}
	case r < 85 && !w.controll:
		i := w.rng.IntN(w.npod)
		if w.chance(0.3) {
			cid := fmt.Sprintf("c%d", i)
			w.nodes.eps = slices.DeleteFunc(w.nodes.eps, func(e model.Endpoint) bool { return e.ContainerID == cid })
		} else {
			w.putEndpoint(i)
		}
		s.nodesChanged()
		return fmt.Sprintf("endpoint c%d", i)
	case r < 90:
		n := &w.nodes.nodes[1+w.rng.IntN(2)]
		n.Zone = w.pick("a", "b", "c")
		if w.chance(0.3) {
			n.Labels = map[string]string{"node-role.kubernetes.io/control-plane": ""}
		} else {
			n.Labels = nil
		}
		s.nodesChanged()
		return "node " + n.Name
	case r < 93:
		k := w.kinds()[w.rng.IntN(len(w.kinds()))]
		s.apply(k, w.resync(k))
		return "resync " + k
	}
	return "nothing"
}

func newTestSyncer(t testing.TB, m Maps, w *world, opts Options) *Syncer {
	t.Helper()
	opts.ControllerSlices = w.controll
	if opts.Local == nil {
		opts.Local = func() lb.NodeInfo { return w.local }
	}
	s, err := New(nil, Tables{}, m, w.nodes, opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range w.kinds() {
		s.apply(k, w.resync(k))
	}
	return s
}

// expected computes the frontends straight from the model: every object,
// Desired over all of them, a frontend claimed twice going to the first
// service by name. Frontend key -> active backend keys.
func expected(w *world) map[string][]string {
	var svcs []*lb.Service
	var sls []*lb.EndpointSlice
	pods := map[string]*lb.Pod{}
	for _, k := range sortedKeys(w.store["Service"]) {
		obj, _ := resource.Unmarshal(w.store["Service"][k])
		svc, err := lb.ServiceOf(obj)
		if err != nil {
			panic(err)
		}
		svcs = append(svcs, svc)
	}
	for _, k := range sortedKeys(w.store["EndpointSlice"]) {
		obj, _ := resource.Unmarshal(w.store["EndpointSlice"][k])
		sl, err := lb.EndpointSliceOf(obj)
		if err != nil {
			panic(err)
		}
		sls = append(sls, sl)
	}
	for _, v := range w.store["Pod"] {
		obj, _ := resource.Unmarshal(v)
		p, err := lb.PodOf(obj)
		if err != nil {
			panic(err)
		}
		pods[p.Namespace+"/"+p.Name] = p
	}
	if !w.controll {
		for _, svc := range svcs {
			var mine []model.Endpoint
			for _, e := range w.nodes.eps {
				if e.Namespace == svc.Namespace {
					mine = append(mine, e)
				}
			}
			sls = append(sls, lb.SlicesFor(svc, mine, pods, w.nodes.nodes)...)
		}
	}
	out := map[string][]string{}
	owner := map[string]string{}
	for _, fe := range lb.Desired(svcs, sls, w.local) {
		scope := datapath.ScopeExternal
		if fe.Scope == lb.ScopeInternal {
			scope = datapath.ScopeInternal
		}
		k := fmt.Sprintf("%s/%d/%d", netip.AddrPortFrom(fe.Addr, fe.Port), fe.Proto, scope)
		if o, ok := owner[k]; ok && o != fe.Service {
			continue // the first service by name keeps it
		}
		owner[k] = fe.Service
		var bs []string
		for _, b := range fe.Active() {
			bs = append(bs, beKey(datapath.Backend{Addr: b.Addr, Port: b.Port, Proto: uint8(b.Proto)}))
		}
		out[k] = bs
	}
	return out
}

func diffCanon(a, b canonMaps) string {
	var out []string
	for _, k := range sortedKeys(a.Frontends) {
		if !reflect.DeepEqual(a.Frontends[k], b.Frontends[k]) {
			out = append(out, fmt.Sprintf("frontend %s:\n  incremental %+v\n  full        %+v", k, a.Frontends[k], b.Frontends[k]))
		}
	}
	for _, k := range sortedKeys(b.Frontends) {
		if _, ok := a.Frontends[k]; !ok {
			out = append(out, fmt.Sprintf("frontend %s: only in the full reconcile: %+v", k, b.Frontends[k]))
		}
	}
	if !reflect.DeepEqual(a.Backends, b.Backends) {
		out = append(out, fmt.Sprintf("backends:\n  incremental %v\n  full        %v", a.Backends, b.Backends))
	}
	return strings.Join(out, "\n")
}

// checkAgainstModel compares the maps with expected(w).
func checkAgainstModel(t *testing.T, c canonMaps, w *world, what string) {
	t.Helper()
	want := expected(w)
	for _, k := range sortedKeys(want) {
		got, ok := c.Frontends[k]
		if !ok {
			t.Errorf("%s: frontend %s missing (want backends %v)", what, k, want[k])
			continue
		}
		if !slices.Equal(got.Backends, want[k]) {
			t.Errorf("%s: frontend %s has backends %v, want %v", what, k, got.Backends, want[k])
		}
	}
	for k := range c.Frontends {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: frontend %s programmed, the model has none", what, k)
		}
	}
}

// TestLBSyncIncrementalEqualsFull: random events in random batches, each batch
// reconciled incrementally, give the same maps as one full reconcile of
// the final state in a fresh syncer, and as the model computed directly;
// every map write keeps the safety order (fakeMaps checks it); and a
// restarted syncer on the same maps and state directory rewrites no entry.
func TestLBSyncIncrementalEqualsFull(t *testing.T) {
	seeds := 25
	if testing.Short() {
		seeds = 10
	}
	if n, err := strconv.Atoi(os.Getenv("LUMEN_LBSYNC_SEEDS")); err == nil {
		seeds = n
	}
	for _, mode := range []struct {
		name       string
		controller bool
		opts       Options
	}{
		{"derived", false, Options{}},
		{"derived-maglev", false, Options{Maglev: true, MaglevSize: 251, MaglevSeed: "s"}},
		{"controller-slices", true, Options{RejectFlag: 1 << 3}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			kinds := map[bool]int{}
			defer func() { t.Logf("%d incremental reconciles, %d full", kinds[false], kinds[true]) }()
			for seed := range uint64(seeds) {
				w := newWorld(seed, mode.controller)
				opts := mode.opts
				opts.StateDir = t.TempDir()
				m := newFakeMaps(t)
				s := newTestSyncer(t, m, w, opts)
				s.afterSync = func(st SyncStats) { kinds[st.Full]++ }
				if err := s.reconcile(); err != nil {
					t.Fatalf("seed %d: first reconcile: %v", seed, err)
				}
				var log []string
				failing := false
				for range 80 {
					log = append(log, w.step(s))
					if w.chance(0.4) {
						// Now and then a map write fails: the next reconcile
						// must still converge.
						failing = w.chance(0.1)
						if failing {
							n := w.rng.IntN(4)
							m.fail = func(op string) error {
								if n--; n == 0 {
									return errors.New("injected failure")
								}
								return nil
							}
						}
						err := s.reconcile()
						m.fail = nil
						if err != nil && !failing {
							t.Fatalf("seed %d: reconcile: %v", seed, err)
						}
					}
				}
				if err := s.reconcile(); err != nil {
					t.Fatalf("seed %d: last reconcile: %v", seed, err)
				}
				got := m.canon(t)

				fm := newFakeMaps(t)
				fresh := newTestSyncer(t, fm, w, Options{Maglev: opts.Maglev, MaglevSize: opts.MaglevSize, MaglevSeed: opts.MaglevSeed, RejectFlag: opts.RejectFlag})
				if err := fresh.reconcile(); err != nil {
					t.Fatalf("seed %d: fresh reconcile: %v", seed, err)
				}
				if d := diffCanon(got, fm.canon(t)); d != "" {
					t.Fatalf("seed %d: incremental and full differ after\n  %s\n%s", seed, strings.Join(log, "\n  "), d)
				}
				checkAgainstModel(t, got, w, fmt.Sprintf("seed %d", seed))
				checkNoLeaks(t, s, m)

				// Restart: same maps, same state directory.
				before := m.writes
				masters := maps.Clone(m.masters)
				r := newTestSyncer(t, m, w, opts)
				if err := r.reconcile(); err != nil {
					t.Fatalf("seed %d: reconcile after restart: %v", seed, err)
				}
				if d := diffCanon(got, m.canon(t)); d != "" {
					t.Fatalf("seed %d: a restart changed the maps:\n%s", seed, d)
				}
				if !reflect.DeepEqual(masters, m.masters) {
					t.Errorf("seed %d: a restart changed service ids or entries", seed)
				}
				if st := r.LastSync(); st.Frontends != 0 {
					t.Errorf("seed %d: a restart rewrote %d frontends (%d map writes, %d before)", seed, st.Frontends, m.writes-before, before)
				}
			}
		})
	}
}

// checkNoLeaks: the backend map holds exactly the backends programmed
// frontends list, and the allocator has ids for exactly those.
func checkNoLeaks(t *testing.T, s *Syncer, m *fakeMaps) {
	t.Helper()
	listed := map[uint32]bool{}
	for _, p := range s.st.have {
		for _, id := range p.ids {
			listed[id] = true
		}
	}
	for id := range m.backends {
		if !listed[id] {
			t.Errorf("backend %d (%v) is in the map but no frontend lists it", id, m.backends[id])
		}
	}
	if n := s.st.ids.Len(); n != len(m.backends) {
		t.Errorf("the allocator holds %d ids for %d backends", n, len(m.backends))
	}
}

// TestLBSyncNoBackends: a frontend without an active backend is programmed with
// count 0, the reject flag when its service has no endpoint anywhere (not
// when Local policy excludes endpoints elsewhere), and `lumen service list`
// says which.
func TestLBSyncNoBackends(t *testing.T) {
	w := &world{store: map[string]map[string][]byte{"Service": {}, "Pod": {}, "EndpointSlice": {}},
		nodes: &fakeNodes{nodes: []model.Node{{Name: "n1", Zone: "a"}, {Name: "n2", Zone: "b"}}}, local: localNode, controll: true}
	svc := func(name, ip string, nodePort int, extra string) {
		spec := fmt.Sprintf(`{"type":"NodePort","clusterIP":%q,"clusterIPs":[%[1]q],"ipFamilies":["IPv4"],"ports":[{"name":"http","port":80,"protocol":"TCP","nodePort":%d}]%s}`, ip, nodePort, extra)
		obj := resource.Object{APIVersion: "v1", Kind: "Service", Metadata: resource.Metadata{Namespace: "a", Name: name}, Spec: json.RawMessage(spec)}
		w.put("Service", obj.Key(), mustJSON(obj))
	}
	svc("empty", "10.96.0.1", 30001, "")
	svc("remote", "10.96.0.2", 30002, `,"externalTrafficPolicy":"Local"`)
	port := int32(8080)
	sl := &lb.EndpointSlice{Namespace: "a", Name: "remote-1", AddressType: lb.IPv4, Labels: map[string]string{lb.LabelServiceName: "remote"},
		Endpoints: []lb.Endpoint{{Addresses: []string{"10.1.0.9"}, NodeName: "n2"}}, Ports: []lb.EndpointPort{{Name: "http", Protocol: "TCP", Port: &port}}}
	obj, _ := sl.Object()
	w.put("EndpointSlice", obj.Key(), mustJSON(obj))

	for _, reject := range []uint32{0, 1 << 3} {
		m := newFakeMaps(t)
		s := newTestSyncer(t, m, w, Options{RejectFlag: reject})
		if err := s.reconcile(); err != nil {
			t.Fatal(err)
		}
		rows := map[string]string{}
		for _, r := range s.Services() {
			rows[r.Service+" "+r.Type+" "+r.Scope] = r.NoBackends + "/" + r.NewConnections
		}
		verdict := "drop"
		if reject != 0 {
			verdict = "reject"
		}
		want := map[string]string{
			"a/empty ClusterIP internal":  "no endpoints/" + verdict,
			"a/empty NodePort external":   "no endpoints/" + verdict,
			"a/remote ClusterIP internal": "/",                       // cluster policy: the remote endpoint
			"a/remote NodePort external":  "no local endpoints/drop", // Local: none here
			"a/remote NodePort internal":  "/",                       // its internal twin
		}
		for k, v := range want {
			if rows[k] != v {
				t.Errorf("reject flag %d: %s: %q, want %q", reject, k, rows[k], v)
			}
		}
		for k, e := range m.masters {
			rejects := e.Flags&(1<<3) != 0
			if wantFlag := reject != 0 && k.addr.String() != "10.96.0.2" && len(e.Backends) == 0 && k.port != 30002; rejects != wantFlag {
				t.Errorf("reject flag %d: %v flags %#x", reject, k, e.Flags)
			}
		}
	}
}

// TestLBSyncRunWithStore: the syncer follows a real store: nothing before the
// listing, then one service added or removed is one incremental change.
func TestLBSyncRunWithStore(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 50 {
		kv := benchService(fmt.Sprintf("svc%d", i), benchIP(i+1))
		if _, err := c.Put(ctx, kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	port := int32(8080)
	sl := &lb.EndpointSlice{Namespace: "bench", Name: "svc0-1", AddressType: lb.IPv4, Labels: map[string]string{lb.LabelServiceName: "svc0"},
		Endpoints: []lb.Endpoint{{Addresses: []string{"10.1.0.9"}, NodeName: "n1"}}, Ports: []lb.EndpointPort{{Name: "http", Protocol: "TCP", Port: &port}}}
	obj, _ := sl.Object()
	if _, err := c.Put(ctx, obj.Key(), mustJSON(obj)); err != nil {
		t.Fatal(err)
	}
	s, err := New(c, storeTables(ctx, c), newFakeMaps(t), &fakeNodes{}, Options{ControllerSlices: true, StateDir: t.TempDir(),
		Local: func() lb.NodeInfo { return localNode }}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx)
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %s", what, s.Health().Message)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	frontends := func(n int) func() bool {
		return func() bool { return strings.HasPrefix(s.Health().Message, fmt.Sprintf("%d frontends,", n)) }
	}
	wait("listing", frontends(50))
	rows := map[string]api.Service{}
	for _, r := range s.Services() {
		rows[r.Frontend] = r
	}
	if r := rows["10.96.0.1:80"]; len(rows) != 50 || len(r.Backends) != 1 || r.NoBackends != "" || rows["10.96.0.2:80"].NoBackends != "no endpoints" {
		t.Errorf("after the listing: %d rows, %+v, %+v", len(rows), r, rows["10.96.0.2:80"])
	}
	kv := benchService("added", benchIP(100))
	if _, err := c.Put(ctx, kv.Key, kv.Value); err != nil {
		t.Fatal(err)
	}
	wait("adding one", frontends(51))
	if st := s.LastSync(); st.Full || st.Services != 1 || st.Frontends != 1 {
		t.Errorf("adding one service: %+v", st)
	}
	if _, err := c.Delete(ctx, kv.Key); err != nil {
		t.Fatal(err)
	}
	wait("removing it", frontends(50))
	if st := s.LastSync(); st.Full || st.Services != 1 || st.Frontends != 1 {
		t.Errorf("removing one service: %+v", st)
	}
}

// TestLBSyncWaitsForNodeListing: deriving slices, a (restarted) syncer
// writes nothing until the node manager holds the endpoints the store
// has: before that the services' pods would look endpoint-less and their
// backends, which established connections use, would be removed.
func TestLBSyncWaitsForNodeListing(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n1 := model.Node{Name: "n1", Zone: "a"}
	ep := model.Endpoint{Node: "n1", ContainerID: "c1", PodName: "be0", Namespace: "bench", IPv4: "10.200.0.2"}
	for k, v := range map[string]any{model.NodesPrefix + "n1": n1, model.EndpointsPrefix + "n1/c1": ep} {
		if _, err := c.Put(ctx, k, mustJSON(v)); err != nil {
			t.Fatal(err)
		}
	}
	pod := resource.Object{APIVersion: "v1", Kind: "Pod", Metadata: resource.Metadata{Namespace: "bench", Name: "be0", Labels: map[string]string{"app": "be"}}}
	svc := benchService("svc", benchIP(1))
	for _, kv := range []kvstore.KV{{Key: pod.Key(), Value: mustJSON(pod)}, svc} {
		if _, err := c.Put(ctx, kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	m := newFakeMaps(t)
	nodes := &fakeNodes{}
	s, err := New(c, storeTables(ctx, c), m, nodes, Options{StateDir: t.TempDir(), Local: func() lb.NodeInfo { return localNode }}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx)
	time.Sleep(500 * time.Millisecond) // the store's listing is in by now; the node manager's is not
	if h := s.Health(); !strings.HasPrefix(h.Message, "waiting") {
		t.Errorf("reconciled before the node manager listed the endpoints: %s", h.Message)
	}
	nodes.set([]model.Node{n1}, []model.Endpoint{ep})
	deadline := time.Now().Add(time.Minute)
	for {
		rows := s.Services()
		if len(rows) == 1 && len(rows[0].Backends) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not programmed with its backend: %+v (%s)", rows, s.Health().Message)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storeTables are the syncer's tables fed from c, as the agent builds them.
func storeTables(ctx context.Context, c kvstore.Store) Tables {
	ts := clusterstate.New(c, Kinds, quiet)
	go ts.Run(ctx)
	return Tables{Services: ts.Kind("Service"), EndpointSlices: ts.Kind("EndpointSlice"), Pods: ts.Pods()}
}
