package api

import (
	"context"
	"fmt"
	"net/http"
)

// BPFEndpoint is one row of the endpoint map.
type BPFEndpoint struct {
	IP       string `json:"ip"`
	IfIndex  uint32 `json:"ifindex"`
	ID       uint16 `json:"id"`
	Identity uint32 `json:"identity"`
	Flags    uint16 `json:"flags"`
	MAC      string `json:"mac"`
	HostMAC  string `json:"hostMAC"`
}

// BPFIPCache is one row of the ipcache.
type BPFIPCache struct {
	Prefix   string `json:"prefix"`
	Identity uint32 `json:"identity"`
	Tunnel   string `json:"tunnel,omitempty"`
	// NodeOf is set for a cluster node's own address: that node's IPv4
	// (the overlay accepts the address as inner source from it only).
	NodeOf string `json:"nodeOf,omitempty"`
}

// BPFCT is one connection tracking entry.
type BPFCT struct {
	Direction   string `json:"direction"` // "egress" (opened by the endpoint) or "ingress"
	Proto       uint8  `json:"proto"`
	Src         string `json:"src"`
	Dst         string `json:"dst"`
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	SrcIdentity uint32 `json:"srcIdentity"`
	SeenReply   bool   `json:"seenReply"`
	Closing     bool   `json:"closing"`
	IdleSeconds uint64 `json:"idleSeconds"`
}

// BPFPolicy is one row of an endpoint's policy map.
type BPFPolicy struct {
	Direction string `json:"direction"`
	Identity  uint32 `json:"identity"` // 0: any
	Proto     uint8  `json:"proto"`    // 0: any
	Port      uint16 `json:"port"`
	PortBits  uint8  `json:"portPrefix"` // 16 exact, 0 any
	Verdict   string `json:"verdict"`    // allow or deny
}

// BPFEndpoints dumps the endpoint map.
func (c *Client) BPFEndpoints(ctx context.Context) ([]BPFEndpoint, error) {
	var out []BPFEndpoint
	return out, c.Do(ctx, http.MethodGet, "/v1/bpf/endpoints", nil, &out)
}

// BPFIPCache dumps the ipcache.
func (c *Client) BPFIPCache(ctx context.Context) ([]BPFIPCache, error) {
	var out []BPFIPCache
	return out, c.Do(ctx, http.MethodGet, "/v1/bpf/ipcache", nil, &out)
}

// BPFCT dumps the connection tracking table.
func (c *Client) BPFCT(ctx context.Context) ([]BPFCT, error) {
	var out []BPFCT
	return out, c.Do(ctx, http.MethodGet, "/v1/bpf/ct", nil, &out)
}

// BPFPolicy dumps endpoint id's policy map as the kernel sees it.
func (c *Client) BPFPolicy(ctx context.Context, id uint16) ([]BPFPolicy, error) {
	var out []BPFPolicy
	return out, c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/bpf/policy/%d", id), nil, &out)
}

// BPFService is one frontend of the service map with its active backends.
type BPFService struct {
	Frontend string       `json:"frontend"`
	Proto    uint8        `json:"proto"`
	Scope    uint8        `json:"scope"` // 0 external, 1 internal
	RevNat   uint32       `json:"revNat"`
	Flags    uint32       `json:"flags"`
	Backends []BPFBackend `json:"backends"`
}

// BPFBackend is one entry of the backend map.
type BPFBackend struct {
	ID          uint32 `json:"id"`
	Address     string `json:"address"`
	Terminating bool   `json:"terminating,omitempty"`
}

// BPFLB dumps the service and backend maps.
func (c *Client) BPFLB(ctx context.Context) ([]BPFService, error) {
	var out []BPFService
	return out, c.Do(ctx, http.MethodGet, "/v1/bpf/lb", nil, &out)
}
