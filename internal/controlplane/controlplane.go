// Package controlplane runs a real Kubernetes control plane (etcd,
// kube-apiserver and kube-controller-manager, built by hack/build-k8s.sh)
// on the host's loopback, for tests and the lab: certificates are made in
// Go, every process listens on a free 127.0.0.1 port and logs into the
// state directory, and only the processes started here are ever stopped.
// It also installs Lumen's CRDs (deploy/crds) and has the small helpers
// that stand in for kubelet (RegisterNode, MarkPodReady), so the
// EndpointSlice controller works without one.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configure Start.
type Options struct {
	// Dir holds the state: pki/ (certificates and keys), etcd/ (data),
	// logs/ (one file per process), the kubeconfigs and state.json.
	// Required. A Dir from an earlier run keeps its CA, service-account
	// keys and etcd data.
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kubectl; empty means BinDir().
	BinDir string
	// ExtraSANs are more IP addresses for the API server's serving
	// certificate, for clients that reach it through a proxy on another
	// address (see WriteKubeconfigFor).
	ExtraSANs []netip.Addr
	// ServiceCIDRs are the service cluster IP ranges, at most one per
	// family, primary first. Default 10.96.0.0/16 and fd00:10:96::/108
	// (Lumen's standalone defaults), so dual-stack Services work.
	ServiceCIDRs []netip.Prefix
	// NoControllers skips kube-controller-manager. Without it no
	// EndpointSlices are made and Pod creation is refused until a
	// ServiceAccount "default" exists in the Pod's namespace.
	NoControllers bool
	// Detached lets the processes outlive this program (the lab starts the
	// control plane from a command that exits; Open finds it again).
	// Otherwise they are killed when this program exits, so a killed test
	// binary leaves nothing behind. Either way they run in the program's
	// own network namespace, whatever namespace the calling thread is in.
	Detached bool
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
}

// DefaultServiceCIDRs are the service ranges used when Options.ServiceCIDRs
// is empty.
var DefaultServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}

// The controllers kube-controller-manager runs: EndpointSlices for Services
// with a selector (and mirrored from Endpoints), and the default
// ServiceAccount of every namespace, without which Pods are refused.
const controllers = "endpointslice-controller,endpointslice-mirroring-controller,serviceaccount-controller"

// Timings are how long each part took to become ready during Start.
type Timings struct {
	Certificates      time.Duration
	Etcd              time.Duration // started to /health
	APIServer         time.Duration // started to /readyz
	ControllerManager time.Duration // started to /healthz and the default ServiceAccount
	Total             time.Duration
}

func (t Timings) String() string {
	return fmt.Sprintf("total %v (certificates %v, etcd %v, kube-apiserver %v, kube-controller-manager %v)",
		t.Total.Round(time.Millisecond), t.Certificates.Round(time.Millisecond), t.Etcd.Round(time.Millisecond),
		t.APIServer.Round(time.Millisecond), t.ControllerManager.Round(time.Millisecond))
}

// ControlPlane is a running control plane. Its methods are safe for
// concurrent use.
type ControlPlane struct {
	dir    string
	binDir string
	pki    *pki
	log    *slog.Logger

	// PEM of the CA and the admin client credentials, for RESTConfig and
	// kubeconfigs.
	caPEM, adminCertPEM, adminKeyPEM []byte

	mu       sync.Mutex
	state    state
	detached bool
	stopped  bool
	timings  Timings
}

// state is what Open needs to find a running control plane again
// (<Dir>/state.json).
type state struct {
	Port       int   `json:"port"`
	EtcdPort   int   `json:"etcdPort"`
	KCMPort    int   `json:"controllerManagerPort,omitempty"`
	Etcd       *proc `json:"etcd"`
	APIServer  *proc `json:"apiserver"`
	Controller *proc `json:"controllerManager,omitempty"`
}

// Start starts etcd, kube-apiserver and (unless NoControllers)
// kube-controller-manager, and returns once the API server is ready and
// the controllers work (the default ServiceAccount exists). On error
// everything it started is stopped again. ctx bounds the start only; the
// processes run until Stop.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	t0 := time.Now()
	if opts.Dir == "" {
		return nil, errors.New("controlplane: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("controlplane: Options.Dir %q: %w", opts.Dir, err)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = BinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(binDir); err != nil {
		return nil, err
	}
	cidrs, err := serviceCIDRs(opts.ServiceCIDRs)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("controlplane: creating %s: %w", d, err)
		}
	}
	c := &ControlPlane{dir: dir, binDir: binDir, pki: newPKI(filepath.Join(dir, "pki")), log: log, detached: opts.Detached}

	// Serving certificate: loopback, the first address of every service
	// range (the "kubernetes" Service, as pods would use it) and the extra
	// addresses.
	sans := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	for _, p := range cidrs {
		sans = append(sans, p.Addr().Next())
	}
	sans = append(sans, opts.ExtraSANs...)
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := c.pki.generate(sans, dns); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := c.loadCredentials(); err != nil {
		return nil, err
	}
	c.timings.Certificates = time.Since(t0)

	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, cidrs); err != nil {
		return nil, err
	}
	if !opts.NoControllers {
		if err := c.startControllerManager(ctx); err != nil {
			return nil, err
		}
	}
	c.timings.Total = time.Since(t0)
	if err := c.saveState(); err != nil {
		return nil, err
	}
	log.Info("Kubernetes control plane ready", "url", c.URL(), "dir", dir, "timings", c.timings.String())
	return c, nil
}

