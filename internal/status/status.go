// Package status aggregates the agent's status: node facts and every
// subsystem's health, as `lumen status` and the lumen_subsystem_ok gauges
// show them.
package status

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/resource"
)

// Deps are the facts and health sources of the status.
type Deps struct {
	Node, Version, Routing string
	StartedAt              time.Time
	PodCIDRs               []netip.Prefix // invalid ones are left out
	NodeIPs                []netip.Addr   // invalid ones are left out
	Devices                func() []string
	Endpoints              func() int
	// NotEnforced maps policy store keys to why they are not enforced as
	// written.
	NotEnforced func() map[string]string
	// Subsystems report in this order.
	Subsystems []func() api.SubsystemStatus
	Registry   *metrics.Registry
	// KVStore and StoreMonitor: the etcd endpoint and its monitor (nil: no
	// etcd); its changes are logged and update the gauges.
	KVStore      string
	StoreMonitor *kvstore.Monitor
	Log          *slog.Logger
}

// Aggregator builds the status on demand.
type Aggregator struct{ d Deps }

// New returns an aggregator.
func New(d Deps) *Aggregator { return &Aggregator{d: d} }

// Status is the agent's status now; it also sets the subsystem gauges.
func (a *Aggregator) Status() api.Status {
	d := a.d
	st := api.Status{
		Node: d.Node, Version: d.Version, Routing: d.Routing, StartedAt: d.StartedAt,
		Devices: d.Devices(), PodCIDRs: []string{}, NodeIPs: []string{},
	}
	for _, p := range d.PodCIDRs {
		if p.IsValid() {
			st.PodCIDRs = append(st.PodCIDRs, p.String())
		}
	}
	for _, ip := range d.NodeIPs {
		if ip.IsValid() {
			st.NodeIPs = append(st.NodeIPs, ip.String())
		}
	}
	st.Endpoints = d.Endpoints()
	st.PoliciesNotEnforced = []string{}
	for k, why := range d.NotEnforced() {
		st.PoliciesNotEnforced = append(st.PoliciesNotEnforced, strings.TrimPrefix(k, resource.Prefix)+": "+why)
	}
	sort.Strings(st.PoliciesNotEnforced)
	st.Subsystems = make([]api.SubsystemStatus, 0, len(d.Subsystems))
	for _, f := range d.Subsystems {
		st.Subsystems = append(st.Subsystems, f())
	}
	for _, s := range st.Subsystems {
		v := 0.0
		if s.State == api.StateOK || s.State == api.StateDisabled {
			v = 1
		}
		d.Registry.Subsystem.WithLabelValues(s.Name).Set(v)
	}
	return st
}

// MetricsHandler serves the metrics with the subsystem gauges fresh at
// every scrape.
func (a *Aggregator) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Status()
		a.d.Registry.Handler().ServeHTTP(w, r)
	})
}

// Run logs the etcd's reachability changes (and refreshes the gauges)
// until ctx ends.
func (a *Aggregator) Run(ctx context.Context) error {
	if a.d.StoreMonitor == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.d.StoreMonitor.Changed():
			s := StoreHealth(a.d.KVStore, a.d.StoreMonitor)
			if s.State == api.StateOK {
				a.d.Log.Info("kvstore reachable again", "kvstore", a.d.KVStore)
			} else {
				a.d.Log.Warn("kvstore unreachable: agent degraded", "kvstore", a.d.KVStore, "reason", s.Message)
			}
			a.Status()
		}
	}
}

// StoreHealth is the "kvstore" subsystem: whether the etcd answers, naming
// it and the error when not.
func StoreHealth(endpoint string, mon *kvstore.Monitor) api.SubsystemStatus {
	st := api.SubsystemStatus{Name: "kvstore", State: api.StateOK}
	if mon == nil {
		st.State, st.Message = api.StateDisabled, "no etcd (--kvstore not set)"
		return st
	}
	checked, err, since := mon.State()
	switch {
	case !checked:
		st.State, st.Message = api.StateDegraded, "etcd "+endpoint+": not checked yet"
	case err != nil:
		st.State = api.StateDegraded
		st.Message = fmt.Sprintf("etcd %s unreachable since %s (%s): %v; local endpoints keep their datapath and policy, changes wait for the store",
			endpoint, since.UTC().Format(time.RFC3339), time.Since(since).Round(time.Second), err)
	default:
		st.Message = "etcd " + endpoint + " reachable"
	}
	return st
}
