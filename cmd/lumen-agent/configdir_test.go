package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agent reads its ConfigMap mounted as a directory (as the Helm chart
// mounts lumen-config): agent keys apply, operator keys are left alone,
// the command line wins, a bad value names key and value.
func TestConfigDir(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_12_08")
	os.Mkdir(data, 0o755)
	for k, v := range map[string]string{
		"routing": "vxlan", "policy-audit-mode": "true", "enable-hubble": "true\n", "node-name": "from-dir",
		"cluster-pool-ipv4-cidr": "10.0.0.0/8", "ipv4-pod-cidr": "10.244.1.0/24",
	} {
		os.WriteFile(filepath.Join(data, k), []byte(v), 0o644)
		os.Symlink(filepath.Join("..2026_12_08", k), filepath.Join(dir, k))
	}
	os.Symlink("..2026_12_08", filepath.Join(dir, "..data"))
	c, err := parseConfig([]string{"--config-dir", dir, "--node-name", "from-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Routing != "vxlan" || !c.PolicyAuditMode || !c.EnableHubble || c.NodeName != "from-flag" {
		t.Fatalf("config %+v", c)
	}
	os.WriteFile(filepath.Join(data, "policy-audit-mode"), []byte("maybe"), 0o644)
	if _, err := parseConfig([]string{"--config-dir=" + dir}); err == nil || !strings.Contains(err.Error(), `policy-audit-mode: invalid value "maybe"`) {
		t.Fatalf("bad value: %v", err)
	}
	if _, err := parseConfig([]string{"--config-dir", filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "config-dir") {
		t.Fatalf("missing dir: %v", err)
	}
}
