package cli

import (
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/prototext"
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
	}
	for _, b := range bad {
		if _, err := b.o.request(now); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: %v, want %q", b.o, err, b.want)
		}
	}
	if _, err := observeFormat("yaml"); err == nil {
		t.Error("-o yaml accepted")
	}
}
