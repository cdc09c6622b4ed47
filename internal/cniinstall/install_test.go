package cniinstall

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "src")
	if err := os.WriteFile(plugin, []byte("plugin-v1"), 0o700); err != nil {
		t.Fatal(err)
	}
	o := Options{BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"), AgentSocket: "/run/lumen/agent.sock",
		LogFile: "/var/log/lumen-cni.log", Plugin: plugin}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	// again with a new plugin: replaced (renamed over, not rewritten in place)
	before, _ := os.Stat(filepath.Join(o.BinDir, "lumen-cni"))
	os.WriteFile(plugin, []byte("plugin-v2"), 0o700)
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(o.BinDir, "lumen-cni"))
	if b, _ := os.ReadFile(filepath.Join(o.BinDir, "lumen-cni")); string(b) != "plugin-v2" || after.Mode().Perm() != 0o755 {
		t.Fatalf("plugin %q mode %v", b, after.Mode())
	}
	if os.SameFile(before, after) {
		t.Error("the plugin was rewritten in place (a running plugin would get ETXTBSY)")
	}
	b, err := os.ReadFile(filepath.Join(o.ConfDir, "05-lumen.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion, Name string
		Plugins          []map[string]string
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if list.Name != "lumen" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0]["type"] != "lumen-cni" ||
		list.Plugins[0]["agentSocket"] != o.AgentSocket || list.Plugins[0]["logFile"] != o.LogFile {
		t.Fatalf("conflist %s", b)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*", ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestInstallRejects(t *testing.T) {
	dir := t.TempDir()
	base := Options{BinDir: dir, ConfDir: dir, Plugin: "/proc/self/exe"}
	for _, c := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"relative socket", func(o *Options) { o.AgentSocket = "run/agent.sock" }, "run/agent.sock"},
		{"socket too long", func(o *Options) { o.AgentSocket = "/" + strings.Repeat("a", 120) }, "agentSocket"},
		{"socket with NUL", func(o *Options) { o.AgentSocket = "/run/a\x00b" }, "agentSocket"},
		{"conf name with slash", func(o *Options) { o.ConfName = "../x.conflist" }, "../x.conflist"},
		{"conf name suffix", func(o *Options) { o.ConfName = "05-lumen.conf" }, "05-lumen.conf"},
		{"no bin dir", func(o *Options) { o.BinDir = "" }, "bin-dir"},
	} {
		o := base
		c.mod(&o)
		if err := Install(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want it to mention %q", c.name, err, c.want)
		}
	}
}
