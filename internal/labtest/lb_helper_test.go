package labtest

// The load-balancing tests need clients whose sockets live in a lab node's
// cgroup (where the node's socket load balancing applies), which the test
// process must not join. So the test binary doubles as that client: started
// through `lumen lab exec WHERE -- <test binary>` with lbHelperEnv set, it
// runs lbHelperMain instead of the tests. It reads commands from stdin, one
// a line, and answers each with one JSON line:
//
//	dial ID tcp|udp ADDR:PORT [SPORT]   open a connection, ask the backend who it is
//	echo ID                             one echo on connection ID
//	stream ID                           echo on connection ID every few ms, in the background
//	stat ID                             echoes and error of connection ID so far
//	close ID
//	many tcp|udp ADDR:PORT N            N short connections, backends counted
//	churn tcp ADDR:PORT                 short connections back to back, in the background
//	churnstop                           stop them, return every connection's start time and backend
//	timeout DURATION                    how long a connection may take (default 5s)
//	whoispeer tcp|udp ADDR:PORT         one exchange: where the server sees this client (seen)
//
// "dial" reports the peer as getpeername (TCP) or recvfrom (UDP) shows it:
// the service frontend when the load balancer translates back; "many" and
// "churn" count a connection whose peer is not the address dialed as failed.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab"
)

const lbHelperEnv = "LUMEN_LBTEST_HELPER"

func init() {
	if os.Getenv(lbHelperEnv) == "1" {
		os.Exit(lbHelperMain(os.Stdin, os.Stdout))
	}
}

// helperReply is the answer to one helper command.
type helperReply struct {
	ID      string         `json:"id,omitempty"`
	OK      bool           `json:"ok"`
	Err     string         `json:"err,omitempty"`
	Peer    string         `json:"peer,omitempty"`  // what getpeername/recvfrom show
	Local   string         `json:"local,omitempty"` // the socket's own address
	Seen    string         `json:"seen,omitempty"`  // whoispeer: the client as the server sees it
	Backend []string       `json:"backend,omitempty"`
	Echoes  int64          `json:"echoes,omitempty"`
	Counts  map[string]int `json:"counts,omitempty"` // many: first backend address -> connections
	Fails   []string       `json:"fails,omitempty"`
	Records []churnRecord  `json:"records,omitempty"`
}

// churnRecord is one connection of a churn run.
type churnRecord struct {
	Start   int64  `json:"start"` // unix ns, before connect
	Backend string `json:"backend,omitempty"`
	Err     string `json:"err,omitempty"`
}

type helperConn struct {
	c      net.Conn
	mu     sync.Mutex // one echo at a time
	echoes atomic.Int64
	errMu  sync.Mutex
	err    error
	stop   chan struct{}
	done   chan struct{}
}

func (h *helperConn) setErr(err error) {
	h.errMu.Lock()
	if h.err == nil {
		h.err = err
	}
	h.errMu.Unlock()
}

func (h *helperConn) getErr() error {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	return h.err
}

