package bgp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// The CiliumBGPPeeringPolicy kind (cilium.io/v2alpha1, cluster-scoped).
const (
	PolicyAPIVersion = "cilium.io/v2alpha1"
	PolicyKind       = "CiliumBGPPeeringPolicy"
)

// Kinds is CiliumBGPPeeringPolicy.
func Kinds() []resource.Kind {
	return []resource.Kind{{
		APIVersion: PolicyAPIVersion, Kind: PolicyKind,
		Plural: "ciliumbgppeeringpolicies", ShortNames: []string{"bgpp"},
		Validate: validatePolicy,
		Columns: []resource.Column{
			{Header: "NODES", Value: func(o *resource.Object) string {
				if p, err := PolicyOf(o); err == nil {
					return p.NodeSelector.String()
				}
				return "?"
			}},
			{Header: "ROUTERS", Value: func(o *resource.Object) string {
				p, err := PolicyOf(o)
				if err != nil {
					return "?"
				}
				var asns []string
				for _, r := range p.VirtualRouters {
					asns = append(asns, fmt.Sprintf("AS%d (%d neighbors)", r.LocalASN, len(r.Neighbors)))
				}
				return strings.Join(asns, ", ")
			}},
		},
	}}
}

// PeeringPolicy is a decoded CiliumBGPPeeringPolicy.
type PeeringPolicy struct {
	Name string
	// NodeSelector selects the nodes the policy applies to; nil selects all.
	NodeSelector   *Selector
	VirtualRouters []VirtualRouter
}

// validatePolicy checks the spec like the CRD's schema and Cilium's
// validation, and stores it with its defaults filled in.
func validatePolicy(obj *resource.Object) resource.ErrorList {
	p, errs := decodePolicySpec(obj.Spec)
	if len(errs) > 0 {
		return errs
	}
	b, err := json.Marshal(encodePolicySpec(p))
	if err != nil {
		return resource.ErrorList{{Path: "spec", Msg: err.Error()}}
	}
	obj.Spec = b
	return nil
}

// PolicyOf decodes a stored (or any) CiliumBGPPeeringPolicy object.
func PolicyOf(obj *resource.Object) (*PeeringPolicy, error) {
	if obj.Kind != PolicyKind {
		return nil, fmt.Errorf("%s is not a %s", obj, PolicyKind)
	}
	p, errs := decodePolicySpec(obj.Spec)
	if len(errs) > 0 {
		return nil, &resource.ObjectError{Object: obj.String(), Errs: errs}
	}
	p.Name = obj.Metadata.Name
	for i := range p.VirtualRouters {
		p.VirtualRouters[i].Source = PolicyKind + " " + p.Name
	}
	return p, nil
}

// DecodePolicySpec validates a CiliumBGPPeeringPolicy spec given as JSON
// (for fuzzing and tests).
func DecodePolicySpec(spec []byte) (*PeeringPolicy, error) {
	p, errs := decodePolicySpec(spec)
	if len(errs) > 0 {
		return nil, &ConfigError{Errs: errs}
	}
	return p, nil
}

func decodePolicySpec(spec json.RawMessage) (*PeeringPolicy, resource.ErrorList) {
	w := &walker{}
	if len(bytes.TrimSpace(spec)) == 0 {
		return nil, resource.ErrorList{resource.Required("spec")}
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, resource.ErrorList{{Path: "spec", Msg: "must be an object (" + err.Error() + ")"}}
	}
	p := &PeeringPolicy{}
	m := w.object("spec", raw, "nodeSelector", "virtualRouters")
	if m == nil {
		return nil, w.errs
	}
	if m["nodeSelector"] != nil {
		p.NodeSelector = w.selector("spec.nodeSelector", m["nodeSelector"], "matchLabels", "matchExpressions")
	}
	vp := "spec.virtualRouters"
	vrs := w.list(vp, m["virtualRouters"])
	if len(vrs) == 0 {
		w.errs = append(w.errs, &fielderr.Error{Path: vp, Msg: "required value: at least one virtual router"})
	}
	asns := map[uint32]int{}
	for i, v := range vrs {
		r := w.virtualRouter(index(vp, i), v)
		if r.LocalASN != 0 {
			if j, dup := asns[r.LocalASN]; dup {
				w.errs = append(w.errs, &fielderr.Error{Path: child(index(vp, i), "localASN"),
					Msg: fmt.Sprintf("duplicate value %d (also %s): one virtual router per local ASN", r.LocalASN, index(vp, j))})
			}
			asns[r.LocalASN] = i
		}
		p.VirtualRouters = append(p.VirtualRouters, r)
	}
	if len(w.errs) > 0 {
		return nil, w.errs
	}
	return p, nil
}

