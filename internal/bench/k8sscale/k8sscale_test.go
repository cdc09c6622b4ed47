package k8sscale

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane"
	"github.com/lumen-net/lumen/internal/testutil"
)

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.Agents = 0 }, "agents: invalid value 0"},
		{func(o *Options) { o.ChurnRate = -1 }, "churn-rate: invalid value -1"},
		{func(o *Options) { o.Churn = "storm" }, `churn: invalid value "storm"`},
		{func(o *Options) { o.Modes = []string{"cep", "eps"} }, `modes: invalid value "eps"`},
		{func(o *Options) { o.Duration = time.Millisecond }, "duration: invalid value 1ms"},
		{func(o *Options) { o.SliceMode = "x" }, `ces-slice-mode: invalid value "x"`},
		{func(o *Options) { o.Replicas = 100000 }, "too many"},
	} {
		o := DefaultOptions()
		tc.mod(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
		}
	}
}

func TestChurnModels(t *testing.T) {
	o := DefaultOptions()
	o.Agents, o.Namespaces, o.DeploymentsPerNS, o.Replicas = 3, 2, 2, 3
	cl := newCluster(o, nil, slog.New(slog.DiscardHandler))
	for _, d := range cl.deps {
		for range o.Replicas {
			d.pods = append(d.pods, cl.newPod(d))
		}
	}
	// A rollout replaces every pod of one deployment before the next.
	first := cl.deps[cl.order[0]]
	for i := range o.Replicas {
		r := cl.nextReplacement()
		if r.old.namespace != first.namespace || r.old.app != first.app || r.new.identity != first.identity {
			t.Fatalf("replacement %d: %s/%s, want a pod of %s/%s", i, r.old.namespace, r.old.name, first.namespace, first.app)
		}
		if first.pods[i] != r.new {
			t.Fatalf("replacement %d did not take the old pod's place", i)
		}
	}
	if r := cl.nextReplacement(); r.old.app == first.app && r.old.namespace == first.namespace {
		t.Fatal("the rollout did not move on to the next deployment")
	}
	pods := 0
	for _, d := range cl.deps {
		pods += len(d.pods)
	}
	if pods != o.Pods() {
		t.Fatalf("%d pods after churn, want %d", pods, o.Pods())
	}
}

// TestCESDeliversFewerEvents runs a short experiment against a real API
// server: for the same churn, agents watching slices get fewer events than
// agents watching endpoints, and every agent gets every write in both modes.
func TestCESDeliversFewerEvents(t *testing.T) {
	if _, err := controlplane.BinDir(); err != nil {
		testutil.Skip(t, err.Error())
	}
	o := DefaultOptions()
	o.Agents, o.Namespaces, o.DeploymentsPerNS, o.Replicas = 10, 4, 3, 5
	o.ChurnRate, o.Duration = 10, 3*time.Second
	if testing.Verbose() {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("results %+v, want CEP and CES", rep.Results)
	}
	cep, ces := rep.Results[0], rep.Results[1]
	t.Logf("CEP: %d writes, %d events, %d bytes; CES: %d slice writes, %d events, %d bytes; ratios %.2fx events %.2fx bytes",
		cep.ObjectWrites, cep.Events, cep.Bytes, ces.ObjectWrites, ces.Events, ces.Bytes, rep.EventRatio, rep.ByteRatio)
	for _, r := range rep.Results {
		if r.Replacements == 0 || r.ObjectWrites == 0 {
			t.Errorf("%s: no churn measured: %+v", r.Mode, r)
		}
		if r.Events != r.ObjectWrites*int64(o.Agents) {
			t.Errorf("%s: agents got %d events for %d writes x %d agents", r.Mode, r.Events, r.ObjectWrites, o.Agents)
		}
	}
	if cep.CEPWrites < 2*cep.Replacements {
		t.Errorf("CEP mode: %d writes for %d replacements, want a create and a delete each", cep.CEPWrites, cep.Replacements)
	}
	if ces.Events >= cep.Events {
		t.Errorf("CES mode delivered %d events, CEP mode %d: want fewer in CES mode", ces.Events, cep.Events)
	}
}
