// Package identity gives label sets numeric security identities, like
// Cilium: fixed reserved identities, cluster identities allocated
// consistently on every node through the kvstore, and node-local identities
// for CIDRs.
package identity

import (
	"strconv"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// ID is a numeric security identity.
type ID uint32

// Reserved identities (numbered in bpfconst, shared with the datapath).
const (
	Unknown       ID = bpfconst.IdentityUnknown
	Host          ID = bpfconst.IdentityHost
	World         ID = bpfconst.IdentityWorld
	Unmanaged     ID = bpfconst.IdentityUnmanaged
	Health        ID = bpfconst.IdentityHealth
	Init          ID = bpfconst.IdentityInit
	RemoteNode    ID = bpfconst.IdentityRemoteNode
	KubeAPIServer ID = bpfconst.IdentityKubeAPIServer
	Ingress       ID = bpfconst.IdentityIngress
	WorldIPv4     ID = bpfconst.IdentityWorldIPv4
	WorldIPv6     ID = bpfconst.IdentityWorldIPv6
)

// Identity ranges.
const (
	MinCluster ID = 256     // first identity allocated through the kvstore
	MaxCluster ID = 65535   // last one
	MinLocal   ID = 1 << 24 // first node-local (CIDR) identity
)

var reservedNames = map[ID]string{
	Host:          "host",
	World:         "world",
	Unmanaged:     "unmanaged",
	Health:        "health",
	Init:          "init",
	RemoteNode:    "remote-node",
	KubeAPIServer: "kube-apiserver",
	Ingress:       "ingress",
	WorldIPv4:     "world-ipv4",
	WorldIPv6:     "world-ipv6",
}

// IsReserved reports whether id is one of the fixed reserved identities.
func (id ID) IsReserved() bool { _, ok := reservedNames[id]; return ok }

// IsCluster reports whether id is in the kvstore-allocated range.
func (id ID) IsCluster() bool { return id >= MinCluster && id <= MaxCluster }

// IsLocal reports whether id is a node-local identity.
func (id ID) IsLocal() bool { return id >= MinLocal }

// String is the number, or "reserved:<name>" for reserved identities.
func (id ID) String() string {
	if n, ok := reservedNames[id]; ok {
		return SourceReserved + ":" + n
	}
	return strconv.FormatUint(uint64(id), 10)
}

// ReservedLabels returns the label set of a reserved identity ("reserved:host").
func ReservedLabels(id ID) (Labels, bool) {
	n, ok := reservedNames[id]
	if !ok {
		return nil, false
	}
	return Labels{{Source: SourceReserved, Key: n}}, true
}

// ReservedID returns the reserved identity named name ("host", "world", ...).
func ReservedID(name string) (ID, bool) {
	for id, n := range reservedNames {
		if n == name {
			return id, true
		}
	}
	return Unknown, false
}
