// Package bpfconst holds the numbers the Go agent shares with the C
// datapath in bpf/: reserved identities, drop reasons, event and trace
// codes, endpoint flags and map sizes. Each constant names, in its line
// comment after "C:", the #define (or map) it mirrors; the package's test
// parses bpf/ and fails when a value differs or either side has one the
// other lacks. Most numbers are Cilium's, so flows decode as Hubble's.
package bpfconst

// Reserved security identities.
const (
	IdentityUnknown       = 0  // C: ID_UNKNOWN
	IdentityHost          = 1  // C: ID_HOST
	IdentityWorld         = 2  // C: ID_WORLD
	IdentityUnmanaged     = 3  // C: ID_UNMANAGED
	IdentityHealth        = 4  // C: ID_HEALTH
	IdentityInit          = 5  // C: ID_INIT
	IdentityRemoteNode    = 6  // C: ID_REMOTE_NODE
	IdentityKubeAPIServer = 7  // C: ID_KUBE_APISERVER
	IdentityIngress       = 8  // C: ID_INGRESS
	IdentityWorldIPv4     = 9  // C: ID_WORLD_IPV4
	IdentityWorldIPv6     = 10 // C: ID_WORLD_IPV6
)

// Drop reasons (an event's Subtype, the metrics map's reason).
const (
	ReasonForwarded      = 0   // C: REASON_FORWARDED
	DropInvalidSIP       = 132 // C: DROP_INVALID_SIP
	DropPolicy           = 133 // C: DROP_POLICY
	DropInvalid          = 134 // C: DROP_INVALID
	DropFragNeeded       = 136 // C: DROP_FRAG_NEEDED
	DropUnsupportedL3    = 139 // C: DROP_UNSUPPORTED_L3
	DropWriteError       = 141 // C: DROP_WRITE_ERROR
	DropNoTunnelKey      = 147 // C: DROP_NO_TUNNEL_KEY
	DropCsumL3           = 153 // C: DROP_CSUM_L3
	DropInvalidExthdr    = 156 // C: DROP_INVALID_EXTHDR
	DropFragNotSupported = 157 // C: DROP_FRAG_NOT_SUPPORTED, DROP_FRAG_NOSUPPORT
	DropServiceNoBackend = 158 // C: DROP_SERVICE_NO_BACKEND
	DropNoTunnelEndpoint = 160 // C: DROP_NO_TUNNEL_ENDPOINT
	DropNATUnsupported   = 168 // C: DROP_NAT_UNSUPPORTED
	DropFIBLookup        = 169 // C: DROP_FIB_LOOKUP
	DropEncapProhibited  = 170 // C: DROP_ENCAP_PROHIBITED
	DropInvalidIdentity  = 171 // C: DROP_INVALID_IDENTITY
	DropUnknownSender    = 172 // C: DROP_UNKNOWN_SENDER
	DropFragNotFound     = 175 // C: DROP_FRAG_NOT_FOUND
	DropPolicyDeny       = 181 // C: DROP_POLICY_DENY
	ReasonEventsLost     = 255 // C: REASON_EVENTS_LOST
)

// Trace observation points (a trace event's Subtype), as Hubble's.
const (
	ObsToStack      = 3   // C: OBS_TO_STACK
	ObsToOverlay    = 4   // C: OBS_TO_OVERLAY
	ObsFromEndpoint = 5   // C: OBS_FROM_ENDPOINT
	ObsFromOverlay  = 9   // C: OBS_FROM_OVERLAY
	ObsFromNetwork  = 10  // C: OBS_FROM_NETWORK
	ObsToNetwork    = 11  // C: OBS_TO_NETWORK
	ObsToEndpoint   = 101 // C: OBS_TO_ENDPOINT
)

// Event types, event flags and policy match types.
const (
	EventTrace  = 1 // C: EVENT_TRACE
	EventDrop   = 2 // C: EVENT_DROP
	EventPolicy = 3 // C: EVENT_POLICY

	EventFlagReply    = 1 << 0 // C: EV_F_REPLY
	EventFlagDenied   = 1 << 1 // C: EV_F_DENIED
	EventFlagAudit    = 1 << 2 // C: EV_F_AUDIT
	EventFlagExplicit = 1 << 3 // C: EV_F_EXPLICIT
	EventFlagCTKnown  = 1 << 4 // C: EV_F_CT_KNOWN

	MatchNone   = 0 // C: MATCH_NONE
	MatchL3Only = 1 // C: MATCH_L3_ONLY
	MatchL3L4   = 2 // C: MATCH_L3_L4
	MatchL4Only = 3 // C: MATCH_L4_ONLY
	MatchAll    = 4 // C: MATCH_ALL
)

// Trace levels (lumen_config.trace_level).
const (
	TraceNone    = 0 // C: TRACE_NONE
	TraceControl = 1 // C: TRACE_CONTROL
	TraceAll     = 2 // C: TRACE_ALL
	TraceLow     = 3 // C: TRACE_LOW
	TraceMax     = 4 // C: TRACE_MAX
)

// Endpoint flags (endpoint_info.flags) and the host endpoint's id.
const (
	EndpointIngressEnforced = 1 << 0 // C: EP_F_INGRESS_ENFORCED
	EndpointEgressEnforced  = 1 << 1 // C: EP_F_EGRESS_ENFORCED
	EndpointAudit           = 1 << 2 // C: EP_F_AUDIT
	EndpointHost            = 1 << 3 // C: EP_F_HOST
	HostEndpointID          = 0xffff // C: HOST_EP_ID
)

// Map sizes (max_entries as compiled; the loader may resize the events
// ring and the Maglev tables).
const (
	MaxEndpoints    = 65536   // C: lumen_endpoints
	MaxIPCache      = 512000  // C: lumen_ipcache
	MaxMetrics      = 512     // C: lumen_metrics
	EventsRingBytes = 1 << 22 // C: lumen_events
	MaxConfig       = 1       // C: lumen_config
	MaxPolicy       = 1 << 20 // C: lumen_policy
	MaxConntrack    = 262144  // C: lumen_ct
	MaxLBServices   = 1 << 20 // C: lumen_lb_services
	MaxLBBackends   = 1 << 21 // C: lumen_lb_backends
	MaxLBRevNat     = 1 << 17 // C: lumen_lb_revnat
	MaglevTableSize = 16381   // C: maglev_inner
	MaxLBMaglev     = 65536   // C: lumen_lb_maglev
	MaxLBAffinity   = 65536   // C: lumen_lb_affinity
	MaxLBSockRevNat = 262144  // C: lumen_lb_sock_revnat
	MaxSNATRev      = 131072  // C: lumen_snat_rev
	MaxSNATFwd      = 131072  // C: lumen_snat_fwd
	MaxDSR          = 131072  // C: lumen_dsr
	MaxFrag         = 16384   // C: lumen_frag
	XDPStatsEntries = 8       // C: lumen_xdp_stats
)
