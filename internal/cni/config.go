package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/lumen-net/lumen/internal/api"
)

// MTU bounds accepted in the config. Pods are dual-stack, and IPv6 needs at
// least 1280; 0 means "use the MTU the agent hands out".
const (
	MinMTU = 1280
	MaxMTU = 65535
)

// maxSocketPath is the longest path a unix socket address can hold
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Config is lumen-cni's entry in a conflist, as the runtime passes it on stdin.
type Config struct {
	types.PluginConf

	// AgentSocket is the agent's API socket; empty in the input means api.DefaultSocket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// MTU overrides the agent's MTU when non-zero.
	MTU int `json:"mtu,omitempty"`
	// LogFile receives the plugin's logs when set; stdout is reserved for the result.
	LogFile string `json:"logFile,omitempty"`
}

// knownFields are the keys the CNI spec (and libcni) may put in a plugin
// config, plus lumen-cni's own. Anything else is rejected so that typos do
// not silently fall back to defaults.
var knownFields = map[string]bool{
	"cniVersion":                true,
	"name":                      true,
	"type":                      true,
	"capabilities":              true,
	"ipam":                      true,
	"dns":                       true,
	"args":                      true,
	"runtimeConfig":             true,
	"prevResult":                true,
	"cni.dev/valid-attachments": true,
	"cni.dev/attachments":       true, // the spec's first name for it; libcni sends both
	"agentSocket":               true,
	"mtu":                       true,
	"logFile":                   true,
}

// ParseConfig decodes and validates a plugin config. Errors are *types.Error
// with code ErrDecodingFailure for input that is not a JSON object and
// ErrInvalidNetworkConfig for a bad field; the message names the field and value.
func ParseConfig(data []byte) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("network config is not a JSON object: %v", err), "")
	}
	if raw == nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not a JSON object: null", "")
	}
	if err := checkUnknownFields(raw); err != nil {
		return nil, err
	}

	c := &Config{}
	// Decode field by field so that a type error names the field and shows its value.
	strField := func(name string, dst *string) error {
		v, ok := raw[name]
		if !ok || isNull(v) {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return invalidField(name, v, "must be a string")
		}
		return nil
	}
	for name, dst := range map[string]*string{
		"cniVersion":  &c.CNIVersion,
		"name":        &c.Name,
		"type":        &c.Type,
		"agentSocket": &c.AgentSocket,
		"logFile":     &c.LogFile,
	} {
		if err := strField(name, dst); err != nil {
			return nil, err
		}
	}
	if v, ok := raw["mtu"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.MTU); err != nil {
			return nil, invalidField("mtu", v, "must be an integer")
		}
	}
	if v, ok := raw["capabilities"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.Capabilities); err != nil {
			return nil, invalidField("capabilities", v, "must be an object of booleans")
		}
	}
	if v, ok := raw["ipam"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.IPAM); err != nil {
			return nil, invalidField("ipam", v, "must be an object")
		}
		if c.IPAM.Type != "" {
			return nil, invalidField("ipam", v, "must be empty: the lumen agent allocates pod addresses")
		}
	}
	if v, ok := raw["dns"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.DNS); err != nil {
			return nil, invalidField("dns", v, "must be a CNI dns object")
		}
	}
	for _, k := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		v, ok := raw[k]
		if !ok || isNull(v) {
			continue
		}
		var atts []types.GCAttachment
		if err := json.Unmarshal(v, &atts); err != nil {
			return nil, invalidField(k, v, "must be a list of {containerID, ifname}")
		}
		c.ValidAttachments = append(c.ValidAttachments, atts...)
	}
	if v, ok := raw["prevResult"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.RawPrevResult); err != nil {
			return nil, invalidField("prevResult", v, "must be an object")
		}
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, invalidField("prevResult", v, err.Error())
		}
	}

	if err := c.validate(raw); err != nil {
		return nil, err
	}
	if c.AgentSocket == "" {
		c.AgentSocket = api.DefaultSocket
	}
	return c, nil
}

func (c *Config) validate(raw map[string]json.RawMessage) error {
	if c.Type == "" {
		return invalidField("type", raw["type"], "must name the plugin binary")
	}
	if c.AgentSocket != "" {
		if !filepath.IsAbs(c.AgentSocket) {
			return invalidField("agentSocket", raw["agentSocket"], "must be an absolute path")
		}
		if len(c.AgentSocket) > maxSocketPath {
			return invalidField("agentSocket", raw["agentSocket"],
				fmt.Sprintf("is %d bytes long; a unix socket path holds at most %d", len(c.AgentSocket), maxSocketPath))
		}
		if strings.ContainsRune(c.AgentSocket, 0) {
			return invalidField("agentSocket", raw["agentSocket"], "must not contain a NUL byte")
		}
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return invalidField("mtu", raw["mtu"],
			fmt.Sprintf("is out of range: want 0 (use the agent's MTU) or %d..%d", MinMTU, MaxMTU))
	}
	if c.LogFile != "" {
		if !filepath.IsAbs(c.LogFile) {
			return invalidField("logFile", raw["logFile"], "must be an absolute path")
		}
		if strings.ContainsRune(c.LogFile, 0) {
			return invalidField("logFile", raw["logFile"], "must not contain a NUL byte")
		}
	}
	return nil
}

func checkUnknownFields(raw map[string]json.RawMessage) error {
	var unknown []string
	for k := range raw {
		if !knownFields[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	k := unknown[0]
	msg := fmt.Sprintf("invalid network config: unknown field %q (value %s)", k, shorten(raw[k]))
	for known := range knownFields {
		if strings.EqualFold(known, k) {
			msg += fmt.Sprintf("; did you mean %q?", known)
			break
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}

func invalidField(name string, value json.RawMessage, why string) error {
	if value == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("invalid network config: field %q is missing: it %s", name, why), "")
	}
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("invalid network config: field %q: %s %s", name, shorten(value), why), "")
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// shorten keeps error messages readable when a field holds a large value.
func shorten(v json.RawMessage) string {
	s := string(bytes.TrimSpace(v))
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