func (w *walker) virtualRouter(path string, v any) VirtualRouter {
	var r VirtualRouter
	m := w.object(path, v, "localASN", "exportPodCIDR", "serviceSelector", "neighbors")
	if m == nil {
		return r
	}
	r.LocalASN = w.asn(child(path, "localASN"), m["localASN"])
	r.ExportPodCIDR = w.boolean(child(path, "exportPodCIDR"), m["exportPodCIDR"], false)
	if m["serviceSelector"] != nil {
		r.ServiceSelector = w.selector(child(path, "serviceSelector"), m["serviceSelector"], "matchLabels", "matchExpressions")
	}
	np := child(path, "neighbors")
	ns := w.list(np, m["neighbors"])
	if len(ns) == 0 {
		w.errs = append(w.errs, &fielderr.Error{Path: np, Msg: "required value: at least one neighbor"})
	}
	seen := map[string]int{}
	for i, nv := range ns {
		n := w.neighbor(index(np, i), nv)
		if n.Address.IsValid() {
			if j, dup := seen[n.Address.String()]; dup {
				w.errs = append(w.errs, &fielderr.Error{Path: child(index(np, i), "peerAddress"),
					Msg: fmt.Sprintf("duplicate value %q (also %s)", n.Address, index(np, j))})
			}
			seen[n.Address.String()] = i
		}
		r.Neighbors = append(r.Neighbors, n)
	}
	return r
}

func (w *walker) neighbor(path string, v any) Neighbor {
	var n Neighbor
	m := w.object(path, v, "peerAddress", "peerPort", "peerASN", "eBGPMultihopTTL", "connectRetryTimeSeconds",
		"holdTimeSeconds", "keepAliveTimeSeconds", "gracefulRestart")
	if m == nil {
		return n
	}
	n.Address = w.addr(child(path, "peerAddress"), m["peerAddress"])
	n.Port = uint16(w.integer(child(path, "peerPort"), m["peerPort"], DefaultPeerPort, 1, 65535))
	n.ASN = w.asn(child(path, "peerASN"), m["peerASN"])
	n.EBGPMultihopTTL = uint8(w.integer(child(path, "eBGPMultihopTTL"), m["eBGPMultihopTTL"], DefaultMultihopTTL, 1, 255))
	n.ConnectRetry = w.seconds(child(path, "connectRetryTimeSeconds"), m["connectRetryTimeSeconds"], DefaultConnectRetry, 1, 2147483647)
	n.HoldTime = w.seconds(child(path, "holdTimeSeconds"), m["holdTimeSeconds"], DefaultHoldTime, 3, 65535)
	n.KeepaliveTime = w.seconds(child(path, "keepAliveTimeSeconds"), m["keepAliveTimeSeconds"], DefaultKeepalive, 1, 65535)
	if n.KeepaliveTime > n.HoldTime {
		w.fail(child(path, "keepAliveTimeSeconds"), int64(n.KeepaliveTime/time.Second), fmt.Sprintf("must not exceed holdTimeSeconds (%d)", int64(n.HoldTime/time.Second)))
	}
	if gv := m["gracefulRestart"]; gv != nil {
		gp := child(path, "gracefulRestart")
		gm := w.object(gp, gv, "enabled", "restartTimeSeconds")
		if gm != nil {
			if gm["enabled"] == nil {
				w.add(resource.Required(child(gp, "enabled")))
			}
			n.GracefulRestart = w.boolean(child(gp, "enabled"), gm["enabled"], false)
			n.RestartTime = w.seconds(child(gp, "restartTimeSeconds"), gm["restartTimeSeconds"], DefaultRestartTime, 1, int64(MaxRestartTime/time.Second))
			if !n.GracefulRestart {
				n.RestartTime = 0
			}
		}
	}
	n.fillDefaults()
	return n
}

