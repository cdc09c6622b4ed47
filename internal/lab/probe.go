package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DialInNS opens a TCP or UDP connection whose socket lives in the named
// namespace: it is created on a thread switched into it. The connection can
// then be used from any goroutine.
func DialInNS(nsName, network, address string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := InNamedNS(nsName, func() error {
		var err error
		c, err = net.DialTimeout(network, address, timeout)
		return err
	})
	return c, err
}

// ProbeInNS connects from the named namespace to target over proto, sends a
// payload and waits for its echo. nil means connected.
func ProbeInNS(ctx context.Context, nsName string, target netip.AddrPort, proto string, timeout time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	payload := probePayload()
	deadline := time.Now().Add(timeout)
	switch proto {
	case ProtoTCP:
		c, err := DialInNS(nsName, "tcp", target.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		return echoStream(c, payload)
	case ProtoUDP:
		c, err := DialInNS(nsName, "udp", target.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		return echoUDP(ctx, c, payload, deadline)
	case ProtoSCTP:
		var f *os.File
		err := InNamedNS(nsName, func() error {
			var err error
			f, err = sctpDial(target, timeout)
			return err
		})
		if err != nil {
			return err
		}
		defer f.Close()
		_ = f.SetDeadline(deadline)
		return echoStream(f, payload)
	}
	return fmt.Errorf("unknown protocol %q", proto)
}

func probePayload() []byte {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return []byte("lumen-probe " + hex.EncodeToString(b) + "\n")
}

func echoStream(c io.ReadWriter, payload []byte) error {
	if _, err := c.Write(payload); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("waiting for the echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo mismatch: got %q", got)
	}
	return nil
}

// echoUDP sends the datagram again every few hundred milliseconds until the
// echo arrives, the peer refuses (ICMP unreachable) or the deadline passes.
func echoUDP(ctx context.Context, c net.Conn, payload []byte, deadline time.Time) error {
	buf := make([]byte, 2048)
	for {
		if _, err := c.Write(payload); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		next := time.Now().Add(300 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		_ = c.SetReadDeadline(next)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return fmt.Errorf("waiting for the echo: %w", err)
			}
			if bytes.Equal(buf[:n], payload) {
				return nil
			}
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("waiting for the echo: %w", os.ErrDeadlineExceeded)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Target is the destination of a probe: a pod or a bare address.
type Target struct {
	Host  string // pod name ("name" or "ns/name") or IP address
	Port  Port
	Addr  netip.Addr // set when Host is an IP address
	IsPod bool
}

// ParseTarget parses "HOST:PORT/PROTO" where HOST is a pod name, an IPv4
// address or an IPv6 address in brackets.
func ParseTarget(s string) (Target, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return Target{}, fmt.Errorf("invalid target %q: want POD:PORT/PROTO or IP:PORT/PROTO ([IPv6]:PORT/PROTO)", s)
	}
	host, portStr := s[:i], s[i+1:]
	port, err := ParsePort(portStr)
	if err != nil {
		return Target{}, fmt.Errorf("invalid target %q: %w", s, err)
	}
	if port.Name != "" {
		return Target{}, fmt.Errorf("invalid target %q: want a port number, not a name", s)
	}
	t := Target{Host: host, Port: port}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return Target{}, fmt.Errorf("invalid target %q: unterminated '['", s)
		}
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return Target{}, fmt.Errorf("invalid target %q: %q is not an IPv6 address", s, host)
		}
		t.Addr = a
		return t, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is6() {
			return Target{}, fmt.Errorf("invalid target %q: put IPv6 addresses in brackets, e.g. [%s]:%s", s, host, portStr)
		}
		t.Addr = a
		return t, nil
	}
	if strings.Contains(host, ":") {
		return Target{}, fmt.Errorf("invalid target %q: put IPv6 addresses in brackets", s)
	}
	if !validPodRef(host) {
		return Target{}, fmt.Errorf("invalid target %q: %q is neither a pod (NAME or NAMESPACE/NAME) nor an IP address", s, host)
	}
	t.IsPod = true
	return t, nil
}

// validPodRef accepts "name" and "namespace/name".
func validPodRef(ref string) bool {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		return checkDNSLabel(ref) == ""
	}
	return checkDNSLabel(ns) == "" && checkDNSLabel(name) == ""
}

