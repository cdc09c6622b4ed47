package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
)

func TestPrintEndpointsShowsPolicyWarnings(t *testing.T) {
	eps := []api.Endpoint{
		{ID: 1, PodName: "za", Namespace: "z", IPv4: "10.0.0.1", Identity: 300, State: api.EndpointReady,
			Policy: api.EndpointPolicy{EgressEnforced: true, Warnings: []string{`NetworkPolicy z/p spec.egress[0]: named port "web" not found on any peer the rule selects`}}},
		{ID: 2, PodName: "zb", Namespace: "z", Identity: 301, State: api.EndpointReady, Policy: api.EndpointPolicy{IngressEnforced: true}},
		{ID: 3, PodName: "zc", Namespace: "z", Identity: 302, State: api.EndpointReady, Policy: api.EndpointPolicy{Error: "policy map overflow"}},
		{ID: 4, PodName: "zd", Namespace: "z", Identity: 303, State: api.EndpointReady},
	}
	var b bytes.Buffer
	if err := printEndpoints(&b, eps); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"POLICY\n",
		"1   za   z ", "1 warning(s)\n", "ok\n", "error\n",
		`endpoint 1: policy warning: NetworkPolicy z/p spec.egress[0]: named port "web" not found on any peer the rule selects`,
		"endpoint 3: policy error: policy map overflow",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	if !strings.HasSuffix(strings.TrimSpace(lines[4]), " -") {
		t.Errorf("an endpoint no policy selects shows %q, want -", lines[4])
	}
}