// seconds reads a whole number of seconds within [lo, hi].
func (w *walker) seconds(path string, v any, def time.Duration, lo, hi int64) time.Duration {
	return time.Duration(w.integer(path, v, int64(def/time.Second), lo, hi)) * time.Second
}

// The stored form, with defaults filled in, as Cilium's CRD types spell it.
type policySpecJSON struct {
	NodeSelector   *Selector           `json:"nodeSelector,omitempty"`
	VirtualRouters []virtualRouterJSON `json:"virtualRouters"`
}

type virtualRouterJSON struct {
	LocalASN        uint32         `json:"localASN"`
	ExportPodCIDR   bool           `json:"exportPodCIDR"`
	ServiceSelector *Selector      `json:"serviceSelector,omitempty"`
	Neighbors       []neighborJSON `json:"neighbors"`
}

type neighborJSON struct {
	PeerAddress             string               `json:"peerAddress"`
	PeerPort                uint16               `json:"peerPort"`
	PeerASN                 uint32               `json:"peerASN"`
	EBGPMultihopTTL         uint8                `json:"eBGPMultihopTTL"`
	ConnectRetryTimeSeconds int64                `json:"connectRetryTimeSeconds"`
	HoldTimeSeconds         int64                `json:"holdTimeSeconds"`
	KeepAliveTimeSeconds    int64                `json:"keepAliveTimeSeconds"`
	GracefulRestart         *gracefulRestartJSON `json:"gracefulRestart,omitempty"`
}

type gracefulRestartJSON struct {
	Enabled            bool  `json:"enabled"`
	RestartTimeSeconds int64 `json:"restartTimeSeconds,omitempty"`
}

func encodePolicySpec(p *PeeringPolicy) policySpecJSON {
	out := policySpecJSON{NodeSelector: p.NodeSelector}
	for _, r := range p.VirtualRouters {
		vr := virtualRouterJSON{LocalASN: r.LocalASN, ExportPodCIDR: r.ExportPodCIDR, ServiceSelector: r.ServiceSelector, Neighbors: []neighborJSON{}}
		for _, n := range r.Neighbors {
			bits := 32
			if n.Address.Is6() {
				bits = 128
			}
			nj := neighborJSON{
				PeerAddress: n.Address.String() + "/" + strconv.Itoa(bits), PeerPort: n.Port, PeerASN: n.ASN,
				EBGPMultihopTTL: n.EBGPMultihopTTL, ConnectRetryTimeSeconds: int64(n.ConnectRetry / time.Second),
				HoldTimeSeconds: int64(n.HoldTime / time.Second), KeepAliveTimeSeconds: int64(n.KeepaliveTime / time.Second),
			}
			if n.GracefulRestart {
				nj.GracefulRestart = &gracefulRestartJSON{Enabled: true, RestartTimeSeconds: int64(n.RestartTime / time.Second)}
			}
			vr.Neighbors = append(vr.Neighbors, nj)
		}
		out.VirtualRouters = append(out.VirtualRouters, vr)
	}
	return out
}

// ResolvePolicies picks the policy selecting a node and returns its
// virtual routers. As in Cilium, at most one policy may select a node:
// with several, the node gets none and the error names them.
func ResolvePolicies(policies []*PeeringPolicy, nodeLabels map[string]string) (string, []VirtualRouter, error) {
	var match []*PeeringPolicy
	for _, p := range policies {
		if p.NodeSelector.Matches(nodeLabels) {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 0:
		return "", nil, nil
	case 1:
		return match[0].Name, match[0].VirtualRouters, nil
	}
	names := make([]string, len(match))
	for i, p := range match {
		names[i] = p.Name
	}
	return "", nil, fmt.Errorf("the node is selected by %d CiliumBGPPeeringPolicies (%s): at most one may select a node, so none is applied", len(match), strings.Join(names, ", "))
}
