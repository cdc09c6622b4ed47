package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/lumen-net/lumen/internal/api"
)

// config is the agent's configuration: flags, or the same keys in a YAML file.
type config struct {
	NodeName            string   `json:"node-name"`
	StateDir            string   `json:"state-dir"`
	KVStore             string   `json:"kvstore"`
	IPv4PodCIDR         string   `json:"ipv4-pod-cidr"`
	IPv6PodCIDR         string   `json:"ipv6-pod-cidr"`
	Routing             string   `json:"routing"`
	Devices             []string `json:"devices"`
	Zone                string   `json:"zone"`
	PrometheusServeAddr string   `json:"prometheus-serve-addr"`
	TraceLevel          string   `json:"trace-level"`
	PolicyAuditMode     bool     `json:"policy-audit-mode"`
	PolicyMapMaxEntries int      `json:"policy-map-max-entries"`
	KubeAPIServerIPs    []string `json:"kube-apiserver-ips"`
	NodeLabels          []string `json:"node-labels"`
	SocketLBCgroup      string   `json:"socket-lb-cgroup"`
	SockHostnsOnly      bool     `json:"bpf-lb-sock-hostns-only"`
	LBAlgorithm         string   `json:"bpf-lb-algorithm"`
	LBAcceleration      string   `json:"bpf-lb-acceleration"`
	LBMode              string   `json:"bpf-lb-mode"`
	MaglevTableSize     uint32   `json:"bpf-lb-maglev-table-size"`
	MaglevSeed          string   `json:"bpf-lb-maglev-hash-seed"`
	LogLevel            string   `json:"log-level"`
	// enable-hubble, hubble-*: flow observability, see hubble.go.
	hubbleConfig
	// bgp-*, enable-bgp-control-plane: the BGP speaker, see bgp.go.
	bgpConfig
	// k8s-kubeconfig-path and friends: Kubernetes mode, see k8s.go.
	k8sConfig

	v4, v6     netip.Prefix
	level      slog.Level
	apiServer  []netip.Addr
	nodeLabels map[string]string
}

