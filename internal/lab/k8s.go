package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// Kubernetes lab (`lumen lab up --k8s`): a real control plane (etcd,
// kube-apiserver, kube-controller-manager) runs detached on the host's
// loopback; agents in the node namespaces reach it through `lumen lab
// apiproxy`, which listens on the underlay at APIServerIPv4:6443 and
// forwards to the loopback port. Nodes are registered as Nodes and pods are
// created as Pods and marked Ready with their addresses as a kubelet would,
// so the real EndpointSlice controller produces EndpointSlices.

// OperatorBinary is lumen-operator, started when present next to the agent.
const OperatorBinary = "lumen-operator"

// APIServerIPv4 is the API server's address on the underlay.
var APIServerIPv4 = netip.MustParsePrefix("10.99.0.254/24")

// APIServerPort is the proxy's port on the underlay.
const APIServerPort = 6443

// K8sOptions configure the Kubernetes part of a lab.
type K8sOptions struct {
	// EndpointSlices runs lumen-operator's CiliumEndpointSlice mode and the
	// agents follow slices instead of every CiliumEndpoint.
	EndpointSlices bool
	// KVStoreIdentities keeps identities, endpoints and nodes in the lab's
	// etcd (identity-allocation-mode=kvstore) instead of custom resources.
	KVStoreIdentities bool
}

// K8sState is the Kubernetes part of a running lab.
type K8sState struct {
	Dir             string `json:"dir"`             // control plane state (controlplane.Open)
	Kubeconfig      string `json:"kubeconfig"`      // for the host: kubectl, tests
	AgentKubeconfig string `json:"agentKubeconfig"` // through the proxy, for the nodes
	Server          string `json:"server"`          // the proxy's URL
	Proxy           *Proc  `json:"proxy,omitempty"`
	Operator        *Proc  `json:"operator,omitempty"`
	K8sOptions
}

// K8sDir is where a lab keeps its control plane.
func K8sDir(lab string) string { return filepath.Join(labpath.Dir(lab), "k8s") }

// startKubernetes brings up the control plane, the proxy, the operator and
// the cluster's Nodes.
func startKubernetes(ctx context.Context, st *State, t *Topology, opts K8sOptions, log *slog.Logger) error {
	bin, err := controlplane.BinDir()
	if err != nil {
		return err
	}
	ks := &K8sState{Dir: K8sDir(st.Name), K8sOptions: opts,
		Server: "https://" + net.JoinHostPort(APIServerIPv4.Addr().String(), fmt.Sprint(APIServerPort))}
	ks.Kubeconfig = filepath.Join(ks.Dir, "admin.kubeconfig")
	ks.AgentKubeconfig = filepath.Join(ks.Dir, "agent.kubeconfig")
	st.K8s = ks
	if err := st.save(); err != nil {
		return err
	}
	if err := addUnderlayAddr(labpath.UnderlayNS(st.Name), APIServerIPv4); err != nil {
		return err
	}
	log.Info("starting the Kubernetes control plane", "dir", ks.Dir)
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Dir: ks.Dir, BinDir: bin, Detached: true, ExtraSANs: []netip.Addr{APIServerIPv4.Addr()}, Log: log,
	})
	if err != nil {
		return err
	}
	log.Info("control plane ready", "timings", cp.Timings().String())
	if err := controlplane.ApplyCRDs(ctx, cp.RESTConfig(), log); err != nil {
		return err
	}
	if err := cp.WriteKubeconfigFor(ks.AgentKubeconfig, ks.Server); err != nil {
		return err
	}
	args := []string{st.Lumen, "--lab", st.Name, "lab", "apiproxy", "--netns", labpath.UnderlayNS(st.Name),
		"--listen", net.JoinHostPort(APIServerIPv4.Addr().String(), fmt.Sprint(APIServerPort)),
		"--target", fmt.Sprintf("127.0.0.1:%d", cp.Port())}
	if ks.Proxy, err = StartDetached("", filepath.Join(labpath.LogDir(st.Name), "apiproxy.log"), args); err != nil {
		return fmt.Errorf("starting the API server proxy: %w", err)
	}
	if err := st.save(); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, ks.Proxy, "the API server proxy", func(context.Context) error {
		return InNamedNS(labpath.UnderlayNS(st.Name), func() error {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(ks.Server, "https://"), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	}); err != nil {
		return err
	}
	if op := filepath.Join(st.BinDir, OperatorBinary); checkExecutable(op) == nil {
		args := []string{op, "--kubeconfig", ks.Kubeconfig}
		if opts.EndpointSlices {
			args = append(args, "--enable-cilium-endpoint-slice")
		}
		if ks.Operator, err = StartDetached("", filepath.Join(labpath.LogDir(st.Name), "operator.log"), args); err != nil {
			return fmt.Errorf("starting lumen-operator: %w", err)
		}
		if err := st.save(); err != nil {
			return err
		}
	} else if opts.EndpointSlices {
		return fmt.Errorf("CiliumEndpointSlice mode needs %s in %s", OperatorBinary, st.BinDir)
	}
	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	for i, n := range t.Nodes {
		if err := controlplane.RegisterNode(ctx, cs, n.Name, n.Zone, NodeIPv4(i).Addr(), NodeIPv6(i).Addr()); err != nil {
			return err
		}
		// The lab's address plan fixes each node's pod CIDRs: record them in
		// its CiliumNode as lumen-operator would have allocated them; the
		// agents read them from there.
		if !opts.KVStoreIdentities {
			if err := presetPodCIDRs(ctx, dyn, n.Name, PodCIDRv4(i), PodCIDRv6(i)); err != nil {
				return err
			}
		}
	}
	nsSet := map[string]bool{}
	for _, p := range t.Pods {
		nsSet[p.Namespace] = true
	}
	for ns := range nsSet {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	return nil
}

// presetPodCIDRs creates node's CiliumNode with its pod CIDRs.
func presetPodCIDRs(ctx context.Context, dyn dynamic.Interface, node string, cidrs ...netip.Prefix) error {
	var list []any
	for _, c := range cidrs {
		list = append(list, c.String())
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": k8s.CiliumNodes.GroupVersion().String(), "kind": "CiliumNode",
		"metadata": map[string]any{"name": node},
		"spec":     map[string]any{"ipam": map[string]any{"podCIDRs": list}},
	}}
	_, err := dyn.Resource(k8s.CiliumNodes).Apply(ctx, node, u, metav1.ApplyOptions{FieldManager: "lumen-lab", Force: true})
	if err != nil {
		return fmt.Errorf("CiliumNode %s: %w", node, err)
	}
	return nil
}

