package parser

import "fmt"

// ICMP type and code names as Cilium's parser prints them (gopacket's
// ICMPv4TypeCode / ICMPv6TypeCode String): "EchoRequest",
// "DestinationUnreachable(Port)", "TimeExceeded(Code: 7)".
type icmpType struct {
	name  string
	codes map[uint8]string // nil: the type has no codes
}

var icmpv4Types = map[uint8]icmpType{
	0: {"EchoReply", nil},
	3: {"DestinationUnreachable", map[uint8]string{
		0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded", 5: "SourceRoutingFailed",
		6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated", 9: "NetAdminProhibited", 10: "HostAdminProhibited",
		11: "NetTOS", 12: "HostTOS", 13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff",
	}},
	4:  {"SourceQuench", nil},
	5:  {"Redirect", map[uint8]string{0: "Network", 1: "Host", 2: "TOS+Network", 3: "TOS+Host"}},
	8:  {"EchoRequest", nil},
	9:  {"RouterAdvertisement", nil},
	10: {"RouterSolicitation", nil},
	11: {"TimeExceeded", map[uint8]string{0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	12: {"ParameterProblem", map[uint8]string{0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"}},
	13: {"TimestampRequest", nil},
	14: {"TimestampReply", nil},
	15: {"InfoRequest", nil},
	16: {"InfoReply", nil},
	17: {"AddressMaskRequest", nil},
	18: {"AddressMaskReply", nil},
}

var icmpv6Types = map[uint8]icmpType{
	1: {"DestinationUnreachable", map[uint8]string{
		0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc", 3: "AddressUnreachable",
		4: "PortUnreachable", 5: "SrcAddressFailedPolicy", 6: "RejectRouteToDst",
	}},
	2:   {"PacketTooBig", nil},
	3:   {"TimeExceeded", map[uint8]string{0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	4:   {"ParameterProblem", map[uint8]string{0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"}},
	128: {"EchoRequest", nil},
	129: {"EchoReply", nil},
	130: {"MLDQuery", nil},
	131: {"MLDReport", nil},
	132: {"MLDDone", nil},
	133: {"RouterSolicitation", nil},
	134: {"RouterAdvertisement", nil},
	135: {"NeighborSolicitation", nil},
	136: {"NeighborAdvertisement", nil},
	137: {"Redirect", nil},
	143: {"MLDv2MulticastListenerReportMessageV2", nil},
}

// ICMPTypeCode names an ICMP (v6 false) or ICMPv6 type and code.
func ICMPTypeCode(v6 bool, typ, code uint8) string {
	types := icmpv4Types
	if v6 {
		types = icmpv6Types
	}
	t, ok := types[typ]
	switch {
	case !ok:
		return fmt.Sprintf("%d(%d)", typ, code)
	case t.codes == nil && code == 0:
		return t.name
	}
	if c, ok := t.codes[code]; ok {
		return t.name + "(" + c + ")"
	}
	return fmt.Sprintf("%s(Code: %d)", t.name, code)
}

// icmpSummaries caches the summaries of code-0 messages (echo and the like:
// nearly all ICMP traffic), so that those flows cost no formatting.
var icmpSummaries [2][256]string

func init() {
	for t := range 256 {
		icmpSummaries[0][t] = "ICMPv4 " + ICMPTypeCode(false, uint8(t), 0)
		icmpSummaries[1][t] = "ICMPv6 " + ICMPTypeCode(true, uint8(t), 0)
	}
}

func icmpSummary(v6 bool, typ, code uint8) string {
	i := 0
	if v6 {
		i = 1
	}
	if code == 0 {
		return icmpSummaries[i][typ]
	}
	return [2]string{"ICMPv4 ", "ICMPv6 "}[i] + ICMPTypeCode(v6, typ, code)
}
