package lbsync

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/testutil"
)

// benchService is a ClusterIP service i selecting the benchmark's pods,
// as the store holds it.
func benchService(name string, ip netip.Addr) kvstore.KV {
	spec := lb.ServiceSpec{
		Type: lb.TypeClusterIP, ClusterIP: ip.String(), ClusterIPs: []string{ip.String()}, IPFamilies: []string{lb.IPv4},
		IPFamilyPolicy: lb.SingleStack, Selector: map[string]string{"app": "be"},
		Ports:           []lb.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: lb.FromInt(8080)}},
		SessionAffinity: lb.AffinityNone, InternalTrafficPolicy: lb.PolicyCluster,
	}
	obj := resource.Object{APIVersion: "v1", Kind: "Service", Metadata: resource.Metadata{Namespace: "bench", Name: name}, Spec: mustJSON(spec)}
	v, _ := json.Marshal(obj)
	return kvstore.KV{Key: obj.Key(), Value: v}
}

func benchIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}) }

// benchSyncer is a standalone node with n services over 3 backend pods,
// reconciled once.
func benchSyncer(b *testing.B, m Maps, n int) *Syncer {
	b.Helper()
	nodes := &fakeNodes{nodes: []model.Node{{Name: "n1", Zone: "a"}}}
	var pods kvstore.Update
	pods.Resync = true
	for i := range 3 {
		obj := resource.Object{APIVersion: "v1", Kind: "Pod", Metadata: resource.Metadata{Namespace: "bench", Name: fmt.Sprintf("be%d", i), Labels: map[string]string{"app": "be"}}}
		v, _ := json.Marshal(obj)
		pods.KVs = append(pods.KVs, kvstore.KV{Key: obj.Key(), Value: v})
		nodes.eps = append(nodes.eps, model.Endpoint{Node: "n1", ContainerID: fmt.Sprint(i), PodName: obj.Metadata.Name, Namespace: "bench", IPv4: fmt.Sprintf("10.200.0.%d", i+2)})
	}
	svcs := kvstore.Update{Resync: true}
	for i := range n {
		svcs.KVs = append(svcs.KVs, benchService(fmt.Sprintf("svc%d", i), benchIP(i+1)))
	}
	s, err := New(nil, Tables{}, m, nodes, Options{Local: func() lb.NodeInfo { return localNode }}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	s.apply("Pod", pods)
	s.apply("Service", svcs)
	s.apply("EndpointSlice", kvstore.Update{Resync: true})
	if err := s.reconcile(); err != nil {
		b.Fatal(err)
	}
	if got := len(s.st.have); got != n {
		b.Fatalf("%d frontends programmed, want %d", got, n)
	}
	return s
}

// benchAdd times adding one service to n: the store event decoded,
// the service recomputed (its slices derived), its frontend written. It
// also reports the process' CPU time per addition: on a busy machine the
// wall time mostly measures waiting for a CPU.
func benchAdd(b *testing.B, m Maps, n int) {
	s := benchSyncer(b, m, n)
	kvs := make([]kvstore.KV, b.N)
	for i := range kvs {
		kvs[i] = benchService(fmt.Sprintf("added%d", i), benchIP(50000+i))
	}
	b.ReportAllocs()
	writes := 0
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		s.apply("Service", kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kvs[i]}}})
		if err := s.reconcile(); err != nil {
			b.Fatal(err)
		}
		st := s.LastSync()
		if st.Full || st.Frontends != 1 {
			b.Fatalf("adding one service: %+v", st)
		}
		writes += st.Writes
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(writes)/float64(b.N), "mapwrites/op")
}

// cpuTime is the process' user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkAddService: the incremental path, adding one service when n
// exist, against Go maps (the syncer's own work).
func BenchmarkAddService(b *testing.B) {
	for _, n := range []int{1, 1000, 10000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) { benchAdd(b, newFakeMaps(b), n) })
	}
}

// BenchmarkAddServiceDatapath is BenchmarkAddService writing the real BPF
// maps (root: the datapath is loaded on a private bpffs).
func BenchmarkAddServiceDatapath(b *testing.B) {
	testutil.RequirePrivileged(b)
	dir := filepath.Join(b.TempDir(), "bpf")
	dp, err := datapath.Load(datapath.Options{BPFFS: dir})
	if err != nil {
		b.Fatalf("loading the datapath: %v", err)
	}
	b.Cleanup(func() { dp.Close(); _ = unix.Unmount(dir, 0) })
	for _, n := range []int{1, 1000, 10000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			benchAdd(b, dp, n)
			// The next size starts from empty maps.
			b.StopTimer()
			s, err := New(nil, Tables{}, dp, &fakeNodes{}, Options{Local: func() lb.NodeInfo { return localNode }}, quiet)
			if err != nil {
				b.Fatal(err)
			}
			for _, k := range kinds {
				s.apply(k, kvstore.Update{Resync: true})
			}
			if err := s.reconcile(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkFullReconcile is what every change cost before the syncer was
// incremental: recomputing every service (here with nothing to write).
func BenchmarkFullReconcile(b *testing.B) {
	s := benchSyncer(b, newFakeMaps(b), 10000)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		s.mu.Lock()
		s.in.full = true
		s.mu.Unlock()
		if err := s.reconcile(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
