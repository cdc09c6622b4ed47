package controlplane

// Starting and waiting for the control plane's components: etcd, the API
// server and the controller manager.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// startWithRetry starts the process made by mk on fresh ports until it
// does not fail with "address already in use" (a free port can be taken
// between choosing and binding it).
func (c *ControlPlane) startWithRetry(ctx context.Context, mk func() (*proc, error), ready func(context.Context, *proc) error) (*proc, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := mk()
		if err != nil {
			return nil, err
		}
		if err := p.start(c.detached); err != nil {
			return nil, err
		}
		err = ready(ctx, p)
		if err == nil {
			return p, nil
		}
		_ = p.stop(5 * time.Second)
		if !strings.Contains(p.logTail(30), "address already in use") {
			return nil, err
		}
		lastErr = err
		c.log.Warn("port taken, retrying on another", "process", p.Name)
	}
	return nil, lastErr
}

func (c *ControlPlane) startEtcd(ctx context.Context) error {
	t := time.Now()
	var clientPort int
	mk := func() (*proc, error) {
		var err error
		if clientPort, err = freePort(); err != nil {
			return nil, err
		}
		peerPort, err := freePort()
		if err != nil {
			return nil, err
		}
		client, peer := "http://127.0.0.1:"+strconv.Itoa(clientPort), "http://127.0.0.1:"+strconv.Itoa(peerPort)
		return &proc{Name: "etcd", Log: c.logPath("etcd"), Args: []string{
			filepath.Join(c.binDir, "etcd"),
			"--name=lumen",
			"--data-dir=" + filepath.Join(c.dir, "etcd"),
			"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=lumen=" + peer,
			// A test and lab store: losing the last writes on a host crash is fine.
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		}}, nil
	}
	ready := func(ctx context.Context, p *proc) error {
		url := "http://127.0.0.1:" + strconv.Itoa(clientPort) + "/health"
		return c.waitHTTP(ctx, p, http.DefaultClient, url, func(body string) bool { return strings.Contains(body, `"health":"true"`) })
	}
	p, err := c.startWithRetry(ctx, mk, ready)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.state.Etcd, c.state.EtcdPort = p, clientPort
	c.mu.Unlock()
	c.timings.Etcd = time.Since(t)
	c.log.Debug("etcd ready", "port", clientPort, "took", c.timings.Etcd)
	return nil
}

func (c *ControlPlane) startAPIServer(ctx context.Context, cidrs []netip.Prefix) error {
	t := time.Now()
	ranges := make([]string, len(cidrs))
	for i, p := range cidrs {
		ranges[i] = p.String()
	}
	var port int
	mk := func() (*proc, error) {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
		return &proc{Name: "kube-apiserver", Log: c.logPath("kube-apiserver"), Args: []string{
			filepath.Join(c.binDir, "kube-apiserver"),
			"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.state.EtcdPort),
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--advertise-address=127.0.0.1",
			"--cert-dir=" + filepath.Join(c.dir, "apiserver"),
			"--tls-cert-file=" + c.pki.servingCert,
			"--tls-private-key-file=" + c.pki.servingKey,
			"--client-ca-file=" + c.pki.caCert,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.pki.saPub,
			"--service-account-signing-key-file=" + c.pki.saKey,
			"--service-cluster-ip-range=" + strings.Join(ranges, ","),
			// No kubelet answers on 127.0.0.1: do not keep the kubernetes
			// Service's endpoints pointing at this address.
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		}}, nil
	}
	p, err := c.startWithRetry(ctx, mk, func(ctx context.Context, p *proc) error {
		c.mu.Lock()
		c.state.Port = port
		c.mu.Unlock()
		return c.waitAPIServer(ctx, p)
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.state.APIServer = p
	c.mu.Unlock()
	if err := c.writeKubeconfigs(); err != nil {
		return err
	}
	c.timings.APIServer = time.Since(t)
	c.log.Debug("kube-apiserver ready", "url", c.URL(), "took", c.timings.APIServer)
	return nil
}

func (c *ControlPlane) waitAPIServer(ctx context.Context, p *proc) error {
	client, err := c.httpClient()
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, p, client, c.URL()+"/readyz", func(body string) bool { return strings.TrimSpace(body) == "ok" })
}

func (c *ControlPlane) startControllerManager(ctx context.Context) error {
	t := time.Now()
	kubeconfig := filepath.Join(c.dir, "controller-manager.kubeconfig")
	var port int
	mk := func() (*proc, error) {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
		return &proc{Name: "kube-controller-manager", Log: c.logPath("kube-controller-manager"), Args: []string{
			filepath.Join(c.binDir, "kube-controller-manager"),
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--tls-cert-file=" + c.pki.kcmServingCert,
			"--tls-private-key-file=" + c.pki.kcmServingKey,
			"--controllers=" + controllers,
			"--leader-elect=false",
			// Each controller gets its own ServiceAccount and the bootstrap
			// RBAC role made for it, as in a real cluster.
			"--use-service-account-credentials=true",
		}}, nil
	}
	ready := func(ctx context.Context, p *proc) error {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.caPEM)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		return c.waitHTTP(ctx, p, client, "https://127.0.0.1:"+strconv.Itoa(port)+"/healthz", func(body string) bool { return strings.TrimSpace(body) == "ok" })
	}
	p, err := c.startWithRetry(ctx, mk, ready)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.state.Controller, c.state.KCMPort = p, port
	c.mu.Unlock()
	// Healthy is not enough: Pods are refused until the ServiceAccount
	// controller has made the namespace's default ServiceAccount.
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return fmt.Errorf("controlplane: client: %w", err)
	}
	if err := c.poll(ctx, p, "the default ServiceAccount in namespace default", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	}); err != nil {
		return err
	}
	c.timings.ControllerManager = time.Since(t)
	c.log.Debug("kube-controller-manager ready", "took", c.timings.ControllerManager)
	return nil
}

