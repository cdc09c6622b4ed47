package labtest

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// flowHash is bpf/lib/lb.h's flow_hash: the same on every node for the
// same flow (source address and port, service port, protocol).
func flowHash(src netip.Addr, sport, dport uint16, proto uint8) uint32 {
	var b [16]byte
	if src.Is4() {
		a := src.As4()
		copy(b[:4], a[:])
	} else {
		b = src.As16()
	}
	h := uint32(2166136261)
	for i := 0; i < 4; i++ {
		h = (h ^ binary.NativeEndian.Uint32(b[4*i:])) * 16777619
	}
	h = (h ^ (uint32(sport)<<16 | uint32(dport))) * 16777619
	h = (h ^ uint32(proto)) * 16777619
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	return h
}

// maglevTable reads the Maglev table a node's datapath holds for one
// frontend, as backend addresses (the node's backend ids translated with
// its service list).
func maglevTable(t *testing.T, labName, node, frontend string) []string {
	t.Helper()
	var row *api.Service
	l := serviceList(t, labName, node)
	for i := range l {
		if l[i].Frontend == frontend && l[i].Protocol == "TCP" {
			row = &l[i]
		}
	}
	if row == nil {
		t.Fatalf("node %s has no frontend %s/TCP", node, frontend)
	}
	if !row.Maglev {
		t.Fatalf("node %s: frontend %s does not use Maglev", node, frontend)
	}
	addrOf := map[uint32]string{}
	for _, b := range row.Backends {
		addrOf[b.ID] = b.Address
	}
	outer, err := ebpf.LoadPinnedMap(filepath.Join(labpath.NodeBPFDir(labName, node), "maps", "lumen_lb_maglev"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("node %s: opening the Maglev map: %v", node, err)
	}
	defer outer.Close()
	var innerID uint32
	if err := outer.Lookup(row.ID, &innerID); err != nil {
		t.Fatalf("node %s: Maglev table of service %d: %v", node, row.ID, err)
	}
	inner, err := ebpf.NewMapFromID(ebpf.MapID(innerID))
	if err != nil {
		t.Fatalf("node %s: opening Maglev table %d: %v", node, innerID, err)
	}
	defer inner.Close()
	table := make([]string, inner.MaxEntries())
	for i := range table {
		var id uint32
		if err := inner.Lookup(uint32(i), &id); err != nil {
			t.Fatalf("node %s: Maglev table slot %d: %v", node, i, err)
		}
		a, ok := addrOf[id]
		if !ok {
			t.Fatalf("node %s: Maglev slot %d holds backend id %d, not one of the frontend's %v", node, i, id, addrOf)
		}
		table[i] = a
	}
	return table
}

// TestLBMaglev: with --bpf-lb-algorithm=maglev every node holds the same
// lookup table for a frontend, a flow lands on the backend the table
// names for its hash (so the same flow would land on the same backend
// whichever node load-balances it), and removing a backend moves at most
// 1% of the other backends' slots. Pods use the per-packet path here
// (the socket path hashes the socket, not the flow).
func TestLBMaglev(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology(`agentArgs: ["--bpf-lb-algorithm=maglev", "--bpf-lb-sock-hostns-only"]`+"\n")))
	svc := setupDualStack(t, name)
	names := podNames(t, name)
	clients := map[string]*lbClient{"tools/cl1": startClient(t, name, "tools/cl1"), "tools/cl2": startClient(t, name, "tools/cl2")}

	// Fixed source ports below the kernel's ephemeral range (32768-60999),
	// so no connection the kernel opened meanwhile holds one of them.
	sport := uint16(20000)
	// check compares both nodes' tables and the flows' backends with them.
	check := func(stage string, want []string) map[int][]string {
		tables := map[int][]string{}
		for _, fam := range []int{4, 6} {
			frontend := hostPort(svc.ip(t, fam), 8080)
			t1, t2 := maglevTable(t, name, "n1", frontend), maglevTable(t, name, "n2", frontend)
			if !slices.Equal(t1, t2) {
				diff := 0
				for i := range t1 {
					if t1[i] != t2[i] {
						diff++
					}
				}
				t.Errorf("%s: Maglev tables of %s differ between n1 and n2 in %d of %d slots", stage, frontend, diff, len(t1))
			}
			share := map[string]int{}
			for _, a := range t1 {
				share[whoIs(names, []string{netip.MustParseAddrPort(a).Addr().String()})]++
			}
			if got := sortedKeys(share); !slices.Equal(got, want) {
				t.Errorf("%s: Maglev table of %s holds %v, want %v", stage, frontend, share, want)
			}
			tables[fam] = t1
			for _, from := range sortedKeys(clients) {
				c := clients[from]
				for range 8 {
					sport++
					d := c.must("dial f %s %s %d", "tcp", frontend, sport)
					c.must("close f")
					local := netip.MustParseAddrPort(d.Local)
					if local.Port() != sport {
						t.Fatalf("%s: dialed from port %d, socket has %s", stage, sport, d.Local)
					}
					slot := flowHash(local.Addr(), sport, 8080, 6) % uint32(len(t1))
					wantBE := whoIs(names, []string{netip.MustParseAddrPort(t1[slot]).Addr().String()})
					if got := whoIs(names, d.Backend); got != wantBE {
						t.Errorf("%s: flow %s -> %s landed on %s, the Maglev table (slot %d) says %s", stage, d.Local, frontend, got, slot, wantBE)
					}
				}
			}
		}
		return tables
	}
	before := check("three backends", lbBackends)

	// Remove be-b2: the others keep (almost) all their slots.
	mustLumen(t, name, "delete", "pod", "be-b2", "-n", "shop")
	rest := []string{"shop/be-a1", "shop/be-b1"}
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			waitBackends(t, name, node, hostPort(svc.ip(t, fam), 8080), "TCP", backendAddrs(t, name, fam, rest))
		}
	}
	after := check("be-b2 removed", rest)
	for _, fam := range []int{4, 6} {
		gone := podAddr(t, name, "shop/be-b2", fam, 80)
		kept, moved := 0, 0
		for i := range before[fam] {
			if before[fam][i] == gone {
				continue
			}
			kept++
			if after[fam][i] != before[fam][i] {
				moved++
			}
		}
		pct := 100 * float64(moved) / float64(kept)
		t.Logf("IPv%d: %d of %d slots of the remaining backends moved (%.3f%%)", fam, moved, kept, pct)
		if pct > 1 {
			t.Errorf("IPv%d: removing one backend moved %.2f%% of the other backends' slots, want at most 1%%", fam, pct)
		}
	}

}
