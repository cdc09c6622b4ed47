package lab

// Running the lab's BGP routers (BIRD or FRR) in their namespaces.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

func birdBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", name)
}

func frrBinary(name string) string {
	if name == "vtysh" {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		return "/usr/bin/vtysh"
	}
	return filepath.Join("/usr/lib/frr", name)
}

// routerBinaries are the programs a router kind needs, with the Debian
// package providing them.
func routerBinaries(kind string) ([]string, string) {
	if kind == RouterFRR {
		return []string{frrBinary("zebra"), frrBinary("bgpd"), frrBinary("vtysh")}, "frr"
	}
	return []string{birdBinary("bird"), birdBinary("birdc")}, "bird2"
}

// CheckRouterBinaries reports a missing BIRD or FRR program.
func CheckRouterBinaries(kind string) error {
	bins, pkg := routerBinaries(kind)
	for _, b := range bins {
		if err := checkExecutable(b); err != nil {
			return fmt.Errorf("%s router: %w (apt-get install %s, or hack/install-deps.sh)", kind, err, pkg)
		}
	}
	return nil
}

// startRouters creates the routers' namespaces, starts BIRD or FRR in them
// and, unless agentArgs configure BGP, writes the agents' ConfigMap.
func startRouters(ctx context.Context, st *State, t *Topology, log *slog.Logger) error {
	if len(t.Routers) == 0 {
		return nil
	}
	for _, r := range t.Routers {
		if err := CheckRouterBinaries(r.Kind); err != nil {
			return err
		}
	}
	var rs []RouterState
	for i, r := range t.Routers {
		rs = append(rs, RouterState{
			Name: r.Name, Kind: r.Kind, ASN: r.ASN, NodeASN: r.NodeASN, NetNS: RouterNS(st.Name, r.Name),
			IPs: []string{RouterIPv4(i).String(), RouterIPv6(i).String()}, Dir: RouterDir(st.Name, r.Name),
		})
		rt := &rs[len(rs)-1]
		// Recorded before anything exists, so down finds a half-made one.
		if err := saveRouters(st.Name, rs); err != nil {
			return err
		}
		log.Info("creating router", "router", r.Name, "kind", r.Kind, "asn", r.ASN, "netns", rt.NetNS)
		if err := setupUnderlayNS(labpath.UnderlayNS(st.Name), rt.NetNS, routerPort(r.Name, i), []netip.Prefix{RouterIPv4(i), RouterIPv6(i)}); err != nil {
			return fmt.Errorf("router %s: %w", r.Name, err)
		}
		if err := startRouter(ctx, st, rt, func() error { return saveRouters(st.Name, rs) }); err != nil {
			return fmt.Errorf("router %s: %w", r.Name, err)
		}
	}
	if agentArgsConfigureBGP(st.AgentArgs) {
		return nil
	}
	if err := writeBGPConfig(BGPConfigFile(st.Name), rs); err != nil {
		return err
	}
	st.AgentArgs = append(st.AgentArgs, "--bgp-config-path", BGPConfigFile(st.Name), "--bgp-announce-pod-cidr", "--bgp-announce-lb-ip")
	return st.save()
}

// agentArgsConfigureBGP reports flags that leave BGP to the topology.
func agentArgsConfigureBGP(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "bgp-config-path" || name == "enable-bgp-control-plane" {
			return true
		}
	}
	return false
}

