package status

import (
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/resource"
)

func TestStatus(t *testing.T) {
	reg := metrics.New(func() ([]datapath.Counter, error) { return nil, nil }, func() int { return 2 })
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := New(Deps{
		Node: "n1", Version: "v", Routing: "native", StartedAt: started,
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), {}},
		NodeIPs:   []netip.Addr{{}, netip.MustParseAddr("fd00::1")},
		Devices:   func() []string { return []string{"eth0"} },
		Endpoints: func() int { return 2 },
		NotEnforced: func() map[string]string {
			return map[string]string{resource.Prefix + "b": "why b", resource.Prefix + "a": "why a"}
		},
		Subsystems: []func() api.SubsystemStatus{
			func() api.SubsystemStatus { return api.SubsystemStatus{Name: "one", State: api.StateOK} },
			func() api.SubsystemStatus { return api.SubsystemStatus{Name: "two", State: api.StateDegraded} },
			func() api.SubsystemStatus { return api.SubsystemStatus{Name: "three", State: api.StateDisabled} },
		},
		Registry: reg,
	})
	st := a.Status()
	if st.Node != "n1" || st.Version != "v" || st.Routing != "native" || !st.StartedAt.Equal(started) || st.Endpoints != 2 {
		t.Errorf("facts: %+v", st)
	}
	if !slices.Equal(st.PodCIDRs, []string{"10.0.1.0/24"}) || !slices.Equal(st.NodeIPs, []string{"fd00::1"}) || !slices.Equal(st.Devices, []string{"eth0"}) {
		t.Errorf("addresses: pod CIDRs %v, node IPs %v, devices %v", st.PodCIDRs, st.NodeIPs, st.Devices)
	}
	if !slices.Equal(st.PoliciesNotEnforced, []string{"a: why a", "b: why b"}) {
		t.Errorf("not enforced: %v", st.PoliciesNotEnforced)
	}
	var got []string
	for _, s := range st.Subsystems {
		got = append(got, s.Name)
	}
	if !slices.Equal(got, []string{"one", "two", "three"}) {
		t.Errorf("subsystems in order %v", got)
	}
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`lumen_subsystem_healthy{subsystem="one"} 1`, `lumen_subsystem_healthy{subsystem="two"} 0`,
		`lumen_subsystem_healthy{subsystem="three"} 1`} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, rec.Body.String())
		}
	}
}

func TestStoreHealthWithoutEtcd(t *testing.T) {
	s := StoreHealth("", nil)
	if s.Name != "kvstore" || s.State != api.StateDisabled || !strings.Contains(s.Message, "--kvstore not set") {
		t.Errorf("%+v", s)
	}
}