func (h *helperConn) echo(i int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	msg := fmt.Sprintf("echo %010d\n", i)
	_ = h.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(h.c, msg); err != nil {
		return fmt.Errorf("echo %d: write: %w", i, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(h.c, got); err != nil {
		return fmt.Errorf("echo %d: read: %w", i, err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo %d: got %q", i, got)
	}
	h.echoes.Add(1)
	return nil
}

func lbHelperMain(in io.Reader, out io.Writer) int {
	conns := map[string]*helperConn{}
	var churn *churnRun
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		r := helperReply{OK: true}
		fail := func(err error) { r.OK, r.Err = false, err.Error() }
		if len(f) > 1 {
			r.ID = f[1]
		}
		switch f[0] {
		case "dial":
			if len(f) < 4 {
				fail(errors.New("dial ID PROTO ADDR [SPORT]"))
				break
			}
			sport := 0
			if len(f) > 4 {
				sport, _ = strconv.Atoi(f[4])
			}
			hc, peer, local, backend, err := helperDial(f[2], f[3], sport)
			r.Peer, r.Local, r.Backend = peer, local, backend
			if err != nil {
				fail(err)
				break
			}
			if hc != nil {
				conns[f[1]] = hc
			}
		case "echo", "stream", "stat", "close":
			hc := conns[r.ID]
			if hc == nil {
				fail(fmt.Errorf("no connection %q", r.ID))
				break
			}
			switch f[0] {
			case "echo":
				if err := hc.echo(hc.echoes.Load()); err != nil {
					hc.setErr(err)
					fail(err)
				}
			case "stream":
				if hc.stop == nil {
					hc.stop, hc.done = make(chan struct{}), make(chan struct{})
					go func() {
						defer close(hc.done)
						for i := int64(0); ; i++ {
							select {
							case <-hc.stop:
								return
							case <-time.After(5 * time.Millisecond):
							}
							if err := hc.echo(hc.echoes.Load()); err != nil {
								hc.setErr(err)
								return
							}
						}
					}()
				}
			case "close":
				if hc.stop != nil {
					close(hc.stop)
					<-hc.done
				}
				hc.c.Close()
				delete(conns, r.ID)
			}
			r.Echoes = hc.echoes.Load()
			if err := hc.getErr(); err != nil {
				fail(err)
			}
		case "many":
			if len(f) < 4 {
				fail(errors.New("many PROTO ADDR N"))
				break
			}
			n, _ := strconv.Atoi(f[3])
			r.ID = ""
			r.Counts = map[string]int{}
			for range n {
				hc, _, _, backend, err := helperDialChecked(f[1], f[2])
				if hc != nil {
					hc.c.Close()
				}
				if err != nil {
					r.Fails = append(r.Fails, err.Error())
					continue
				}
				r.Counts[backend[0]]++
			}
		case "churn":
			if len(f) < 3 || churn != nil {
				fail(errors.New("churn PROTO ADDR (once)"))
				break
			}
			r.ID = ""
			churn = startChurn(f[1], f[2])
		case "whoispeer":
			if len(f) < 3 {
				fail(errors.New("whoispeer PROTO ADDR"))
				break
			}
			r.ID = ""
			peer, local, seen, err := helperWhoIsPeer(f[1], f[2])
			r.Peer, r.Local, r.Seen = peer, local, seen
			if err != nil {
				fail(err)
			}
		case "timeout":
			d, err := time.ParseDuration(r.ID)
			if err != nil {
				fail(err)
				break
			}
			dialTimeout = d
		case "churnstop":
			r.ID = ""
			if churn == nil {
				fail(errors.New("no churn running"))
				break
			}
			r.Records = churn.finish()
			churn = nil
		default:
			fail(fmt.Errorf("unknown command %q", f[0]))
		}
		if err := enc.Encode(r); err != nil {
			return 1
		}
	}
	return 0
}

// dialTimeout bounds each connection (and a UDP exchange).
var dialTimeout = 5 * time.Second

// helperDialChecked is helperDial without a source port, failing when the
// peer the socket sees is not addr.
func helperDialChecked(proto, addr string) (*helperConn, string, string, []string, error) {
	hc, peer, local, backend, err := helperDial(proto, addr, 0)
	if err == nil && peer != addr {
		err = fmt.Errorf("%s %s: the answer came from %s (backend %v), not from the address dialed", proto, addr, peer, backend)
	}
	return hc, peer, local, backend, err
}

// helperDial opens a connection to addr, asks the backend who it is, and
// keeps the connection for TCP (nil for UDP, whose exchange is done).
func helperDial(proto, addr string, sport int) (hc *helperConn, peer, local string, backend []string, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, "", "", nil, err
	}
	switch proto {
	case "tcp":
		d := net.Dialer{Timeout: dialTimeout}
		if sport > 0 {
			d.LocalAddr = &net.TCPAddr{Port: sport}
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				})
				return errors.Join(err, serr)
			}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, "", "", nil, err
		}
		tc := c.(*net.TCPConn)
		if sport > 0 {
			// Closing sends a reset: the same source port is free again at once.
			_ = tc.SetLinger(0)
		}
		peer, local, err = sockNames(tc)
		if err != nil {
			c.Close()
			return nil, "", "", nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		addrs, err := lab.AskWhoAmI(c)
		if err != nil {
			c.Close()
			return nil, peer, local, nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return &helperConn{c: c}, peer, local, addrStrings(addrs), nil
	case "udp":
		// Unconnected: sendmsg picks the backend, recvmsg names the sender.
		laddr := &net.UDPAddr{Port: sport}
		network := "udp4"
		if ap.Addr().Is6() {
			network = "udp6"
		}
		pc, err := net.ListenUDP(network, laddr)
		if err != nil {
			return nil, "", "", nil, err
		}
		defer pc.Close()
		buf := make([]byte, 2048)
		deadline := time.Now().Add(dialTimeout)
		for time.Now().Before(deadline) {
			if _, err := pc.WriteToUDPAddrPort([]byte(lab.WhoAmI), ap); err != nil {
				return nil, "", "", nil, err
			}
			_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return nil, "", "", nil, err
			}
			addrs, err := lab.ParseWhoAmI(string(buf[:n]))
			if err != nil {
				return nil, "", "", nil, err
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			return nil, from.String(), pc.LocalAddr().String(), addrStrings(addrs), nil
		}
		return nil, "", "", nil, fmt.Errorf("udp %s: no answer", addr)
	}
	return nil, "", "", nil, fmt.Errorf("unknown protocol %q", proto)
}