// startTimeout bounds each wait when ctx has no deadline.
const startTimeout = 2 * time.Minute

// poll calls check every 100 ms until it returns true, the process exits
// or ctx (or startTimeout) ends; errors name what was awaited and carry the
// end of the process's log.
func (c *ControlPlane) poll(ctx context.Context, p *proc, what string, check func(context.Context) (bool, error)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if p.exited() {
			return fmt.Errorf("controlplane: %s exited before %s was ready (log %s):\n%s", p.Name, what, p.Log, p.logTail(20))
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("controlplane: waiting for %s: %v", what, ctx.Err())
			if last != nil {
				msg += fmt.Sprintf(" (last error: %v)", last)
			}
			return fmt.Errorf("%s; end of %s:\n%s", msg, p.Log, p.logTail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *ControlPlane) waitHTTP(ctx context.Context, p *proc, client *http.Client, url string, ok func(body string) bool) error {
	return c.poll(ctx, p, url, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || !ok(string(body)) {
			return false, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return true, nil
	})
}

// httpClient talks to the API server as the admin.
func (c *ControlPlane) httpClient() (*http.Client, error) {
	cert, err := tls.X509KeyPair(c.adminCertPEM, c.adminKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("controlplane: admin credentials: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// apiServerGrace is how long kube-apiserver may take to shut down
// gracefully: with clients watching it otherwise lingers for ~15 s after
// it has stopped listening.
const apiServerGrace = 5 * time.Second

// StopAPIServer stops kube-apiserver only (SIGTERM, SIGKILL after 5 s;
// etcd and the controllers keep running), for tests of clients that must
// survive the API going away.
func (c *ControlPlane) StopAPIServer() error {
	c.mu.Lock()
	p := c.state.APIServer
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.stop(apiServerGrace); err != nil {
		return fmt.Errorf("controlplane: stopping kube-apiserver: %w", err)
	}
	c.log.Info("kube-apiserver stopped", "pid", p.PID)
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same port and with the same flags, and waits until it is ready. It does
// nothing when the API server runs.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	old := c.state.APIServer
	stopped := c.stopped
	c.mu.Unlock()
	switch {
	case stopped:
		return errors.New("controlplane: StartAPIServer after Stop")
	case old == nil:
		return errors.New("controlplane: no kube-apiserver to restart")
	case !old.exited():
		return nil
	}
	p := &proc{Name: old.Name, Args: old.Args, Log: old.Log}
	if err := p.start(c.detached); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if err := c.waitAPIServer(ctx, p); err != nil {
		_ = p.stop(5 * time.Second)
		return err
	}
	c.mu.Lock()
	c.state.APIServer = p
	c.mu.Unlock()
	c.log.Info("kube-apiserver started again", "pid", p.PID, "url", c.URL())
	return c.saveState()
}
