package datapath

import "fmt"

// reasonNames follow Cilium's drop reason strings, so dashboards read the same.
var reasonNames = map[uint8]string{
	0:   "Forwarded",
	132: "Invalid source ip",
	133: "Policy denied",
	134: "Invalid packet",
	136: "Fragmentation needed",
	139: "Unsupported L3 protocol",
	141: "Error writing to packet",
	147: "Error retrieving tunnel key",
	153: "Error while correcting L3 checksum",
	156: "Invalid IPv6 extension header",
	157: "Fragmentation not supported",
	160: "No tunnel/encapsulation endpoint",
	158: "Service backend not found",
	168: "Unsupported protocol for NAT masquerade",
	169: "FIB lookup failed",
	170: "Encapsulation traffic is prohibited",
	171: "Invalid identity",
	172: "Unknown sender",
	175: "First logical datagram fragment not found",
	181: "Policy denied by denylist",
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
	case 3:
		return "to-stack"
	case 4:
		return "to-overlay"
	case 5:
		return "from-endpoint"
	case 9:
		return "from-overlay"
	case 10:
		return "from-network"
	case 11:
		return "to-network"
	case 101:
		return "to-endpoint"
	}
	return fmt.Sprintf("point-%d", p)
}