// k8sAgentArgs replaces the agent's store flags for Kubernetes mode. With
// custom resources the pod CIDRs come from the CiliumNode.
func k8sAgentArgs(st *State, args []string) []string {
	ks := st.K8s
	out := make([]string, 0, len(args)+6)
	for i := 0; i < len(args); i++ {
		switch {
		case i+1 < len(args) && args[i] == "--kvstore":
			if ks.KVStoreIdentities {
				out = append(out, args[i], args[i+1])
			}
			i++
			continue
		case i+1 < len(args) && (args[i] == "--ipv4-pod-cidr" || args[i] == "--ipv6-pod-cidr") && !ks.KVStoreIdentities:
			i++
			continue
		}
		out = append(out, args[i])
	}
	out = append(out, "--k8s-kubeconfig-path", ks.AgentKubeconfig, "--kube-apiserver-ips", APIServerIPv4.Addr().String())
	if ks.EndpointSlices {
		out = append(out, "--enable-cilium-endpoint-slice")
	}
	if ks.KVStoreIdentities {
		out = append(out, "--identity-allocation-mode", "kvstore")
	}
	return out
}

// Kube returns a client for a Kubernetes lab.
func (st *State) Kube() (kubernetes.Interface, error) {
	if st.K8s == nil {
		return nil, fmt.Errorf("lab %q does not run Kubernetes (lab up --k8s)", st.Name)
	}
	cp, err := controlplane.Open(st.K8s.Dir, nil)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cp.RESTConfig())
}

// createPod creates a lab pod as a Pod bound to its node.
func createPod(ctx context.Context, cs kubernetes.Interface, pod *PodState) error {
	var ports []corev1.ContainerPort
	for _, p := range pod.Ports {
		ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: int32(p.Port), Protocol: corev1.Protocol(strings.ToUpper(p.Protocol))})
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels},
		Spec: corev1.PodSpec{
			NodeName:   pod.Node,
			Containers: []corev1.Container{{Name: "echo", Image: "lumen-lab-echo", Ports: ports}},
		},
	}
	_, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating Pod %s: %w", pod.FullName(), err)
	}
	return nil
}

// markPodReady reports the plugged-in pod Running and Ready with its IPs.
func markPodReady(ctx context.Context, cs kubernetes.Interface, pod *PodState) error {
	var ips []netip.Addr
	for _, s := range []string{pod.IPv4, pod.IPv6} {
		if a, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, a)
		}
	}
	return controlplane.MarkPodReady(ctx, cs, pod.Namespace, pod.Name, ips...)
}

// stopKubernetes stops what startKubernetes started.
func stopKubernetes(st *State, log *slog.Logger) error {
	if st == nil || st.K8s == nil {
		return nil
	}
	var errs []error
	for _, p := range []*Proc{st.K8s.Operator, st.K8s.Proxy} {
		if p.Alive() {
			if err := p.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	cp, err := controlplane.Open(st.K8s.Dir, log)
	if err == nil {
		errs = append(errs, cp.Stop())
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Debug("no control plane to stop", "err", err)
	}
	return errors.Join(errs...)
}

func addUnderlayAddr(nsName string, p netip.Prefix) error {
	h, err := nlHandle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	br, err := h.LinkByName(underlayBridge)
	if err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	addr, _ := netlink.ParseAddr(p.String())
	if err := h.AddrReplace(br, addr); err != nil {
		return fmt.Errorf("adding %s to the underlay bridge: %w", p, err)
	}
	return nil
}

// RunAPIProxy forwards TCP connections accepted in network namespace nsName
// on listen to target in the caller's namespace (`lumen lab apiproxy`), so
// agents inside the lab reach the API server on the host's loopback without
// the lab being routed anywhere.
func RunAPIProxy(ctx context.Context, nsName, listen, target string, log *slog.Logger) error {
	var ln net.Listener
	if err := InNamedNS(nsName, func() error {
		var err error
		ln, err = net.Listen("tcp", listen)
		return err
	}); err != nil {
		return fmt.Errorf("listening on %s in %s: %w", listen, nsName, err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	log.Info("API server proxy ready", "listen", listen, "netns", nsName, "target", target)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				log.Warn("API server unreachable", "target", target, "err", err)
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// Kubectl runs the control plane's kubectl against a Kubernetes lab.
func Kubectl(lab string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	st, err := LoadState(lab)
	if err != nil {
		return err
	}
	if st.K8s == nil {
		return fmt.Errorf("lab %q does not run Kubernetes (lab up --k8s)", lab)
	}
	bin, err := controlplane.BinDir()
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", st.K8s.Kubeconfig}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}
