package controlplane

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"golang.org/x/sys/unix"
)

func clientset(t *testing.T, c *ControlPlane) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// gone reports whether pid has exited (a zombie not yet reaped by the
// handle that started it counts as exited).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || procState(pid) == 'Z'
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// TestStart checks the shared control plane is whole and records how long
// it took and how much memory it uses.
func TestStart(t *testing.T) {
	c := controlPlane(t)
	t.Logf("start to ready: %v; CRDs established in %v", c.Timings(), crdTime.Round(time.Millisecond))
	pids := c.PIDs()
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		pid, ok := pids[name]
		if !ok {
			t.Errorf("%s is not running", name)
			continue
		}
		t.Logf("%s: pid %d, RSS %d MiB", name, pid, rssKiB(pid)/1024)
	}
	if c.Port() == 0 || c.URL() != "https://127.0.0.1:"+strconv.Itoa(c.Port()) {
		t.Errorf("URL %q, port %d", c.URL(), c.Port())
	}
	// The admin kubeconfig works on its own.
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through %s: %v", c.Kubeconfig(), err)
	}
	// hack/build-k8s.sh builds without version ldflags.
	t.Logf("server version %s (%s)", v.GitVersion, v.GoVersion)
	// Dual-stack service ranges: the kubernetes Service has the first
	// address of the primary range.
	svc, err := cs.CoreV1().Services("default").Get(testContext(t), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes Service cluster IP %s, want 10.96.0.1", svc.Spec.ClusterIP)
	}
}

