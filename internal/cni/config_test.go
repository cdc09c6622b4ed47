package cni

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/lumen-net/lumen/internal/api"
)

const goodConfig = `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","agentSocket":"/run/lumen/agent.sock","mtu":0,"logFile":""}`

func TestParseConfigGood(t *testing.T) {
	for _, tc := range []struct {
		name, in       string
		socket, log    string
		mtu            int
		wantPrevResult bool
	}{
		{name: "documented example", in: goodConfig, socket: "/run/lumen/agent.sock"},
		{name: "default socket", in: `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni"}`, socket: api.DefaultSocket},
		{name: "null socket is the default", in: `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","agentSocket":null}`, socket: api.DefaultSocket},
		{name: "all fields", in: `{"cniVersion":"0.4.0","name":"n","type":"lumen-cni","agentSocket":"/x/a.sock","mtu":1400,"logFile":"/var/log/lumen-cni.log","ipam":{},"dns":{"nameservers":["10.0.0.10"]},"capabilities":{"portMappings":true},"runtimeConfig":{"x":1},"args":{"cni":{}}}`,
			socket: "/x/a.sock", mtu: 1400, log: "/var/log/lumen-cni.log"},
		{name: "prevResult from libcni", in: `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"interface":0,"address":"10.1.0.5/32","gateway":"10.1.0.1"}]}}`,
			socket: api.DefaultSocket, wantPrevResult: true},
		{name: "GC attachments (both names libcni sends)", in: `{"cniVersion":"1.1.0","name":"lumen","type":"lumen-cni","cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"abc","ifname":"eth0"}]}`, socket: api.DefaultSocket},
		{name: "max mtu", in: `{"name":"lumen","type":"lumen-cni","mtu":65535}`, socket: api.DefaultSocket, mtu: 65535},
		{name: "min mtu", in: `{"name":"lumen","type":"lumen-cni","mtu":1280}`, socket: api.DefaultSocket, mtu: 1280},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if c.AgentSocket != tc.socket || c.MTU != tc.mtu || c.LogFile != tc.log {
				t.Fatalf("got socket=%q mtu=%d log=%q, want %q %d %q", c.AgentSocket, c.MTU, c.LogFile, tc.socket, tc.mtu, tc.log)
			}
			if (c.PrevResult != nil) != tc.wantPrevResult {
				t.Fatalf("PrevResult = %v, want present=%v", c.PrevResult, tc.wantPrevResult)
			}
		})
	}
}

func TestParseConfigBad(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		code     uint
		want     []string // substrings of the message
	}{
		{"not JSON", `{"name":`, types.ErrDecodingFailure, []string{"not a JSON object"}},
		{"JSON array", `[1,2]`, types.ErrDecodingFailure, []string{"not a JSON object"}},
		{"JSON null", `null`, types.ErrDecodingFailure, []string{"null"}},
		{"unknown field", `{"name":"lumen","type":"lumen-cni","agentSock":"/a"}`, types.ErrInvalidNetworkConfig, []string{`unknown field "agentSock"`, `"/a"`}},
		{"wrong case", `{"name":"lumen","type":"lumen-cni","MTU":1500}`, types.ErrInvalidNetworkConfig, []string{`unknown field "MTU"`, `did you mean "mtu"`}},
		{"mtu string", `{"name":"lumen","type":"lumen-cni","mtu":"1500"}`, types.ErrInvalidNetworkConfig, []string{`field "mtu"`, `"1500"`, "integer"}},
		{"mtu float", `{"name":"lumen","type":"lumen-cni","mtu":1500.5}`, types.ErrInvalidNetworkConfig, []string{`field "mtu"`, `1500.5`}},
		{"mtu too small", `{"name":"lumen","type":"lumen-cni","mtu":576}`, types.ErrInvalidNetworkConfig, []string{`field "mtu"`, "576", "out of range"}},
		{"mtu too big", `{"name":"lumen","type":"lumen-cni","mtu":70000}`, types.ErrInvalidNetworkConfig, []string{`field "mtu"`, "70000"}},
		{"mtu negative", `{"name":"lumen","type":"lumen-cni","mtu":-1}`, types.ErrInvalidNetworkConfig, []string{`field "mtu"`, "-1"}},
		{"relative socket", `{"name":"lumen","type":"lumen-cni","agentSocket":"run/agent.sock"}`, types.ErrInvalidNetworkConfig, []string{`field "agentSocket"`, `"run/agent.sock"`, "absolute"}},
		{"socket not string", `{"name":"lumen","type":"lumen-cni","agentSocket":5}`, types.ErrInvalidNetworkConfig, []string{`field "agentSocket"`, "5", "string"}},
		{"socket too long", `{"name":"lumen","type":"lumen-cni","agentSocket":"/` + strings.Repeat("a", 120) + `"}`, types.ErrInvalidNetworkConfig, []string{`field "agentSocket"`, "121 bytes"}},
		{"relative log", `{"name":"lumen","type":"lumen-cni","logFile":"cni.log"}`, types.ErrInvalidNetworkConfig, []string{`field "logFile"`, `"cni.log"`}},
		{"missing type", `{"name":"lumen"}`, types.ErrInvalidNetworkConfig, []string{`field "type" is missing`}},
		{"empty type", `{"name":"lumen","type":""}`, types.ErrInvalidNetworkConfig, []string{`field "type": ""`}},
		{"ipam section", `{"name":"lumen","type":"lumen-cni","ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, []string{`field "ipam"`, "host-local", "agent allocates"}},
		{"bad prevResult", `{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","prevResult":{"ips":[{"address":"nope"}]}}`, types.ErrInvalidNetworkConfig, []string{`field "prevResult"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.in))
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("ParseConfig(%s) = %v, want a *types.Error", tc.in, err)
			}
			if te.Code != tc.code {
				t.Errorf("code = %d, want %d (%s)", te.Code, tc.code, te.Msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message %q does not mention %q", te.Msg, w)
				}
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		goodConfig,
		`{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni"}`,
		`{"name":"lumen","type":"lumen-cni","mtu":1400,"logFile":"/tmp/x.log","agentSocket":"/a"}`,
		`{"cniVersion":"1.0.0","name":"lumen","type":"lumen-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/32","gateway":"10.1.0.1"}]}}`,
		`{"name":"lumen","type":"lumen-cni","MTU":1}`,
		`{"name":"lumen","type":"lumen-cni","ipam":{"type":"x"}}`,
		`{"cniVersion":"1.1.0","name":"lumen","type":"lumen-cni","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`[]`, `null`, `{`, `{"mtu":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error is not a *types.Error: %T %v", err, err)
			}
			if te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("unexpected code %d: %s", te.Code, te.Msg)
			}
			if te.Msg == "" {
				t.Fatalf("empty error message")
			}
			return
		}
		// Anything accepted is valid and survives a round trip unchanged.
		if c.AgentSocket == "" || c.AgentSocket[0] != '/' || len(c.AgentSocket) > maxSocketPath {
			t.Fatalf("accepted bad agentSocket %q", c.AgentSocket)
		}
		if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
			t.Fatalf("accepted bad mtu %d", c.MTU)
		}
		if c.LogFile != "" && c.LogFile[0] != '/' {
			t.Fatalf("accepted bad logFile %q", c.LogFile)
		}
		if c.Type == "" {
			t.Fatalf("accepted empty type")
		}
		again, err := json.Marshal(map[string]any{
			"cniVersion": c.CNIVersion, "name": c.Name, "type": c.Type,
			"agentSocket": c.AgentSocket, "mtu": c.MTU, "logFile": c.LogFile,
		})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfig(again)
		if err != nil {
			t.Fatalf("re-parsing accepted config %s: %v", again, err)
		}
		if c2.AgentSocket != c.AgentSocket || c2.MTU != c.MTU || c2.LogFile != c.LogFile || c2.Type != c.Type || c2.Name != c.Name {
			t.Fatalf("round trip changed the config: %+v -> %+v", c, c2)
		}
	})
}

