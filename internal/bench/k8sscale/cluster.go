package k8sscale

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lumen-net/lumen/internal/k8s"
)

// cluster is the simulated workload: deployments whose pods the agents
// publish as CiliumEndpoints, and the churn that replaces them.
type cluster struct {
	o   Options
	c   *k8s.Clients
	log *slog.Logger
	rng *mrand.Rand

	deps    []*deployment
	order   []int // rollout order of deployments
	next    int   // next deployment to roll
	podSeq  int
	nodeSeq []int // per node: last pod address handed out

	writes, errs atomic.Int64
}

type deployment struct {
	namespace, app string
	identity       int64
	pods           []*pod
	cursor         int // next pod a rollout replaces
}

type pod struct {
	namespace, name string
	identity        int64
	app             string
	node            int
	ipv4, ipv6      string
}

func newCluster(o Options, c *k8s.Clients, log *slog.Logger) *cluster {
	cl := &cluster{o: o, c: c, log: log, rng: mrand.New(mrand.NewPCG(1, 2)), nodeSeq: make([]int, o.Agents)}
	id := int64(10000)
	for n := range o.Namespaces {
		for d := range o.DeploymentsPerNS {
			id++
			cl.deps = append(cl.deps, &deployment{namespace: fmt.Sprintf("scale-%02d", n), app: fmt.Sprintf("app-%d", d), identity: id})
		}
	}
	cl.order = cl.rng.Perm(len(cl.deps))
	return cl
}

// newPod places a new pod of d on a random node.
func (cl *cluster) newPod(d *deployment) *pod {
	cl.podSeq++
	node := cl.rng.IntN(cl.o.Agents)
	cl.nodeSeq[node]++
	host := cl.nodeSeq[node]%250 + 2
	return &pod{
		namespace: d.namespace, name: fmt.Sprintf("%s-%06x", d.app, cl.podSeq), identity: d.identity, app: d.app, node: node,
		// Node n's pod CIDR: 10.(n/256+1).(n%256).0/24, fd00:10:200:n::/64.
		ipv4: fmt.Sprintf("10.%d.%d.%d", node/256+1, node%256, host),
		ipv6: fmt.Sprintf("fd00:10:200:%x::%x", node, host),
	}
}

func nodeName(n int) string { return fmt.Sprintf("node-%04d", n) }

func nodeIP(n int) string { return fmt.Sprintf("10.99.%d.%d", n/250, n%250+1) }

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// endpoint is the CiliumEndpoint an agent publishes for p (as Lumen's
// agent does: node label, owner reference to the pod, identity with its
// labels, addresses, container and pod identifiers).
func endpoint(p *pod, state string) *unstructured.Unstructured {
	cep := &k8s.CiliumEndpoint{Status: k8s.EndpointStatus{
		ID: int64(p.node%4000 + 1),
		ExternalIdentifiers: &k8s.EndpointIdentifiers{
			ContainerID: randomHex(64), K8sNamespace: p.namespace, K8sPodName: p.name, PodName: p.namespace + "/" + p.name,
		},
		Identity: &k8s.EndpointIdentity{ID: p.identity, Labels: []string{
			"k8s:app=" + p.app, "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=" + p.namespace,
		}},
		Networking: &k8s.EndpointNetworking{Addressing: []k8s.AddressPair{{IPv4: p.ipv4, IPv6: p.ipv6}}, NodeIP: nodeIP(p.node)},
		State:      state,
	}}
	cep.APIVersion, cep.Kind = k8s.CiliumEndpoints.GroupVersion().String(), "CiliumEndpoint"
	cep.Namespace, cep.Name = p.namespace, p.name
	cep.Labels = map[string]string{k8s.NodeLabel: nodeName(p.node)}
	cep.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: p.name, UID: types.UID(randomUUID())}}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cep)
	if err != nil {
		panic(err) // a fixed, valid type
	}
	return &unstructured.Unstructured{Object: m}
}

