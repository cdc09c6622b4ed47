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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

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
