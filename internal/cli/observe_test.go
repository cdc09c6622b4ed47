package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

func TestObserveRequest(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	text := func(f *flowpb.FlowFilter) string { return strings.Join(strings.Fields(prototext.Format(f)), " ") }
	// --pod: either side; --verdict constrains both; namespace qualifies.
	o := &observeOpts{pods: []string{"frontend"}, namespace: "shop", verdicts: []string{"dropped"}}
	req, err := o.request(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Whitelist) != 2 || req.Number != 20 ||
		text(req.Whitelist[0]) != `source_pod: "shop/frontend" verdict: DROPPED` ||
		text(req.Whitelist[1]) != `destination_pod: "shop/frontend" verdict: DROPPED` {
		t.Errorf("pod request: %v", req)
	}
	// --from-pod and --to-ip: one filter; --since: no default number.
	o = &observeOpts{fromPods: []string{"tools/debug"}, toIPs: []string{"10.0.0.0/8"}, protocols: []string{"tcp"}, ports: nil, since: "5m", types: []string{"trace:to-endpoint"}}
	req, err = o.request(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Whitelist) != 1 || req.Number != 0 || !req.Since.AsTime().Equal(now.Add(-5*time.Minute)) ||
		text(req.Whitelist[0]) != `source_pod: "tools/debug" destination_ip: "10.0.0.0/8" event_type: { type: 4 match_sub_type: true } protocol: "tcp"` {
		t.Errorf("from/to request: %v", req)
	}
	// Namespace alone: either side; --port: source or destination port.
	o = &observeOpts{namespace: "shop", ports: []string{"80"}, follow: true}
	req, _ = o.request(now)
	if len(req.Whitelist) != 2 || req.Number != 0 || !req.Follow ||
		text(req.Whitelist[0]) != `source_pod: "shop/" source_port: "80"` || text(req.Whitelist[1]) != `destination_pod: "shop/" destination_port: "80"` {
		t.Errorf("namespace request: %v", req)
	}
	if req, _ := (&observeOpts{first: 5}).request(now); req.Number != 5 || !req.First || req.Whitelist != nil {
		t.Errorf("first: %v", req)
	}
	bad := []struct {
		o    observeOpts
		want string
	}{
		{observeOpts{verdicts: []string{"maybe"}}, `--verdict: invalid value "maybe"`},
		{observeOpts{types: []string{"l7"}}, `--type: invalid value "l7"`},
		{observeOpts{types: []string{"trace:nowhere"}}, `--type: invalid subtype "nowhere"`},
		{observeOpts{since: "yesterday"}, `--since: invalid value "yesterday"`},
		{observeOpts{tcpFlags: []string{"SYN,FOO"}}, `--tcp-flags: invalid flag "FOO"`},
		{observeOpts{direction: "up"}, `--traffic-direction: invalid value "up"`},
		{observeOpts{first: 1, last: 1}, "--first and --last"},
		{observeOpts{first: 1, follow: true}, "--first cannot be combined with --follow"},
		{observeOpts{dropReasons: []string{"bad"}}, `--drop-reason: invalid value "bad"`},
		// Identities are 32-bit: 2^32 used to wrap around to 0.
		{observeOpts{identities: []string{"4294967296"}}, `--identity: invalid value "4294967296": want a security identity, 0 to 4294967295`},
		{observeOpts{fromIdentity: []string{"-1"}}, `--from-identity: invalid value "-1"`},
		{observeOpts{toIdentity: []string{"web"}}, `--to-identity: invalid value "web"`},
		{observeOpts{labels: []string{strings.Repeat("k", 100000)}}, `--label: invalid value "kkkk`},
		{observeOpts{fromLabels: []string{"app=" + strings.Repeat("v", 64)}}, `--from-label: invalid value "app=vvv`},
		{observeOpts{toLabels: []string{"app=x\x00"}}, `--to-label: invalid value`},
	}
	for _, b := range bad {
		if _, err := b.o.request(now); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: %v, want %q", b.o, err, b.want)
		}
	}
	if _, err := (&observeOpts{labels: []string{strings.Repeat("k", 100000)}}).request(now); err == nil || len(err.Error()) > 400 {
		t.Errorf("100k-character label: error of %d characters", len(err.Error()))
	}
	req, err = (&observeOpts{identities: []string{"4294967295"}, fromIdentity: []string{"256"}}).request(now)
	if err != nil || len(req.Whitelist) != 2 || text(req.Whitelist[0]) != `source_identity: 256 source_identity: 4294967295` {
		t.Errorf("identities: %v, %v", req, err)
	}
	if _, err := observeFormat("yaml"); err == nil {
		t.Error("-o yaml accepted")
	}
}

func TestObserveCommand(t *testing.T) {
	o := observer.New(observer.Options{NodeName: "n1"})
	for i, pod := range []string{"frontend", "catalog", "frontend"} {
		o.Publish(&flowpb.Flow{
			Time: timestamppb.New(time.Unix(1_700_000_000+int64(i), 0)), NodeName: "n1", Verdict: flowpb.Verdict_FORWARDED,
			EventType: &flowpb.CiliumEventType{Type: 4, SubType: 5}, Summary: fmt.Sprintf("flow %d", i),
			IP:     &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
			Source: &flowpb.Endpoint{Namespace: "shop", PodName: pod, Identity: 300},
		})
	}
	sock := filepath.Join(t.TempDir(), "hubble.sock")
	s, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	run := func(ctx context.Context, args ...string) (string, error) {
		root := NewRoot(nil)
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs(append([]string{"observe", "--server", "unix://" + sock}, args...))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	out, err := run(context.Background(), "--from-pod", "shop/frontend", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, `"pod_name":"frontend"`); n != 2 || strings.Contains(out, "catalog") {
		t.Errorf("json output:\n%s", out)
	}
	out, err = run(context.Background(), "--last", "1")
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "shop/frontend (ID:300) <> 10.0.0.2 (ID:0) from-endpoint FORWARDED (flow 2)") {
		t.Errorf("compact output %q %v", out, err)
	}
	// --follow prints new flows until cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var live bytes.Buffer
	done := make(chan error)
	go func() {
		root := NewRoot(nil)
		root.SetOut(lockedWriter{&mu, &live})
		root.SetErr(io.Discard)
		root.SetArgs([]string{"observe", "--server", "unix://" + sock, "--follow", "-o", "json"})
		done <- root.ExecuteContext(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		o.Publish(&flowpb.Flow{Time: timestamppb.Now(), NodeName: "n1", Summary: "live", Source: &flowpb.Endpoint{PodName: "live"}})
		mu.Lock()
		got := live.String()
		mu.Unlock()
		if strings.Contains(got, `"Summary":"live"`) {
			if strings.Contains(got, "flow 0") {
				t.Errorf("--follow printed old flows:\n%s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("--follow printed no new flow")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("--follow ended with %v", err)
	}
	if _, err := run(context.Background(), "--from-ip", "nope"); err == nil || !strings.Contains(err.Error(), "whitelist[0].source_ip[0]") {
		t.Errorf("bad filter: %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
