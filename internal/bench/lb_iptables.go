package bench

// kube-proxy's iptables rules, the baseline of the load-balancing benchmark.

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/lab"
)

// IPTService is a service as kube-proxy renders it.
type IPTService struct {
	Name     string // "namespace/name:port"
	IP       netip.Addr
	Port     uint16
	Backends []netip.AddrPort
}

func kubeChain(prefix, s string) string {
	h := sha256.Sum256([]byte(s))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// svcChain and sepChain name chains as kube-proxy does.
func svcChain(s IPTService) string { return kubeChain("KUBE-SVC-", s.Name+"tcp") }

func sepChain(s IPTService, b netip.AddrPort) string {
	return kubeChain("KUBE-SEP-", s.Name+"tcp"+b.String())
}

// KubeProxyRules renders services as kube-proxy's iptables mode writes the
// nat table: PREROUTING and OUTPUT jump to KUBE-SERVICES, which has one
// rule per service port matching its cluster IP and port and jumping to its
// KUBE-SVC chain; that picks an endpoint with statistic random rules
// (probability 1/n, 1/(n-1), ... 1) and jumps to its KUBE-SEP chain, which
// marks hairpin traffic for masquerade and DNATs. KUBE-NODEPORTS is last.
// full also writes the built-in chains and their jumps (a fresh table);
// otherwise only the KUBE-* chains, for iptables-restore --noflush.
func KubeProxyRules(svcs []IPTService, full bool) []byte {
	var b strings.Builder
	b.WriteString("*nat\n")
	if full {
		b.WriteString(":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	}
	b.WriteString(":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain(s))
		for _, be := range s.Backends {
			fmt.Fprintf(&b, ":%s - [0:0]\n", sepChain(s, be))
		}
	}
	if full {
		b.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
		b.WriteString(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
		b.WriteString(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING` + "\n")
	}
	b.WriteString("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n")
	b.WriteString("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
	b.WriteString("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n")
	b.WriteString(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully` + "\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n", s.IP, s.Name, s.Port, svcChain(s))
	}
	b.WriteString(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n")
	for _, s := range svcs {
		writeServiceChains(&b, s)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

func writeServiceChains(b *strings.Builder, s IPTService) {
	n := len(s.Backends)
	for i, be := range s.Backends {
		if i < n-1 {
			fmt.Fprintf(b, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %.11f -j %s\n", svcChain(s), s.Name, be, 1/float64(n-i), sepChain(s, be))
		} else {
			fmt.Fprintf(b, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", svcChain(s), s.Name, be, sepChain(s, be))
		}
	}
	for _, be := range s.Backends {
		fmt.Fprintf(b, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", sepChain(s, be), be.Addr(), s.Name)
		fmt.Fprintf(b, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s\n", sepChain(s, be), s.Name, be)
	}
}

// KubeProxyPartial is kube-proxy's minimized sync after adding added to
// svcs (which includes it): KUBE-SERVICES rewritten whole, the new
// service's chains created, every other chain left alone (--noflush).
func KubeProxyPartial(svcs []IPTService, added IPTService) []byte {
	var b strings.Builder
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain(added))
	for _, be := range added.Backends {
		fmt.Fprintf(&b, ":%s - [0:0]\n", sepChain(added, be))
	}
	for _, s := range svcs {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n", s.IP, s.Name, s.Port, svcChain(s))
	}
	b.WriteString(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n")
	writeServiceChains(&b, added)
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// iptServices are n services in 10.97.0.0/16 over backends: the measured
// one (mid, 10.97.250.1) in the middle of the list, and (n > 1) another
// (last, 10.97.250.2) at its end.
func iptServices(n int, backends []netip.AddrPort) (svcs []IPTService, mid, last netip.Addr) {
	mid, last = netip.MustParseAddr("10.97.250.1"), netip.MustParseAddr("10.97.250.2")
	fillers := n - 2
	if n == 1 {
		fillers, last = 0, mid
	}
	for i := 0; i < fillers; i++ {
		svcs = append(svcs, IPTService{Name: fmt.Sprintf("bench/svc%d:http", i), IP: netip.AddrFrom4([4]byte{10, 97, byte((i + 1) >> 8), byte(i + 1)}), Port: 80, Backends: backends})
	}
	svcs = slices.Insert(svcs, fillers/2, IPTService{Name: "bench/target:http", IP: mid, Port: 80, Backends: backends})
	if n > 1 {
		svcs = append(svcs, IPTService{Name: "bench/last:http", IP: last, Port: 80, Backends: backends})
	}
	return svcs, mid, last
}

// iptablesRestore runs iptables-restore (flavour legacy or nft) in the
// named namespace with rules on stdin.
func iptablesRestore(ctx context.Context, flavour, nsName string, rules []byte, noflush bool) (time.Duration, error) {
	bin := "iptables-legacy-restore"
	if flavour == "nft" {
		bin = "iptables-nft-restore"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return 0, fmt.Errorf("%s not found (apt-get install iptables): %w", bin, err)
	}
	args := []string{}
	if noflush {
		args = append(args, "--noflush")
	}
	var d time.Duration
	err = lab.InNamedNS(nsName, func() error {
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Stdin = strings.NewReader(string(rules))
		t := time.Now()
		out, err := cmd.CombinedOutput()
		d = time.Since(t)
		if err != nil {
			return fmt.Errorf("%s: %w: %s", bin, err, out)
		}
		return nil
	})
	return d, err
}
