// Package ipproto names the IP protocols Lumen handles: their numbers (as
// in the IP header's protocol field, which the datapath keys on) and names.
package ipproto

import (
	"strconv"
	"strings"
)

// Protocol numbers. Any (0) matches every protocol in policy keys.
const (
	Any    uint8 = 0
	ICMP   uint8 = 1
	TCP    uint8 = 6
	UDP    uint8 = 17
	ICMPv6 uint8 = 58
	SCTP   uint8 = 132
)

var names = map[uint8]string{Any: "any", ICMP: "ICMP", TCP: "TCP", UDP: "UDP", ICMPv6: "ICMPv6", SCTP: "SCTP"}

// Name is "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "any", or the number.
func Name(p uint8) string {
	if n, ok := names[p]; ok {
		return n
	}
	return strconv.Itoa(int(p))
}

// Parse reads a name of Name's, in any case ("tcp", "ICMPv6", "any").
func Parse(s string) (uint8, bool) {
	for p, n := range names {
		if strings.EqualFold(s, n) {
			return p, true
		}
	}
	return 0, false
}