// TestEndpointSliceController proves the lab's recipe: a Node, a Service
// with a selector and a Pod bound to the Node whose status is marked ready
// yield an EndpointSlice with the pod's address, node and zone; marking it
// not ready flips the endpoint's ready condition.
func TestEndpointSliceController(t *testing.T) {
	c := controlPlane(t)
	ctx := testContext(t)
	cs := clientset(t, c)
	const ns = "eps-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := RegisterNode(ctx, cs, "eps-node1", "zone-a", netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:10:99::1")); err != nil {
		t.Fatal(err)
	}
	// Registering again (an agent restart) keeps working.
	if err := RegisterNode(ctx, cs, "eps-node1", "zone-a", netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:10:99::1")); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The default ServiceAccount of a new namespace comes from the
	// controller: Pod creation may be refused for a moment.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:   "eps-node1",
			Containers: []corev1.Container{{Name: "web", Image: "lumen/echo", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	for {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "serviceaccount") || ctx.Err() != nil {
			t.Fatalf("creating the pod: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := MarkPodReady(ctx, cs, ns, "web-1", netip.MustParseAddr("10.200.1.7"), netip.MustParseAddr("fd00:10:200:1::7")); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.PodIP != "10.200.1.7" || len(p.Status.PodIPs) != 2 || p.Status.HostIP != "10.99.0.1" || p.Status.Phase != corev1.PodRunning {
		t.Errorf("pod status: podIP %s podIPs %v hostIP %s phase %s", p.Status.PodIP, p.Status.PodIPs, p.Status.HostIP, p.Status.Phase)
	}

	waitEndpoint := func(ready bool) {
		t.Helper()
		var last string
		for {
			slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range slices.Items {
				if s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Endpoints) != 1 {
					continue
				}
				e := s.Endpoints[0]
				last = s.String()
				if len(e.Addresses) == 1 && e.Addresses[0] == "10.200.1.7" &&
					e.NodeName != nil && *e.NodeName == "eps-node1" && e.Zone != nil && *e.Zone == "zone-a" &&
					e.Conditions.Ready != nil && *e.Conditions.Ready == ready &&
					len(s.Ports) == 1 && s.Ports[0].Port != nil && *s.Ports[0].Port == 8080 {
					return
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("no EndpointSlice with 10.200.1.7 on eps-node1 in zone-a, ready=%v, port 8080; last seen: %s", ready, last)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitEndpoint(true)
	if err := MarkPodNotReady(ctx, cs, ns, "web-1"); err != nil {
		t.Fatal(err)
	}
	waitEndpoint(false)
	if err := MarkPodReady(ctx, cs, ns, "web-1", netip.MustParseAddr("10.200.1.7")); err != nil {
		t.Fatal(err)
	}
	waitEndpoint(true)

	// A pod not bound to a node is refused with a clear error.
	unbound := pod.DeepCopy()
	unbound.Name, unbound.Spec.NodeName = "unbound", ""
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, unbound, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := MarkPodReady(ctx, cs, ns, "unbound", netip.MustParseAddr("10.200.1.8")); err == nil || !strings.Contains(err.Error(), "spec.nodeName") {
		t.Errorf("MarkPodReady of an unbound pod: %v, want an error naming spec.nodeName", err)
	}
}

// proxy forwards TCP connections from listen (host:0) to target until the
// test ends, and returns its address.
func proxy(t *testing.T, listen, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in) }()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().String()
}

// TestKubeconfigFor reaches the API server through a proxy on another
// address, as the lab's agents do: the kubeconfig verifies when the
// address is one of the ExtraSANs, and does not otherwise.
func TestKubeconfigFor(t *testing.T) {
	c := controlPlane(t)
	target := "127.0.0.1:" + strconv.Itoa(c.Port())
	for _, tc := range []struct {
		addr string
		ok   bool
	}{{extraSAN.String(), true}, {"127.0.0.3", false}} {
		addr := proxy(t, tc.addr+":0", target)
		path := t.TempDir() + "/kubeconfig"
		if err := c.WriteKubeconfigFor(path, "https://"+addr); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v, want 0600", path, st.Mode().Perm(), err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.CoreV1().Namespaces().Get(testContext(t), "default", metav1.GetOptions{})
		switch {
		case tc.ok && err != nil:
			t.Errorf("through %s: %v", addr, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "certificate")):
			t.Errorf("through %s (not in the serving certificate): %v, want a certificate error", addr, err)
		}
	}
}

// TestAPIServerRestart stops only the API server and starts it again on
// the same port; the data survives (etcd kept running).
func TestAPIServerRestart(t *testing.T) {
	c := controlPlane(t)
	ctx := testContext(t)
	cs := clientset(t, c)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port, etcdPID, oldPID := c.Port(), c.PIDs()["etcd"], c.PIDs()["kube-apiserver"]
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if !gone(oldPID) {
		t.Errorf("kube-apiserver (pid %d) still runs after StopAPIServer", oldPID)
	}
	if _, ok := c.PIDs()["kube-apiserver"]; ok {
		t.Error("PIDs() still lists kube-apiserver")
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := cs.CoreV1().ConfigMaps("default").Get(short, "survivor", metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("the API answered while stopped")
	}
	if c.PIDs()["etcd"] != etcdPID {
		t.Error("etcd was restarted or stopped with the API server")
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port %d after restart, want %d", c.Port(), port)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("after restart: %v, %v", got, err)
	}
	newPID := c.PIDs()["kube-apiserver"]
	if err := c.StartAPIServer(ctx); err != nil || c.PIDs()["kube-apiserver"] != newPID {
		t.Errorf("StartAPIServer on a running API server: %v, pid %d -> %d", err, newPID, c.PIDs()["kube-apiserver"])
	}
}

// TestSecondControlPlane starts another, detached control plane without
// controllers (Pods are refused: no default ServiceAccount), finds it again
// with Open (as the lab does) and stops it through that handle; Stop is idempotent and leaves no
// process behind.
func TestSecondControlPlane(t *testing.T) {
	controlPlane(t) // the binaries
	ctx := testContext(t)
	dir := t.TempDir()
	c, err := Start(ctx, Options{Dir: dir, NoControllers: true, Detached: true, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	t.Logf("start to ready without controllers: %v", c.Timings())
	pids := c.PIDs()
	if len(pids) != 2 || pids["etcd"] == 0 || pids["kube-apiserver"] == 0 {
		t.Fatalf("PIDs() = %v, want etcd and kube-apiserver only", pids)
	}
	for name, pid := range pids {
		// Detached: each in its own session, away from the test's.
		if sid, err := unix.Getsid(pid); err != nil || sid != pid {
			t.Errorf("%s (pid %d): session %d, %v, want its own", name, pid, sid, err)
		}
	}
	if shared.cp != nil && c.Port() == shared.cp.Port() {
		t.Fatal("two control planes on one port")
	}
	cs := clientset(t, c)
	// The API server creates the kubernetes Service shortly after it is ready.
	for {
		svc, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err == nil {
			if svc.Spec.ClusterIP != "10.97.0.1" {
				t.Errorf("kubernetes Service cluster IP %s, want 10.97.0.1 (Options.ServiceCIDRs)", svc.Spec.ClusterIP)
			}
			break
		}
		if !apierrors.IsNotFound(err) || ctx.Err() != nil {
			t.Fatalf("kubernetes Service: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err == nil || !apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "serviceaccount") {
		t.Errorf("creating a pod without controllers: %v, want a refusal naming the service account", err)
	}

	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.URL() != c.URL() || o.CAFile() != c.CAFile() {
		t.Errorf("Open: URL %s CA %s, want %s %s", o.URL(), o.CAFile(), c.URL(), c.CAFile())
	}
	if _, err := clientset(t, o).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("through the opened handle: %v", err)
	}
	if err := o.Stop(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		if !gone(pid) {
			t.Errorf("%s (pid %d) still runs after Stop", name, pid)
		}
	}
	if err := o.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop of the original handle after the processes are gone: %v", err)
	}
	if len(c.PIDs()) != 0 {
		t.Errorf("PIDs() after Stop = %v", c.PIDs())
	}
	if err := c.StartAPIServer(ctx); err == nil {
		t.Error("StartAPIServer after Stop succeeded")
	}
}
