// Package realnode tests Lumen installed by its Helm chart on real
// Kubernetes nodes: kubelet + containerd + runc per node network namespace
// (hack/realnode.sh), pods from locally built images, driven with kubectl.
package realnode

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

var root = func() string { d, _ := filepath.Abs("../.."); return d }()

type lab struct {
	t    *testing.T
	name string
}

func script(lab string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(root, "hack/realnode.sh"), args...)
	cmd.Env = append(os.Environ(), "LAB="+lab, "NODES=2")
	cmd.Dir = root
	return cmd
}

// requireTools skips (fails in CI) without what the lab needs.
func requireTools(t *testing.T) {
	testutil.RequirePrivileged(t)
	out, _ := exec.Command(filepath.Join(root, "hack/build-k8s.sh"), "--bin-dir").Output()
	kbin := strings.TrimSpace(string(out))
	for _, p := range []string{kbin + "/kubelet", kbin + "/kube-scheduler", kbin + "/kube-apiserver", kbin + "/agnhost",
		root + "/bin/images/lumen.tar", root + "/bin/images/agnhost.tar", root + "/bin/images/coredns.tar", "/usr/bin/containerd", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(p); err != nil {
			testutil.Skip(t, fmt.Sprintf("%v (hack/build-k8s.sh, hack/build-coredns.sh, make image, hack/install-deps.sh)", err))
		}
	}
	if _, err := exec.Command(filepath.Join(root, "hack/build-helm.sh")).Output(); err != nil {
		testutil.Skip(t, "helm CLI: "+err.Error())
	}
}

func up(t *testing.T) *lab {
	requireTools(t)
	l := &lab{t: t, name: "t" + testutil.Suffix()}
	t.Cleanup(func() {
		if t.Failed() {
			keep, _ := os.MkdirTemp("", "lumen-realnode-logs-")
			exec.Command("cp", "-r", "/tmp/lumen-rn-"+l.name+"/logs", "/tmp/lumen-rn-"+l.name+"/nodes", keep).Run()
			t.Logf("lab logs kept in %s", keep)
		}
		if out, err := script(l.name, "down").CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		// nothing left: namespaces, state, cgroups
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "lrn-"+l.name+"-") {
			t.Errorf("lab down left namespaces:\n%s", out)
		}
		if _, err := os.Stat("/tmp/lumen-rn-" + l.name); err == nil {
			t.Errorf("lab down left /tmp/lumen-rn-%s", l.name)
		}
		if m, _ := filepath.Glob("/sys/fs/cgroup/*/lumen-rn-" + l.name + "-*"); len(m) > 0 {
			t.Errorf("lab down left cgroups %v", m)
		}
	})
	cmd := script(l.name, "up")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("lab up: %v\n%s", err, out.String())
	}
	t.Logf("lab up in %v:\n%s", time.Since(start).Round(time.Second), out.String())
	return l
}

