package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// State is the record of a lab, kept in /run/lumen-lab/<lab>/state.json. It
// is written after every step of `up`, so `down` can clean up a lab that
// failed or crashed halfway.
type State struct {
	Name     string      `json:"name"`
	Routing  string      `json:"routing"`
	BinDir   string      `json:"binDir"`
	Lumen    string      `json:"lumen"` // the lumen binary that runs the store and echo servers
	StoreURL string      `json:"storeURL"`
	Store    *Proc       `json:"store,omitempty"`
	Relay    *Proc       `json:"relay,omitempty"` // lumen-relay (Hubble API of all nodes)
	Nodes    []NodeState `json:"nodes"`
	// AgentArgs are extra flags every agent gets (topology agentArgs and
	// kubeAPIServer).
	AgentArgs []string   `json:"agentArgs,omitempty"`
	Pods      []PodState `json:"pods"`
	Created   time.Time  `json:"created"`
	// Clients are the external clients (topology clients).
	Clients []ClientState `json:"clients,omitempty"`
	// K8s is set for a lab running Kubernetes (lab up --k8s).
	K8s *K8sState `json:"k8s,omitempty"`
}

// NodeState is one node of a running lab.
type NodeState struct {
	Name     string            `json:"name"`
	Zone     string            `json:"zone,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	NetNS    string            `json:"netns"`
	NodeIPs  []string          `json:"nodeIPs"`  // with prefix length
	PodCIDRs []string          `json:"podCIDRs"` // IPv4 then IPv6
	Socket   string            `json:"socket"`
	Cgroup   string            `json:"cgroup,omitempty"` // cgroup v2 dir of the node's pods and socket LB
	Agent    *Proc             `json:"agent,omitempty"`
}

// PodState is one pod of a running lab.
type PodState struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Node        string            `json:"node"`
	Labels      map[string]string `json:"labels,omitempty"`
	Ports       []Port            `json:"ports"`
	NetNS       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	IPv4        string            `json:"ipv4,omitempty"`
	IPv6        string            `json:"ipv6,omitempty"`
	Server      *Proc             `json:"server,omitempty"`
}

// FullName is "namespace/name".
func (p *PodState) FullName() string { return p.Namespace + "/" + p.Name }

// Addr returns the pod's address of family 4 or 6.
func (p *PodState) Addr(family int) (netip.Addr, bool) {
	s := p.IPv4
	if family == 6 {
		s = p.IPv6
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// ContainerID is the stable container ID the lab uses for a pod; it looks
// like a runtime's (64 hex digits).
func ContainerID(lab, namespace, pod string) string {
	h := sha256.Sum256([]byte("lumen-lab/" + lab + "/" + namespace + "/" + pod))
	return hex.EncodeToString(h[:])
}

// Node returns the node called name.
func (s *State) Node(name string) (*NodeState, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], nil
		}
	}
	names := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		names[i] = n.Name
	}
	return nil, fmt.Errorf("no node %q in lab %q (nodes: %s)", name, s.Name, strings.Join(names, ", "))
}

// FindPod resolves "namespace/name", or a bare name that is unique in the lab.
func (s *State) FindPod(ref string) (*PodState, error) {
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		for i := range s.Pods {
			if s.Pods[i].Namespace == ns && s.Pods[i].Name == name {
				return &s.Pods[i], nil
			}
		}
		return nil, fmt.Errorf("no pod %q in lab %q", ref, s.Name)
	}
	var found []*PodState
	for i := range s.Pods {
		if s.Pods[i].Name == ref {
			found = append(found, &s.Pods[i])
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no pod %q in lab %q", ref, s.Name)
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, p := range found {
		names[i] = p.FullName()
	}
	return nil, fmt.Errorf("pod name %q is ambiguous (%s): use NAMESPACE/NAME", ref, strings.Join(names, ", "))
}

// ErrNoLab says a lab has no state: it is not up.
var ErrNoLab = errors.New("lab is not up")

// LoadState reads a lab's state.
func LoadState(lab string) (*State, error) {
	b, err := os.ReadFile(labpath.StateFile(lab))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w (no %s; run `lumen lab up -f TOPOLOGY`)", lab, ErrNoLab, labpath.StateFile(lab))
	}
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading lab state %s: %w", labpath.StateFile(lab), err)
	}
	return &s, nil
}

// save writes the state atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := labpath.StateFile(s.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	if err := os.Rename(tmp, labpath.StateFile(s.Name)); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	return nil
}

// lock takes the lab's lock, serializing up, down and agent restarts. Down
// removes the lock file, so after getting the lock we check that the file is
// still the one at the path; if not, someone removed it meanwhile and we try
// again on the new one.
func lock(lab string) (unlock func(), err error) {
	if err := os.MkdirAll(labpath.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", labpath.RunDir, err)
	}
	for {
		f, err := os.OpenFile(labpath.LockFile(lab), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lab lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking lab %q: %w", lab, err)
		}
		var held, cur unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(labpath.LockFile(lab), &cur) == nil && held.Ino == cur.Ino && held.Dev == cur.Dev {
			return func() { f.Close() }, nil
		}
		f.Close()
	}
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	return parseMountsUnder(string(b), dir), nil
}

func parseMountsUnder(mountinfo, dir string) []string {
	dir = filepath.Clean(dir) + "/"
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if strings.HasPrefix(mp+"/", dir) {
			out = append(out, mp)
		}
	}
	// Deepest first, so nested mounts go before their parents.
	for i := 0; i < len(out); i++ {
		for j := i + 1; j < len(out); j++ {
			if len(out[j]) > len(out[i]) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}