// ParseFamilies parses --family: "4", "6" or "all".
func ParseFamilies(s string) ([]int, error) {
	switch s {
	case "4", "":
		return []int{4}, nil
	case "6":
		return []int{6}, nil
	case "all":
		return []int{4, 6}, nil
	}
	return nil, fmt.Errorf("invalid --family %q: want 4, 6 or all", s)
}

// ProbeResult is the outcome of one probe.
type ProbeResult struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Address     string `json:"address"`
	Port        uint16 `json:"port"`
	Protocol    string `json:"protocol"`
	Family      int    `json:"family"`
	Connected   bool   `json:"connected"`
	Unsupported bool   `json:"unsupported,omitempty"`
	Error       string `json:"error,omitempty"`
}

// ProbeSpec is one probe to run.
type ProbeSpec struct {
	From   *PodState
	To     string // pod "ns/name", or the address for bare IPs
	Target netip.AddrPort
	Proto  string
}

// RunProbes runs specs with at most parallel probes at a time and returns the
// results in the order of specs.
func RunProbes(ctx context.Context, specs []ProbeSpec, timeout time.Duration, parallel int) []ProbeResult {
	if parallel < 1 {
		parallel = 1
	}
	res := make([]ProbeResult, len(specs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fam := 4
			if sp.Target.Addr().Is6() && !sp.Target.Addr().Is4In6() {
				fam = 6
			}
			r := ProbeResult{
				From:     sp.From.FullName(),
				To:       sp.To,
				Address:  sp.Target.String(),
				Port:     sp.Target.Port(),
				Protocol: sp.Proto,
				Family:   fam,
			}
			err := ProbeInNS(ctx, sp.From.NetNS, sp.Target, sp.Proto, timeout)
			switch {
			case err == nil:
				r.Connected = true
			case errors.Is(err, ErrSCTPUnsupported):
				r.Unsupported = true
				r.Error = ErrSCTPUnsupported.Error()
			default:
				r.Error = err.Error()
			}
			res[i] = r
		}()
	}
	wg.Wait()
	return res
}

// MatrixSpecs lists a probe from every pod to every other pod on every port
// the target serves, for each family.
func MatrixSpecs(st *State, families []int) []ProbeSpec {
	var specs []ProbeSpec
	for i := range st.Pods {
		from := &st.Pods[i]
		for j := range st.Pods {
			to := &st.Pods[j]
			if i == j {
				continue
			}
			for _, fam := range families {
				addr, ok := to.Addr(fam)
				if !ok {
					continue
				}
				for _, p := range to.Ports {
					specs = append(specs, ProbeSpec{From: from, To: to.FullName(), Target: netip.AddrPortFrom(addr, p.Port), Proto: p.Protocol})
				}
			}
		}
	}
	sort.SliceStable(specs, func(a, b int) bool { return specs[a].From.FullName() < specs[b].From.FullName() })
	return specs
}

// ProbeSpecsFor resolves a single `lumen lab probe FROM TO:PORT/PROTO`.
func ProbeSpecsFor(st *State, from string, t Target, families []int) ([]ProbeSpec, error) {
	src, err := st.FindPod(from)
	if err != nil {
		return nil, err
	}
	if !t.IsPod {
		return []ProbeSpec{{From: src, To: t.Addr.String(), Target: netip.AddrPortFrom(t.Addr, t.Port.Port), Proto: t.Port.Protocol}}, nil
	}
	dst, err := st.FindPod(t.Host)
	if err != nil {
		return nil, err
	}
	var specs []ProbeSpec
	for _, fam := range families {
		addr, ok := dst.Addr(fam)
		if !ok {
			return nil, fmt.Errorf("pod %s has no IPv%d address", dst.FullName(), fam)
		}
		specs = append(specs, ProbeSpec{From: src, To: dst.FullName(), Target: netip.AddrPortFrom(addr, t.Port.Port), Proto: t.Port.Protocol})
	}
	return specs, nil
}

// FormatResult renders a result for people.
func FormatResult(r ProbeResult) string {
	s := fmt.Sprintf("%s -> %s %s/%s (IPv%s): ", r.From, r.To, r.Address, r.Protocol, strconv.Itoa(r.Family))
	switch {
	case r.Connected:
		return s + "connected"
	case r.Unsupported:
		return s + "unsupported (" + r.Error + ")"
	}
	return s + "NOT connected: " + r.Error
}
