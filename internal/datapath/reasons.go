package datapath

import (
	"fmt"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// reasonNames follow Cilium's drop reason strings, so dashboards read the same.
var reasonNames = map[uint8]string{
	bpfconst.ReasonForwarded:      "Forwarded",
	bpfconst.DropInvalidSIP:       "Invalid source ip",
	bpfconst.DropPolicy:           "Policy denied",
	bpfconst.DropInvalid:          "Invalid packet",
	bpfconst.DropFragNeeded:       "Fragmentation needed",
	bpfconst.DropUnsupportedL3:    "Unsupported L3 protocol",
	bpfconst.DropWriteError:       "Error writing to packet",
	bpfconst.DropNoTunnelKey:      "Error retrieving tunnel key",
	bpfconst.DropCsumL3:           "Error while correcting L3 checksum",
	bpfconst.DropInvalidExthdr:    "Invalid IPv6 extension header",
	bpfconst.DropFragNotSupported: "Fragmentation not supported",
	bpfconst.DropNoTunnelEndpoint: "No tunnel/encapsulation endpoint",
	bpfconst.DropServiceNoBackend: "Service backend not found",
	bpfconst.DropNATUnsupported:   "Unsupported protocol for NAT masquerade",
	bpfconst.DropFIBLookup:        "FIB lookup failed",
	bpfconst.DropEncapProhibited:  "Encapsulation traffic is prohibited",
	bpfconst.DropInvalidIdentity:  "Invalid identity",
	bpfconst.DropUnknownSender:    "Unknown sender",
	bpfconst.DropFragNotFound:     "First logical datagram fragment not found",
	bpfconst.DropPolicyDeny:       "Policy denied by denylist",
}

// ReasonName returns the text of a drop reason code.
func ReasonName(r uint8) string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Unknown reason %d", r)
}

// DirectionName returns "ingress" or "egress".
func DirectionName(d uint8) string {
	if d == 0 {
		return "ingress"
	}
	return "egress"
}

// ObservationPointName names a trace event's observation point as Hubble does.
func ObservationPointName(p uint8) string {
	switch p {
	case bpfconst.ObsToStack:
		return "to-stack"
	case bpfconst.ObsToOverlay:
		return "to-overlay"
	case bpfconst.ObsFromEndpoint:
		return "from-endpoint"
	case bpfconst.ObsFromOverlay:
		return "from-overlay"
	case bpfconst.ObsFromNetwork:
		return "from-network"
	case bpfconst.ObsToNetwork:
		return "to-network"
	case bpfconst.ObsToEndpoint:
		return "to-endpoint"
	}
	return fmt.Sprintf("point-%d", p)
}