// writeBGPConfig writes the Cilium 1.11 ConfigMap peering every node with
// every router, with graceful restart.
func writeBGPConfig(path string, rs []RouterState) error {
	var b strings.Builder
	b.WriteString("# Written by `lumen lab up`: every node peers with every router of the lab.\n")
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bgp-config\n  namespace: kube-system\ndata:\n  config.yaml: |\n    peers:\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "      - peer-address: %s\n        peer-asn: %d\n        my-asn: %d\n        graceful-restart: true\n        restart-time: 120s\n",
			r.Addr(4), r.ASN, r.NodeASN)
	}
	b.WriteString("    address-pools:\n      - name: default\n        protocol: bgp\n        addresses: [\"0.0.0.0/0\", \"::/0\"]\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// routerPort names router i's bridge port in the underlay.
func routerPort(name string, i int) string {
	if n := "rt-" + name; len(n) <= 15 {
		return n
	}
	return fmt.Sprintf("router%d", i)
}

// startRouter writes the router's configuration, starts its daemons in its
// namespace (recording each through save) and waits until it answers.
func startRouter(ctx context.Context, st *State, r *RouterState, save func() error) error {
	// The parent stays traversable: FRR's daemons run as user frr.
	if err := os.MkdirAll(filepath.Dir(r.Dir), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(r.Dir), err)
	}
	if err := os.MkdirAll(r.Dir, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", r.Dir, err)
	}
	var nodes []netip.Addr
	for _, n := range st.Nodes {
		if len(n.NodeIPs) > 0 {
			if p, err := netip.ParsePrefix(n.NodeIPs[0]); err == nil {
				nodes = append(nodes, p.Addr())
			}
		}
	}
	logFile := func(d string) string { return filepath.Join(labpath.LogDir(st.Name), "router-"+r.Name+"-"+d+".log") }
	var cmds [][]string
	if r.Kind == RouterFRR {
		if err := writeFRRConfig(r, nodes); err != nil {
			return err
		}
		common := []string{"--vty_socket", r.Dir, "-z", filepath.Join(r.Dir, "zserv.api"), "-P", "0", "--log", "stdout"}
		cmds = [][]string{
			append([]string{frrBinary("zebra"), "-f", filepath.Join(r.Dir, "zebra.conf"), "-i", filepath.Join(r.Dir, "zebra.pid")}, common...),
			append([]string{frrBinary("bgpd"), "-f", filepath.Join(r.Dir, "bgpd.conf"), "-i", filepath.Join(r.Dir, "bgpd.pid")}, common...),
		}
	} else {
		conf := filepath.Join(r.Dir, "bird.conf")
		if err := os.WriteFile(conf, []byte(birdConfig(r, nodes)), 0o640); err != nil {
			return fmt.Errorf("writing %s: %w", conf, err)
		}
		// -f: in the foreground, so that the recorded pid is bird's.
		cmds = [][]string{{birdBinary("bird"), "-f", "-c", conf, "-s", filepath.Join(r.Dir, "bird.ctl"), "-P", filepath.Join(r.Dir, "bird.pid")}}
	}
	for _, argv := range cmds {
		p, err := StartDetached(r.NetNS, logFile(filepath.Base(argv[0])), argv)
		if err != nil {
			return err
		}
		r.Procs = append(r.Procs, p)
		if err := save(); err != nil {
			return err
		}
		if r.Kind == RouterFRR && filepath.Base(argv[0]) == "zebra" {
			// bgpd connects to zebra's socket when it starts.
			if err := waitFor(ctx, 30*time.Second, p, "zebra", func(context.Context) error {
				_, err := os.Stat(filepath.Join(r.Dir, "zserv.api"))
				return err
			}); err != nil {
				return err
			}
		}
	}
	probe := "show status"
	if r.Kind == RouterFRR {
		probe = "show bgp summary json"
	}
	return waitFor(ctx, 30*time.Second, r.Procs[len(r.Procs)-1], r.Kind+" of router "+r.Name, func(ctx context.Context) error {
		_, err := r.Run(ctx, probe)
		return err
	})
}

// birdConfig is BIRD 2's configuration: passive eBGP sessions with every
// node, both families on each, graceful restart (BIRD then keeps a
// restarting node's routes for the restart time the node announces), and
// the learnt routes exported to this namespace's kernel (ECMP merged).
func birdConfig(r *RouterState, nodes []netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `lumen lab up` for router %s.\nlog stderr all;\nrouter id %s;\n\n", r.Name, r.Addr(4))
	b.WriteString("protocol device { scan time 10; }\n\n")
	b.WriteString("protocol kernel kernel4 { ipv4 { import none; export all; }; merge paths on; }\n")
	b.WriteString("protocol kernel kernel6 { ipv6 { import none; export all; }; merge paths on; }\n\n")
	fmt.Fprintf(&b, "template bgp nodes {\n  local as %d;\n  passive on;\n  graceful restart on;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n\n", r.ASN)
	for i, n := range nodes {
		fmt.Fprintf(&b, "protocol bgp node%d from nodes { neighbor %s as %d; }\n", i+1, n, r.NodeASN)
	}
	return b.String()
}

// writeFRRConfig writes zebra's and bgpd's configuration, owned by the frr
// user the daemons switch to.
func writeFRRConfig(r *RouterState, nodes []netip.Addr) error {
	var b strings.Builder
	fmt.Fprintf(&b, "! Written by `lumen lab up` for router %s.\nhostname %s\nlog stdout informational\n!\n", r.Name, r.Name)
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n", r.ASN, r.Addr(4))
	fmt.Fprintf(&b, " neighbor NODES peer-group\n neighbor NODES remote-as %d\n neighbor NODES passive\n", r.NodeASN)
	for _, n := range nodes {
		fmt.Fprintf(&b, " neighbor %s peer-group NODES\n", n)
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  neighbor NODES activate\n  neighbor NODES route-map NONE out\n  maximum-paths 16\n exit-address-family\n", af)
	}
	b.WriteString("!\nroute-map NONE deny 10\n!\n")
	files := map[string]string{
		"zebra.conf": fmt.Sprintf("hostname %s\nlog stdout informational\n", r.Name),
		"bgpd.conf":  b.String(),
	}
	uid, gid, err := frrIDs()
	if err != nil {
		return err
	}
	for name, content := range files {
		p := filepath.Join(r.Dir, name)
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	if err := os.Chown(r.Dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", r.Dir, err)
	}
	return nil
}

func frrIDs() (int, int, error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("FRR runs as user frr: %w (apt-get install frr)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// stopRouters stops the routers' daemons (down deletes their namespaces).
func stopRouters(lab string, log *slog.Logger) error {
	rs, err := LoadRouters(lab)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		for _, p := range slices.Backward(r.Procs) {
			if !p.Alive() {
				continue
			}
			log.Debug("stopping", "pid", p.PID, "cmd", filepath.Base(p.Args[0]), "router", r.Name)
			if err := p.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
