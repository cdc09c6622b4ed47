package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestConfigDirAndLeaderFlags(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{"cluster-pool-ipv4-cidr": "10.1.0.0/16 10.2.0.0/16\n", "leader-elect": "true", "log-level": "warn",
		"routing": "vxlan" /* the agent's */} {
		os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644)
	}
	var pools []string
	var level string
	var l leaderFlags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.StringSliceVar(&pools, "cluster-pool-ipv4-cidr", []string{"10.200.0.0/16"}, "")
	fs.StringVar(&level, "log-level", "info", "")
	l.flags(fs)
	if err := fs.Parse([]string{"--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigDir(fs, dir); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pools, []string{"10.1.0.0/16", "10.2.0.0/16"}) || level != "debug" || !l.enabled {
		t.Fatalf("pools %v level %s leader %v", pools, level, l.enabled)
	}
	os.WriteFile(filepath.Join(dir, "leader-elect"), []byte("sometimes"), 0o644)
	fs2 := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var l2 leaderFlags
	l2.flags(fs2)
	if err := applyConfigDir(fs2, dir); err == nil || !strings.Contains(err.Error(), `leader-elect: invalid value "sometimes"`) {
		t.Fatalf("bad value: %v", err)
	}
	if err := (&leaderFlags{enabled: true, namespace: "kube-system", name: "x", lease: 5 * time.Second, renew: 10 * time.Second, retry: time.Second}).validate(); err == nil {
		t.Fatal("renew deadline above the lease duration accepted")
	}
}