func TestHostIfName(t *testing.T) {
	// sha256("abc") = ba7816bf8f01cfea...
	if got := HostIfName("abc"); got != "lxcba7816bf8f0" {
		t.Fatalf("HostIfName(abc) = %q", got)
	}
	long := strings.Repeat("f", 200)
	if n := HostIfName(long); len(n) > 15 || !strings.HasPrefix(n, "lxc") {
		t.Fatalf("HostIfName(long) = %q, want lxc prefix and at most 15 chars", n)
	}
	if HostIfName("a") == HostIfName("b") {
		t.Fatal("different containers share a host interface name")
	}
}

func TestPodAddrs(t *testing.T) {
	good := &api.IPAMResponse{
		IPv4: &api.IPConfig{Address: "10.200.1.7/32", Gateway: "10.200.1.1"},
		IPv6: &api.IPConfig{Address: "fd00:10:200:1::7/128", Gateway: "fd00:10:200:1::1"},
		MTU:  1450,
	}
	addrs, err := podAddrs(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 || addrs[0].hostNet().String() != "10.200.1.7/32" || addrs[1].hostNet().String() != "fd00:10:200:1::7/128" {
		t.Fatalf("podAddrs = %+v", addrs)
	}
	// The pod always gets a host prefix, whatever the agent says.
	addrs, err = podAddrs(&api.IPAMResponse{IPv4: &api.IPConfig{Address: "10.200.1.7/24", Gateway: "10.200.1.1"}})
	if err != nil || addrs[0].hostNet().String() != "10.200.1.7/32" {
		t.Fatalf("podAddrs(/24) = %+v, %v", addrs, err)
	}
	for _, tc := range []struct {
		name string
		r    *api.IPAMResponse
		want string
	}{
		{"none", &api.IPAMResponse{}, "no address"},
		{"bad address", &api.IPAMResponse{IPv4: &api.IPConfig{Address: "10.1.1", Gateway: "10.1.1.1"}}, `ipv4.address "10.1.1"`},
		{"v6 in v4", &api.IPAMResponse{IPv4: &api.IPConfig{Address: "fd00::7/128", Gateway: "10.1.1.1"}}, `ipv4.address "fd00::7/128"`},
		{"bad gateway", &api.IPAMResponse{IPv6: &api.IPConfig{Address: "fd00::7/128", Gateway: "10.1.1.1"}}, `ipv6.gateway "10.1.1.1"`},
		{"gateway is pod", &api.IPAMResponse{IPv4: &api.IPConfig{Address: "10.1.1.1/32", Gateway: "10.1.1.1"}}, `ipv4.gateway "10.1.1.1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := podAddrs(tc.r)
			var te *types.Error
			if !errors.As(err, &te) || te.Code != ErrAgent || !strings.Contains(te.Msg, tc.want) {
				t.Fatalf("podAddrs = %v, want code %d mentioning %q", err, ErrAgent, tc.want)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs("IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if a.K8S_POD_NAME != "web-0" || a.K8S_POD_NAMESPACE != "shop" {
		t.Fatalf("parseArgs = %+v", a)
	}
	for _, in := range []string{"K8S_POD_NAME=web-0;FOO=bar", "K8S_POD_NAME"} {
		_, err = parseArgs(in)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, "CNI_ARGS") {
			t.Fatalf("parseArgs(%q) = %v, want code 4 naming CNI_ARGS", in, err)
		}
	}
}