func parseConfig(args []string) (*config, error) {
	c := &config{StateDir: api.DefaultStateDir, Routing: "native", TraceLevel: "control", LogLevel: "info", PolicyMapMaxEntries: 16384,
		LBAlgorithm: "random", LBAcceleration: "disabled", LBMode: "snat", MaglevTableSize: 16381, MaglevSeed: "JLfvgnHc2kaSUFaI"}
	c.hubbleConfig = defaultHubbleConfig()
	// The file sets the defaults; flags given on the command line win.
	if file := configFileArg(args); file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		if err := yaml.UnmarshalStrict(b, c); err != nil {
			return nil, fmt.Errorf("--config %s: %w", file, err)
		}
	}
	fs := flag.NewFlagSet("lumen-agent", flag.ContinueOnError)
	var tunnel string
	devices := strings.Join(c.Devices, ",")
	apiServers := strings.Join(c.KubeAPIServerIPs, ",")
	nodeLabels := strings.Join(c.NodeLabels, ",")
	fs.String("config", "", "YAML file with the same keys as the flags (flags win)")
	fs.String("config-dir", "", "directory with one file per key (a mounted ConfigMap, as Cilium's); flags win")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "name of this node (default: hostname)")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory for the API socket, bpffs and state files")
	fs.StringVar(&c.KVStore, "kvstore", c.KVStore, "etcd endpoint (unix:///path or http://host:port); empty: single node")
	fs.StringVar(&c.IPv4PodCIDR, "ipv4-pod-cidr", c.IPv4PodCIDR, "this node's IPv4 pod CIDR")
	fs.StringVar(&c.IPv6PodCIDR, "ipv6-pod-cidr", c.IPv6PodCIDR, "this node's IPv6 pod CIDR")
	fs.StringVar(&c.Routing, "routing", c.Routing, "routing between nodes: native or vxlan")
	fs.StringVar(&tunnel, "tunnel", "", "vxlan: same as --routing=vxlan; disabled: --routing=native")
	fs.StringVar(&devices, "devices", devices, "comma-separated devices (or prefixes like eth+) instead of detection")
	fs.StringVar(&c.Zone, "zone", c.Zone, "topology zone of this node")
	fs.StringVar(&c.PrometheusServeAddr, "prometheus-serve-addr", c.PrometheusServeAddr, "also serve /metrics on this TCP address")
	fs.StringVar(&c.TraceLevel, "trace-level", c.TraceLevel, "datapath trace events: none, control or all")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.BoolVar(&c.PolicyAuditMode, "policy-audit-mode", c.PolicyAuditMode, "report policy denials instead of dropping (also for the host firewall)")
	fs.IntVar(&c.PolicyMapMaxEntries, "policy-map-max-entries", c.PolicyMapMaxEntries, "policy map entries per endpoint; an endpoint needing more denies all its traffic")
	fs.StringVar(&c.SocketLBCgroup, "socket-lb-cgroup", c.SocketLBCgroup, "cgroup v2 directory to attach socket load balancing to (e.g. the hierarchy's root); empty: per-packet load balancing only")
	fs.BoolVar(&c.SockHostnsOnly, "bpf-lb-sock-hostns-only", c.SockHostnsOnly, "socket load balancing only for the host namespace; pods use per-packet load balancing (for sidecar proxies)")
	fs.StringVar(&c.LBAlgorithm, "bpf-lb-algorithm", c.LBAlgorithm, "backend selection: random or maglev")
	fs.StringVar(&c.LBAcceleration, "bpf-lb-acceleration", c.LBAcceleration, "XDP acceleration of NodePort/LoadBalancer traffic on every device: disabled or native")
	fs.StringVar(&c.LBMode, "bpf-lb-mode", c.LBMode, "NodePort/LoadBalancer traffic from outside to backends on other nodes: snat (replies return through this node) or dsr (direct server return; needs --routing=native)")
	fs.Func("bpf-lb-maglev-table-size", "entries of each Maglev table (a prime: 251 ... 131071; default 16381)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		c.MaglevTableSize = uint32(n)
		return err
	})
	fs.StringVar(&c.MaglevSeed, "bpf-lb-maglev-hash-seed", c.MaglevSeed, "Maglev hash seed: the same on every node")
	fs.StringVar(&nodeLabels, "node-labels", nodeLabels, "comma-separated key=value labels of this node (matched by nodeSelector)")
	fs.StringVar(&apiServers, "kube-apiserver-ips", apiServers, "comma-separated addresses of the Kubernetes API server (the kube-apiserver entity) in standalone mode")
	c.hubbleConfig.flags(fs)
	c.bgpConfig.flags(fs)
	c.k8sConfig.flags(fs)
	if dir := configDirArg(args); dir != "" {
		if err := applyConfigDir(fs, dir); err != nil {
			return nil, err
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.Devices = nil
	if devices != "" {
		c.Devices = strings.Split(devices, ",")
	}
	c.NodeLabels = nil
	if nodeLabels != "" {
		c.NodeLabels = strings.Split(nodeLabels, ",")
	}
	c.KubeAPIServerIPs = nil
	if apiServers != "" {
		c.KubeAPIServerIPs = strings.Split(apiServers, ",")
	}
	switch tunnel {
	case "":
	case "vxlan":
		c.Routing = "vxlan"
	case "disabled":
		c.Routing = "native"
	default:
		return nil, fmt.Errorf("--tunnel: invalid value %q: want vxlan or disabled (geneve is not available in this build)", tunnel)
	}
	return c, c.validate()
}

// configFileArg finds --config in args before the flags are parsed.
func configFileArg(args []string) string {
	for i, a := range args {
		for _, p := range []string{"--config=", "-config="} {
			if strings.HasPrefix(a, p) {
				return strings.TrimPrefix(a, p)
			}
		}
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// maglevSizes are the table sizes Cilium accepts: primes, each a little
// below a power of two.
var maglevSizes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

func (c *config) validate() error {
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node-name: not set and no hostname: %w", err)
		}
		c.NodeName = h
	}
	if c.Routing != "native" && c.Routing != "vxlan" {
		return fmt.Errorf("routing: invalid value %q: want native or vxlan", c.Routing)
	}
	var err error
	if c.IPv4PodCIDR != "" {
		if c.v4, err = netip.ParsePrefix(c.IPv4PodCIDR); err != nil || !c.v4.Addr().Is4() {
			return fmt.Errorf("ipv4-pod-cidr: invalid value %q: want an IPv4 CIDR", c.IPv4PodCIDR)
		}
	}
	if c.IPv6PodCIDR != "" {
		if c.v6, err = netip.ParsePrefix(c.IPv6PodCIDR); err != nil || !c.v6.Addr().Is6() {
			return fmt.Errorf("ipv6-pod-cidr: invalid value %q: want an IPv6 CIDR", c.IPv6PodCIDR)
		}
	}
	if !c.v4.IsValid() && !c.v6.IsValid() && c.K8sKubeconfig == "" {
		// In Kubernetes mode lumen-operator allocates them (CiliumNode).
		return errors.New("ipv4-pod-cidr, ipv6-pod-cidr: at least one pod CIDR is required")
	}
	if err := c.k8sConfig.validate(c.KVStore != ""); err != nil {
		return err
	}
	for _, s := range c.KubeAPIServerIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("kube-apiserver-ips: invalid value %q: not an IP address", s)
		}
		c.apiServer = append(c.apiServer, a)
	}
	c.nodeLabels = map[string]string{}
	for _, kv := range c.NodeLabels {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return fmt.Errorf("node-labels: invalid value %q: want key=value", kv)
		}
		c.nodeLabels[k] = v
	}
	switch c.LBAcceleration {
	case "disabled", "native":
	default:
		return fmt.Errorf("bpf-lb-acceleration: invalid value %q: want disabled or native", c.LBAcceleration)
	}
	switch c.LBMode {
	case "snat":
	case "dsr":
		// As Cilium 1.11: the option carrying the frontend needs the
		// backend's node to see the packet as sent, not encapsulated.
		if c.Routing != "native" {
			return fmt.Errorf("bpf-lb-mode: dsr needs --routing=native, got routing %q (use --bpf-lb-mode=snat with a tunnel)", c.Routing)
		}
	default:
		return fmt.Errorf("bpf-lb-mode: invalid value %q: want snat or dsr", c.LBMode)
	}
	switch c.LBAlgorithm {
	case "random", "maglev":
	default:
		return fmt.Errorf("bpf-lb-algorithm: invalid value %q: want random or maglev", c.LBAlgorithm)
	}
	if !slices.Contains(maglevSizes, c.MaglevTableSize) {
		return fmt.Errorf("bpf-lb-maglev-table-size: invalid value %d: want one of %v", c.MaglevTableSize, maglevSizes)
	}
	if c.MaglevSeed == "" {
		return errors.New("bpf-lb-maglev-hash-seed: must not be empty")
	}
	if err := c.bgpConfig.validate(c.KVStore != "" || c.K8sKubeconfig != ""); err != nil {
		return err
	}
	if err := c.hubbleConfig.validate(c.StateDir); err != nil {
		return err
	}
	if c.PolicyMapMaxEntries < 16 || c.PolicyMapMaxEntries > 1<<20 {
		return fmt.Errorf("policy-map-max-entries: invalid value %d: want 16 to %d", c.PolicyMapMaxEntries, 1<<20)
	}
	switch c.TraceLevel {
	case "none", "control", "all":
	default:
		return fmt.Errorf("trace-level: invalid value %q: want none, control or all", c.TraceLevel)
	}
	if err := c.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("log-level: invalid value %q", c.LogLevel)
	}
	return nil
}