func serviceCIDRs(in []netip.Prefix) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return DefaultServiceCIDRs, nil
	}
	if len(in) > 2 || (len(in) == 2 && in[0].Addr().Is4() == in[1].Addr().Is4()) {
		return nil, fmt.Errorf("controlplane: Options.ServiceCIDRs %v: at most one range per family", in)
	}
	out := make([]netip.Prefix, len(in))
	for i, p := range in {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("controlplane: Options.ServiceCIDRs[%d] %v: not a valid range", i, p)
		}
		out[i] = p.Masked()
	}
	return out, nil
}

func (c *ControlPlane) loadCredentials() error {
	var err error
	read := func(p string) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(p)
		return b
	}
	c.caPEM, c.adminCertPEM, c.adminKeyPEM = read(c.pki.caCert), read(c.pki.adminCert), read(c.pki.adminKey)
	if err != nil {
		return fmt.Errorf("controlplane: reading credentials: %w", err)
	}
	return nil
}

func (c *ControlPlane) logPath(name string) string { return filepath.Join(c.dir, "logs", name+".log") }

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

// URL is the API server's address, https://127.0.0.1:<Port>.
func (c *ControlPlane) URL() string { return "https://127.0.0.1:" + strconv.Itoa(c.Port()) }

// Port is the API server's port on 127.0.0.1; it stays the same across
// StopAPIServer and StartAPIServer.
func (c *ControlPlane) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.Port
}

// Dir is the state directory.
func (c *ControlPlane) Dir() string { return c.dir }

// BinDir is the directory of the binaries (kubectl among them).
func (c *ControlPlane) BinDir() string { return c.binDir }

// CAFile is the CA certificate that signed the API server's serving
// certificate and the client certificates.
func (c *ControlPlane) CAFile() string { return c.pki.caCert }

// Kubeconfig is the path of a kubeconfig for the admin (group
// system:masters) with the credentials embedded.
func (c *ControlPlane) Kubeconfig() string { return filepath.Join(c.dir, "admin.kubeconfig") }

// RESTConfig returns a new client configuration for the admin.
func (c *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: c.URL(),
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.caPEM, CertData: c.adminCertPEM, KeyData: c.adminKeyPEM,
		},
		QPS: 50, Burst: 100,
	}
}

// Timings returns how long Start took, per part.
func (c *ControlPlane) Timings() Timings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timings
}

// PIDs returns the process ids of the running processes by name ("etcd",
// "kube-apiserver", "kube-controller-manager").
func (c *ControlPlane) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, p := range []*proc{c.state.Etcd, c.state.APIServer, c.state.Controller} {
		if p != nil && !p.exited() {
			out[p.Name] = p.PID
		}
	}
	return out
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

// Stop stops the processes this control plane started (by PID: the
// controllers, the API server, then etcd) and waits until they are gone.
// The state directory is kept. Stop is idempotent.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	var errs []error
	for _, p := range []*proc{c.state.Controller, c.state.APIServer, c.state.Etcd} {
		if p != nil {
			grace := 15 * time.Second
			if p == c.state.APIServer {
				grace = apiServerGrace
			}
			if err := p.stop(grace); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		c.stopped = true
		c.log.Info("Kubernetes control plane stopped", "dir", c.dir)
	}
	return errors.Join(errs...)
}

func (c *ControlPlane) saveState() error {
	c.mu.Lock()
	b, err := json.MarshalIndent(c.state, "", "  ")
	c.mu.Unlock()
	if err != nil {
		return err
	}
	p := filepath.Join(c.dir, "state.json")
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return fmt.Errorf("controlplane: writing %s: %w", p, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("controlplane: writing %s: %w", p, err)
	}
	return nil
}

// Open finds the control plane a (detached) Start left running in dir,
// so another process can use it, restart its API server or Stop it. Stop
// then signals the recorded PIDs only if they still belong to the same
// processes (PID and start time).
func Open(dir string, log *slog.Logger) (*ControlPlane, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("controlplane: no control plane in %s: %w", dir, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &ControlPlane{dir: dir, pki: newPKI(filepath.Join(dir, "pki")), log: log, detached: true}
	if err := json.Unmarshal(b, &c.state); err != nil {
		return nil, fmt.Errorf("controlplane: %s: %w", filepath.Join(dir, "state.json"), err)
	}
	if c.state.APIServer == nil || c.state.Etcd == nil || len(c.state.APIServer.Args) == 0 {
		return nil, fmt.Errorf("controlplane: %s is incomplete", filepath.Join(dir, "state.json"))
	}
	c.binDir = filepath.Dir(c.state.APIServer.Args[0])
	if err := c.loadCredentials(); err != nil {
		return nil, err
	}
	return c, nil
}
