package labcmd

import (
	"net/netip"

	"github.com/lumen-net/lumen/internal/cli"
	"github.com/lumen-net/lumen/internal/lab"
)

// OpenLab opens a running lab for `lumen policy explain`, which names its
// pods and nodes.
func OpenLab(name string) (cli.Lab, error) {
	st, err := lab.LoadState(name)
	if err != nil {
		return nil, err
	}
	return explainLab{st}, nil
}

type explainLab struct{ st *lab.State }

func (l explainLab) Owner(a netip.Addr) (name, node string, ok bool) {
	for _, p := range l.st.Pods {
		if p.IPv4 == a.String() || p.IPv6 == a.String() {
			name, node, ok = p.FullName(), p.Node, true
		}
	}
	for _, n := range l.st.Nodes {
		for _, cidr := range n.NodeIPs {
			if p, err := netip.ParsePrefix(cidr); err == nil && p.Addr() == a {
				name, node, ok = "host "+n.Name, n.Name, true
			}
		}
	}
	return name, node, ok
}

func (l explainLab) Pod(ref string) (name, node, ipv4, ipv6 string, err error) {
	p, err := l.st.FindPod(ref)
	if err != nil {
		return "", "", "", "", err
	}
	return p.FullName(), p.Node, p.IPv4, p.IPv6, nil
}