func (l *lab) kubectl(args ...string) (string, error) {
	cmd := script(l.name, append([]string{"kubectl"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (l *lab) must(args ...string) string {
	l.t.Helper()
	out, err := l.kubectl(args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

func (l *lab) apply(manifest string) {
	l.t.Helper()
	cmd := script(l.name, "kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// eventually retries f for up to d (a generous bound, not a timing assert).
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Second) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
}

const workload = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.66.1
        imagePullPolicy: Never
        args: [netexec, --http-port=8080]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: n1
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.66.1, imagePullPolicy: Never, args: [pause]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  nodeName: n2
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.66.1, imagePullPolicy: Never, args: [pause]}
`

const policy = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
`

// connect runs agnhost connect in pod to addr: nil when TCP connects.
func (l *lab) connect(pod, addr string) error {
	_, err := l.kubectl("exec", pod, "--", "/agnhost", "connect", "--timeout=3s", addr)
	return err
}

// TestRealNodes is the "done when": Lumen installed by its chart on
// two real kubelets; pods on both nodes reach each other and a Service, also
// by its DNS name (CoreDNS);
// kubectl exec/logs work; a DaemonSet rolling update of the agents keeps
// an established connection; a NetworkPolicy is enforced.
func TestRealNodes(t *testing.T) {
	l := up(t)
	l.apply(workload)
	l.must("rollout", "status", "deploy/web", "--timeout=300s")
	l.must("wait", "--for=condition=Ready", "pod/client", "pod/other", "--timeout=300s")
	webOnN2 := strings.TrimSpace(l.must("get", "pods", "-l", "app=web", "--field-selector=spec.nodeName=n2", "-o", "jsonpath={.items[0].status.podIP}"))
	webOnN1 := strings.TrimSpace(l.must("get", "pods", "-l", "app=web", "--field-selector=spec.nodeName=n1", "-o", "jsonpath={.items[0].status.podIP}"))
	svc := strings.TrimSpace(l.must("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"))
	if webOnN1 == "" || webOnN2 == "" || svc == "" {
		t.Fatalf("addresses: web on n1 %q, on n2 %q, service %q", webOnN1, webOnN2, svc)
	}
	t.Logf("web pods %s (n1) %s (n2), service %s", webOnN1, webOnN2, svc)

	// pod to pod on the same node and across nodes, and the Service (no kube-proxy)
	for _, c := range []struct{ pod, addr string }{
		{"client", webOnN1 + ":8080"}, {"client", webOnN2 + ":8080"}, {"client", svc + ":80"}, {"other", svc + ":80"},
	} {
		if err := l.connect(c.pod, c.addr); err != nil {
			t.Fatalf("%s -> %s: %v", c.pod, c.addr, err)
		}
	}
	// cluster DNS (CoreDNS as kube-dns, through Lumen's Services): the
	// Service by its full name and by the search path, from both nodes
	for _, c := range []struct{ pod, addr string }{
		{"client", "web.default.svc.cluster.local:80"}, {"other", "web.default.svc.cluster.local:80"}, {"client", "web:80"},
	} {
		eventually(t, time.Minute, c.pod+" -> "+c.addr, func() error { return l.connect(c.pod, c.addr) })
	}
	if out := l.must("exec", "other", "--", "dig", "+short", "+tcp", "web.default.svc.cluster.local"); strings.TrimSpace(out) != svc {
		t.Errorf("dig over TCP web.default.svc.cluster.local: %q, want %s", out, svc)
	}
	// kubectl exec with output, and logs
	if out := l.must("exec", "client", "--", "/agnhost", "dns-suffix"); out == "" {
		t.Error("kubectl exec printed nothing")
	}
	if out := l.must("logs", "deploy/web"); !strings.Contains(out, "8080") {
		t.Errorf("kubectl logs: %q", out)
	}

	t.Run("AgentRollingUpdateKeepsConnection", func(t *testing.T) { rollingUpdate(t, l, webOnN2) })
	t.Run("KubernetesE2ENetpol", func(t *testing.T) { e2eNetpol(t, l) })
	t.Run("KubernetesE2EServicesDNS", func(t *testing.T) { e2eServicesDNS(t, l) })

	// NetworkPolicy: only app=client reaches app=web
	l.apply(policy)
	eventually(t, 2*time.Minute, "other -> web denied", func() error {
		if err := l.connect("other", svc+":80"); err == nil {
			return fmt.Errorf("other reached web through the Service despite the policy")
		}
		if err := l.connect("other", webOnN1+":8080"); err == nil {
			return fmt.Errorf("other reached web on n1 despite the policy")
		}
		return nil
	})
	for _, addr := range []string{svc + ":80", webOnN1 + ":8080", webOnN2 + ":8080"} {
		if err := l.connect("client", addr); err != nil {
			t.Errorf("client -> %s (allowed): %v", addr, err)
		}
	}
}

// rollingUpdate keeps one HTTP keep-alive connection from node n1's
// network namespace to the web pod on n2 open while every agent is
// replaced (helm upgrade changing their configuration), sending a request
// every 200ms: every request must succeed on that same connection.
func rollingUpdate(t *testing.T, l *lab, target string) {
	ns, err := netns.GetFromName("lrn-" + l.name + "-n1")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		// a socket keeps the namespace it was made in
		var c net.Conn
		err := netnsutil.Do(ns, func() (err error) {
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	tr := &http.Transport{DialContext: dial, MaxIdleConns: 1, MaxConnsPerHost: 1, IdleConnTimeout: time.Hour}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()

	var mu sync.Mutex
	var sent, failed, newConns int
	var firstErr error
	var local string
	get := func() {
		var conn string
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conn, reused = i.Conn.LocalAddr().String(), i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+target+":8080/hostname", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, err = bytes.NewBuffer(nil).ReadFrom(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		sent++
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		if local == "" {
			local = conn
		} else if !reused || conn != local {
			newConns++
		}
	}
	get()
	if failed > 0 {
		t.Fatalf("first request to %s from n1: %v", target, firstErr)
	}
	before := l.must("-n", "kube-system", "get", "pods", "-l", "k8s-app=lumen", "-o", "jsonpath={.items[*].metadata.uid}")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				get()
			}
		}
	}()
	start := time.Now()
	// a chart upgrade changing the agents' configuration rolls them (the
	// ConfigMap's checksum is in the pod template)
	if out, err := script(l.name, "helm", "upgrade", "lumen", "deploy/helm/lumen", "-n", "kube-system", "--reuse-values",
		"--set", "hubble.eventBufferCapacity=8191", "--wait", "--timeout", "10m").CombinedOutput(); err != nil {
		close(stop)
		<-done
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	if _, err := l.kubectl("-n", "kube-system", "rollout", "status", "ds/lumen", "--timeout=600s"); err != nil {
		close(stop)
		<-done
		t.Fatal(err)
	}
	took := time.Since(start)
	time.Sleep(3 * time.Second) // a few requests through the new agents
	close(stop)
	<-done
	after := l.must("-n", "kube-system", "get", "pods", "-l", "k8s-app=lumen", "-o", "jsonpath={.items[*].metadata.uid}")
	for _, uid := range strings.Fields(before) {
		if strings.Contains(after, uid) {
			t.Errorf("agent pod %s was not replaced", uid)
		}
	}
	if v := l.must("-n", "kube-system", "get", "cm", "lumen-config", "-o", "jsonpath={.data.hubble-event-buffer-capacity}"); v != "8191" {
		t.Errorf("lumen-config after helm upgrade: hubble-event-buffer-capacity %q, want 8191", v)
	}
	if rev := l.must("-n", "kube-system", "get", "secrets", "-l", "owner=helm,name=lumen", "-o", "name"); strings.Count(rev, "\n") < 2 {
		t.Errorf("helm release revisions: %q, want 2", rev)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("helm upgrade rolling 2 agents in %v: %d requests on %s, %d failed, %d on a new connection", took.Round(time.Second), sent, local, failed, newConns)
	if failed > 0 || newConns > 0 {
		t.Fatalf("the established connection broke during the agents' rolling update: %d/%d failed (first: %v), %d new connections", failed, sent, firstErr, newConns)
	}
}

// e2eNetpolFocus is the subset of Kubernetes' NetworkPolicy e2e tests CI
// runs (all pass on Lumen; the whole Netpol suite takes too long for CI).
const e2eNetpolFocus = `\[sig-network\] Netpol NetworkPolicy between server and client should (support a 'default-deny-ingress'|` +
	`support a 'default-deny-all'|enforce policy to allow traffic from pods within server namespace based on PodSelector|` +
	`enforce policy to allow traffic only from a different namespace, based on NamespaceSelector|` +
	`enforce policy based on PodSelector with MatchExpressions|deny egress from all pods in a namespace|enforce policy based on Ports|` +
	`enforce ingress policy allowing any port traffic to a server on a specific protocol)`

// e2eServicesDNSFocus is the subset of Kubernetes' Services and DNS e2e
// tests CI runs (docs/conformance.md has the whole suites' results): DNS
// names of Services and pods, from pods and from hostNetwork pods (socket
// LB), a pod's own resolver settings, and Services load-balanced and left
// alone (labelled for another proxy or headless).
const e2eServicesDNSFocus = `\[sig-network\] (DNS (should provide DNS for the cluster|should provide DNS for services|` +
	`should provide DNS for pods for Hostname|should support configurable pod resolv.conf|` +
	`HostNetwork should resolve DNS of partial qualified names for services on hostNetwork pods)|` +
	`Services (should serve a basic endpoint from pods|should implement service.kubernetes.io/(service-proxy-name|headless)))`

// e2eNetpol runs Kubernetes' own e2e.test (hack/build-k8s.sh --e2e)
// against the lab.
func e2eNetpol(t *testing.T, l *lab) { e2eRun(t, l, e2eNetpolFocus, 8) }

func e2eServicesDNS(t *testing.T, l *lab) { e2eRun(t, l, e2eServicesDNSFocus, 8) }

// e2eRun runs the e2e tests focus selects; all want of them must pass.
func e2eRun(t *testing.T, l *lab, focus string, want int) {
	out, _ := exec.Command(filepath.Join(root, "hack/build-k8s.sh"), "--bin-dir").Output()
	if _, err := os.Stat(filepath.Join(strings.TrimSpace(string(out)), "e2e.test")); err != nil {
		testutil.Skip(t, "e2e.test missing: hack/build-k8s.sh --e2e")
	}
	cmd := exec.Command(filepath.Join(root, "hack/realnode-e2e.sh"), focus)
	cmd.Env = append(os.Environ(), "LAB="+l.name, "E2E_TIMEOUT=15m")
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	t.Logf("%s", b)
	if err != nil {
		t.Fatalf("e2e.test: %v", err)
	}
	if total := fmt.Sprintf("total: %d passed, 0 failed", want); !strings.Contains(string(b), total) {
		t.Fatalf("want %q", total)
	}
}
