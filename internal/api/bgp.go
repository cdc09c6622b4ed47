package api

import "time"

// BGP session states (GET /v1/bgp/peers), as RFC 4271 names them.
const (
	BGPIdle        = "idle"
	BGPConnect     = "connect"
	BGPActive      = "active"
	BGPOpenSent    = "opensent"
	BGPOpenConfirm = "openconfirm"
	BGPEstablished = "established"
)

// BGPPeer is one BGP session of the node's speaker (GET /v1/bgp/peers).
type BGPPeer struct {
	LocalASN    uint32 `json:"localASN"`
	RouterID    string `json:"routerID"`
	PeerAddress string `json:"peerAddress"`
	PeerPort    uint16 `json:"peerPort"`
	PeerASN     uint32 `json:"peerASN"`
	State       string `json:"state"`
	// Since is when the session reached its state: established since, or
	// down since (the peer's configuration or its last session end).
	Since time.Time `json:"since,omitzero"`
	// PrefixesSent and PrefixesReceived count prefixes over all families;
	// Lumen accepts none of the received ones.
	PrefixesSent     uint64   `json:"prefixesSent"`
	PrefixesReceived uint64   `json:"prefixesReceived"`
	Families         []string `json:"families,omitempty"`
	// HoldTime and Keepalive are the negotiated timers (configured ones
	// before the session is established), in seconds.
	HoldTime        uint64 `json:"holdTimeSeconds"`
	Keepalive       uint64 `json:"keepAliveTimeSeconds"`
	GracefulRestart bool   `json:"gracefulRestart"`
	RestartTime     uint64 `json:"restartTimeSeconds,omitempty"`
	// NextRetry is the current connect back-off of a session that is not
	// established, in seconds.
	NextRetry uint64 `json:"nextRetrySeconds,omitempty"`
	// LastError says why the session went down or why it cannot be set up.
	LastError string `json:"lastError,omitempty"`
	// Source names the configuration the peer comes from.
	Source string `json:"source"`
}

// BGPRoute is one prefix the node announces (GET /v1/bgp/routes).
type BGPRoute struct {
	LocalASN uint32 `json:"localASN"`
	Prefix   string `json:"prefix"`
	NextHop  string `json:"nextHop"`
	// Origin is "pod-cidr" or "service NAMESPACE/NAME".
	Origin string `json:"origin"`
	// AdvertisedTo lists the peers whose Adj-RIB-Out holds the prefix.
	AdvertisedTo []string  `json:"advertisedTo"`
	Since        time.Time `json:"since"`
}
