package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// HostIfName is the name of the host side of a container's veth: "lxc" and
// the first 11 hex digits of sha256(containerID), 14 characters (IFNAMSIZ-1
// is 15). The CNI plugin names the veth so and the agent accepts only that
// name, so no request can make one of the node's own devices (its uplink
// eth0, a bridge, lumen_vxlan) a pod.
func HostIfName(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return "lxc" + hex.EncodeToString(sum[:])[:11]
}

// ValidateHostIfName checks an endpoint request's host interface: it must
// be the one the CNI plugin creates for the container.
func ValidateHostIfName(containerID, name string) error {
	if name == "" {
		return fmt.Errorf("hostIfName: must not be empty")
	}
	if want := HostIfName(containerID); name != want {
		return fmt.Errorf("hostIfName %q: not the host side of container %q's veth (want %q): the node's own interfaces cannot be endpoints", name, containerID, want)
	}
	return nil
}
