package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/testutil"
)

func TestFlagErrorsNameFlagAndValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-pool-ipv4-cidr", "10.200.1.0/16"}, `cluster-pool-ipv4-cidr: invalid value "10.200.1.0/16"`},
		{[]string{"--cluster-pool-ipv4-cidr", "banana"}, `cluster-pool-ipv4-cidr: invalid value "banana": not a CIDR`},
		{[]string{"--cluster-pool-ipv4-mask-size", "33"}, `cluster-pool-ipv4-mask-size: invalid value 33`},
		{[]string{"--cluster-pool-ipv6-cidr", "10.0.0.0/8"}, `cluster-pool-ipv6-cidr: invalid value "10.0.0.0/8": not an ipv6 CIDR`},
		{[]string{"--cluster-pool-ipv6-mask-size", "40"}, `cluster-pool-ipv6-mask-size: invalid value 40: shorter than the pool fd00:10:200::/48`},
		{[]string{"--ces-slice-mode", "random"}, `ces-slice-mode: invalid value "random"`},
		{[]string{"--ces-max-ciliumendpoints-per-ces", "0"}, `ces-max-ciliumendpoints-per-ces: invalid value 0`},
		{[]string{"--ces-write-qps-limit", "0"}, `ces-write-qps-limit: invalid value 0`},
		{[]string{"--identity-heartbeat-timeout", "0s"}, `identity-heartbeat-timeout: invalid value 0s`},
		{[]string{"--prometheus-serve-addr", "9963"}, `prometheus-serve-addr: invalid value "9963"`},
		{[]string{"--log-level", "loud"}, `log-level: invalid value "loud"`},
	} {
		cmd := newCommand()
		cmd.SetArgs(tc.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	// An empty pool flag turns the family off.
	f := &flags{v4CIDRs: []string{"10.1.0.0/16"}, v4Mask: 24, v6CIDRs: nil, v6Mask: 999, cesMax: 100, cesMode: "fcfs",
		cesInterval: time.Second, cesQPS: 1, cesBurst: 1, logLevel: "info"}
	cfg, _, err := f.config()
	if err != nil || len(cfg.IPv6Pools) != 0 || len(cfg.IPv4Pools) != 1 {
		t.Fatalf("config %+v, %v", cfg, err)
	}
}

// TestRunAgainstAPIServer runs the command against a real control plane:
// it allocates a pod CIDR and serves its metrics and health.
func TestRunAgainstAPIServer(t *testing.T) {
	bin, err := controlplane.BinDir()
	if err != nil {
		testutil.Skip(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), BinDir: bin, NoControllers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if err := controlplane.ApplyCRDs(ctx, cp.RESTConfig(), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	cmd := newCommand()
	cmd.SetArgs([]string{"--kubeconfig", cp.Kubeconfig(), "--prometheus-serve-addr", addr, "--enable-cilium-endpoint-slice", "--log-level", "warn"})
	go func() { done <- cmd.ExecuteContext(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("lumen-operator: %v", err)
		}
	}()

	clients, err := k8s.NewClients(cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	node := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": map[string]any{"name": "n1"},
		"spec": map[string]any{"addresses": []any{map[string]any{"type": "InternalIP", "ip": "10.99.0.1"}}},
	}}
	if _, err := clients.Dynamic.Resource(k8s.CiliumNodes).Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		got, err := clients.Dynamic.Resource(k8s.CiliumNodes).Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidrs, _, _ := unstructured.NestedStringSlice(got.Object, "spec", "ipam", "podCIDRs")
		last = fmt.Sprint(cidrs)
		if last == "[10.200.0.0/24 fd00:10:200::/64]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 pod CIDRs %s, want [10.200.0.0/24 fd00:10:200::/64] (the default pools)", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": `lumen_operator_pod_cidrs_allocated{family="ipv4"} 1`} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(want)) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
			if testing.Verbose() {
				os.Stderr.Write(body)
			}
		}
	}
}
