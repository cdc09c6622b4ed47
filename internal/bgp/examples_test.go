package bgp

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lumen-net/lumen/internal/lab"
)

// TestExamples: everything in examples/bgp is valid as written.
func TestExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "bgp")
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cm, err := ParseConfigMap(read("bgp-config.yaml"))
	if err != nil {
		t.Errorf("bgp-config.yaml: %v", err)
	} else if rs := cm.Routers(nil, AnnounceOptions{PodCIDR: true, LBIP: true}, "example"); len(rs) != 1 || len(rs[0].Neighbors) != 2 {
		t.Errorf("bgp-config.yaml resolves to %+v", rs)
	}
	for _, f := range []string{"peering-policy.yaml", "service.yaml"} {
		if _, err := testKinds.Decode(f, read(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, f := range []string{"topology.yaml", "topology-policy.yaml"} {
		if _, err := lab.ParseTopology(read(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
