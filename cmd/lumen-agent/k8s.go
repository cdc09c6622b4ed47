package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/node"
)

// k8sConfig selects Kubernetes mode (Cilium's flag names).
type k8sConfig struct {
	K8sKubeconfig          string `json:"k8s-kubeconfig-path"`
	EndpointSlices         bool   `json:"enable-cilium-endpoint-slice"`
	IdentityAllocationMode string `json:"identity-allocation-mode"`
}

func (c *k8sConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.K8sKubeconfig, "k8s-kubeconfig-path", c.K8sKubeconfig, "kubeconfig of the Kubernetes API server: Kubernetes mode (policies, services, pods from the API; nodes, endpoints, identities as CiliumNode, CiliumEndpoint, CiliumIdentity)")
	fs.BoolVar(&c.EndpointSlices, "enable-cilium-endpoint-slice", c.EndpointSlices, "Kubernetes mode: follow CiliumEndpointSlices (written by lumen-operator) instead of every CiliumEndpoint")
	fs.StringVar(&c.IdentityAllocationMode, "identity-allocation-mode", c.IdentityAllocationMode, "Kubernetes mode: crd (identities, endpoints and nodes as custom resources) or kvstore (in the etcd of --kvstore)")
}

func (c *k8sConfig) validate(kvstoreSet bool) error {
	if c.K8sKubeconfig == "" {
		if c.EndpointSlices || c.IdentityAllocationMode != "" {
			return fmt.Errorf("enable-cilium-endpoint-slice, identity-allocation-mode: need --k8s-kubeconfig-path")
		}
		return nil
	}
	switch c.IdentityAllocationMode {
	case "":
		c.IdentityAllocationMode = "crd"
	case "crd":
	case "kvstore":
		if !kvstoreSet {
			return fmt.Errorf("identity-allocation-mode: %q needs --kvstore", c.IdentityAllocationMode)
		}
		if c.EndpointSlices {
			return fmt.Errorf("enable-cilium-endpoint-slice: endpoints are in the kvstore with identity-allocation-mode=kvstore")
		}
	default:
		return fmt.Errorf("identity-allocation-mode: invalid value %q: want crd or kvstore", c.IdentityAllocationMode)
	}
	return nil
}

// k8sStore connects to the Kubernetes API and returns the store the
// agent's subsystems read: in crd mode everything is in the API server; in
// kvstore mode resources come from the API server and nodes, endpoints,
// identities and Hubble peers from etcd.
func k8sStore(ctx context.Context, cfg *config, etcd kvstore.Store, nodeIP string, log *slog.Logger) (*k8s.Store, kvstore.Store, error) {
	clients, err := k8s.NewClients(cfg.K8sKubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("k8s-kubeconfig-path: %w", err)
	}
	api := k8s.NewStore(ctx, clients, k8s.StoreOptions{NodeName: cfg.NodeName, NodeIP: nodeIP, EndpointSlices: cfg.EndpointSlices, Kinds: kinds.Registry(), Log: log})
	if cfg.IdentityAllocationMode == "kvstore" {
		return api, k8s.SplitStore(api, etcd), nil
	}
	return api, api, nil
}

// podCIDRsFromCiliumNode announces this node (without pod CIDRs) and waits
// for lumen-operator to allocate them in its CiliumNode.
func podCIDRsFromCiliumNode(ctx context.Context, api *k8s.Store, store kvstore.Store, local node.Node, log *slog.Logger) (v4, v6 netip.Prefix, err error) {
	if err := announceNode(ctx, store, local); err != nil {
		return v4, v6, err
	}
	log.Info("waiting for lumen-operator to allocate this node's pod CIDRs", "ciliumnode", local.Name)
	cidrs, err := api.PodCIDRs(ctx)
	if err != nil {
		return v4, v6, err
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return v4, v6, fmt.Errorf("CiliumNode %s: spec.ipam.podCIDRs: invalid %q", local.Name, c)
		}
		if p.Addr().Is4() {
			v4 = p
		} else {
			v6 = p
		}
	}
	return v4, v6, nil
}

func announceNode(ctx context.Context, store kvstore.Store, n node.Node) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, node.NodesPrefix+n.Name, b); err != nil {
		return fmt.Errorf("announcing node %s: %w", n.Name, err)
	}
	return nil
}

// nodeLabelsFromKubernetes adds the labels of this node's Node object to
// the host endpoint's labels (flags win) and takes its zone from the
// well-known label when --zone is not set.
func nodeLabelsFromKubernetes(ctx context.Context, kube *k8s.Store, cfg *config, log *slog.Logger) error {
	labels, err := kube.NodeLabels(ctx)
	if err != nil {
		return err
	}
	if labels == nil {
		log.Warn("no Node object for this node: host labels from flags only", "node", cfg.NodeName)
	}
	for k, v := range labels {
		if _, set := cfg.nodeLabels[k]; !set {
			cfg.nodeLabels[k] = v
		}
	}
	if cfg.Zone == "" {
		cfg.Zone = labels[k8s.ZoneLabel]
	}
	return nil
}