func randomUUID() string {
	h := randomHex(32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// populate creates the namespaces and every deployment's pods.
func (cl *cluster) populate(ctx context.Context) error {
	for n := range cl.o.Namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%02d", n)}}
		if _, err := cl.c.Core.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
		}
	}
	var all []*pod
	for _, d := range cl.deps {
		for range cl.o.Replicas {
			p := cl.newPod(d)
			d.pods = append(d.pods, p)
			all = append(all, p)
		}
	}
	work := make(chan *pod)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for range 32 {
		wg.Go(func() {
			for p := range work {
				if err := cl.create(ctx, p, "ready"); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range all {
		work <- p
	}
	close(work)
	wg.Wait()
	return firstErr
}

func (cl *cluster) create(ctx context.Context, p *pod, state string) error {
	_, err := cl.c.Dynamic.Resource(k8s.CiliumEndpoints).Namespace(p.namespace).Create(ctx, endpoint(p, state), metav1.CreateOptions{FieldManager: "lumen-agent"})
	if err != nil {
		return fmt.Errorf("creating CiliumEndpoint %s/%s: %w", p.namespace, p.name, err)
	}
	cl.writes.Add(1)
	return nil
}

// replacement is one pod replaced: the new pod's CEP is created (and its
// status updated), then the old one deleted.
type replacement struct{ old, new *pod }

// nextReplacement picks the pod the churn replaces next.
func (cl *cluster) nextReplacement() replacement {
	var d *deployment
	var idx int
	if cl.o.Churn == ChurnRandom {
		d = cl.deps[cl.rng.IntN(len(cl.deps))]
		idx = cl.rng.IntN(len(d.pods))
	} else {
		d = cl.deps[cl.order[cl.next]]
		idx = d.cursor
		d.cursor = (d.cursor + 1) % len(d.pods)
		if d.cursor == 0 { // rollout done: the next deployment
			cl.next = (cl.next + 1) % len(cl.order)
		}
	}
	r := replacement{old: d.pods[idx], new: cl.newPod(d)}
	d.pods[idx] = r.new
	return r
}

// states a new endpoint goes through when StatusUpdates > 0 (Cilium's
// agent publishes each).
var states = []string{"waiting-for-identity", "regenerating", "ready"}

func (cl *cluster) replace(ctx context.Context, r replacement) {
	state := "ready"
	if cl.o.StatusUpdates > 0 {
		state = states[0]
	}
	if err := cl.create(ctx, r.new, state); err != nil {
		cl.fail(ctx, err)
		return
	}
	for i := range cl.o.StatusUpdates {
		st := states[min(i+1, len(states)-1)]
		if i == cl.o.StatusUpdates-1 {
			st = "ready"
		}
		patch := fmt.Appendf(nil, `{"status":{"state":%q}}`, st)
		_, err := cl.c.Dynamic.Resource(k8s.CiliumEndpoints).Namespace(r.new.namespace).Patch(ctx, r.new.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "lumen-agent"})
		if err != nil {
			cl.fail(ctx, fmt.Errorf("updating CiliumEndpoint %s/%s: %w", r.new.namespace, r.new.name, err))
		} else {
			cl.writes.Add(1)
		}
	}
	err := cl.c.Dynamic.Resource(k8s.CiliumEndpoints).Namespace(r.old.namespace).Delete(ctx, r.old.name, metav1.DeleteOptions{})
	if err != nil {
		cl.fail(ctx, fmt.Errorf("deleting CiliumEndpoint %s/%s: %w", r.old.namespace, r.old.name, err))
		return
	}
	cl.writes.Add(1)
}

func (cl *cluster) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	if cl.errs.Add(1) <= 5 {
		cl.log.Warn("churn write failed", "err", err)
	}
}

// churn replaces pods at the configured rate for d and returns how many
// replacements it made; it returns after the last one finished.
func (cl *cluster) churn(ctx context.Context, d time.Duration) int64 {
	work := make(chan replacement, 1024)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for r := range work {
				cl.replace(ctx, r)
			}
		})
	}
	interval := time.Duration(float64(time.Second) / cl.o.ChurnRate)
	start := time.Now()
	var n int64
	warned := false
	t := time.NewTicker(min(interval, 10*time.Millisecond))
	defer t.Stop()
loop:
	for {
		// Keep the schedule: as many replacements as the rate asks by
		// now, whatever the ticker's granularity.
		due := int64(time.Since(start) / interval)
		for ; n < due && time.Since(start) < d; n++ {
			r := cl.nextReplacement()
			select {
			case work <- r:
			default:
				if !warned {
					warned = true
					cl.log.Warn("churn falls behind: the API server does not keep up with the rate")
				}
				work <- r
			}
		}
		if time.Since(start) >= d {
			break
		}
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
		}
	}
	close(work)
	wg.Wait()
	return n
}