// sockNames returns getpeername and getsockname of a socket, straight from
// the system calls.
func sockNames(c *net.TCPConn) (peer, local string, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", "", err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		var p, l unix.Sockaddr
		if p, serr = unix.Getpeername(int(fd)); serr != nil {
			return
		}
		if l, serr = unix.Getsockname(int(fd)); serr != nil {
			return
		}
		peer, local = sockaddrString(p), sockaddrString(l)
	})
	return peer, local, errors.Join(err, serr)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)).String()
	}
	return fmt.Sprint(sa)
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// churnRun opens short connections back to back until finished.
type churnRun struct {
	stop    chan struct{}
	done    chan struct{}
	records []churnRecord
}

func startChurn(proto, addr string) *churnRun {
	r := &churnRun{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			rec := churnRecord{Start: time.Now().UnixNano()}
			hc, _, _, backend, err := helperDialChecked(proto, addr)
			if hc != nil {
				// A reset: no TIME_WAIT, the ephemeral ports last.
				_ = hc.c.(*net.TCPConn).SetLinger(0)
				hc.c.Close()
			}
			if err != nil {
				rec.Err = err.Error()
			} else {
				rec.Backend = backend[0]
			}
			r.records = append(r.records, rec)
		}
	}()
	return r
}

func (r *churnRun) finish() []churnRecord {
	close(r.stop)
	<-r.done
	return r.records
}

// helperWhoIsPeer asks the server at addr where it sees this client, on a
// fresh connection (TCP) or in one datagram (UDP).
func helperWhoIsPeer(proto, addr string) (peer, local, seen string, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", "", "", err
	}
	switch proto {
	case "tcp":
		c, err := net.DialTimeout("tcp", addr, dialTimeout)
		if err != nil {
			return "", "", "", err
		}
		defer c.Close()
		if peer, local, err = sockNames(c.(*net.TCPConn)); err != nil {
			return "", "", "", err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := lab.AskWhoIsPeer(c)
		if err != nil {
			return peer, local, "", err
		}
		return peer, local, got.String(), nil
	case "udp":
		network := "udp4"
		if ap.Addr().Is6() {
			network = "udp6"
		}
		pc, err := net.ListenUDP(network, &net.UDPAddr{})
		if err != nil {
			return "", "", "", err
		}
		defer pc.Close()
		buf := make([]byte, 2048)
		deadline := time.Now().Add(dialTimeout)
		for time.Now().Before(deadline) {
			if _, err := pc.WriteToUDPAddrPort([]byte(lab.WhoIsPeer), ap); err != nil {
				return "", "", "", err
			}
			_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return "", "", "", err
			}
			got, err := lab.ParseWhoIsPeer(string(buf[:n]))
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if err != nil {
				return from.String(), pc.LocalAddr().String(), "", err
			}
			return from.String(), pc.LocalAddr().String(), got.String(), nil
		}
		return "", "", "", fmt.Errorf("udp %s: no answer", addr)
	}
	return "", "", "", fmt.Errorf("unknown protocol %q", proto)
}
