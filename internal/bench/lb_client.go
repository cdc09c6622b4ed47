package bench

// The connection client of the load-balancing benchmark (lumen bench lb
// client): sequential connections, timed.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// LBClient opens conns TCP connections to target one after the other
// (connect, 32 bytes echoed, close by reset), after warm connections that
// are not counted, and reports rate and latency. A failed connection is
// counted and skipped.
func LBClient(target string, conns, warm int, timeout time.Duration) ConnStats {
	return RunLBClient(LBClientOptions{Target: target, Conns: conns, Warm: warm, Parallel: 1, Timeout: timeout})
}

// LBClientOptions configure RunLBClient.
type LBClientOptions struct {
	Target      string
	Conns, Warm int // measured connections, and those before (in all)
	// Parallel connections at a time (each worker opens its share one
	// after the other).
	Parallel int
	// ConnectOnly: connect and close by reset, no payload (the handshake
	// is the load balancer's part of a connection), with plain blocking
	// system calls rather than Go's net package, so that the client's own
	// work is as small as it gets.
	ConnectOnly bool
	Timeout     time.Duration
}

// RunLBClient opens connections as o says and reports the rate (all
// measured connections over their wall time) and the latencies.
func RunLBClient(o LBClientOptions) ConnStats {
	o.Parallel = max(o.Parallel, 1)
	payload := []byte("lumen-bench-lb 0123456789abcdef\n")
	target, perr := netip.ParseAddrPort(o.Target)
	one := func(buf []byte, connect *time.Duration) error {
		t := time.Now()
		if o.ConnectOnly && perr == nil {
			err := rawConnect(target, o.Timeout)
			*connect = time.Since(t)
			return err
		}
		c, err := net.DialTimeout("tcp", o.Target, o.Timeout)
		if err != nil {
			return err
		}
		*connect = time.Since(t)
		defer c.Close()
		_ = c.(*net.TCPConn).SetLinger(0)
		if o.ConnectOnly {
			return nil
		}
		_ = c.SetDeadline(time.Now().Add(o.Timeout))
		if _, err := c.Write(payload); err != nil {
			return err
		}
		_, err = io.ReadFull(c, buf)
		return err
	}
	type result struct {
		lat, conn []time.Duration
		failed    int
		firstErr  string
	}
	work := func(n int, res *result) {
		buf := make([]byte, len(payload))
		var connect time.Duration
		for range n {
			t := time.Now()
			if err := one(buf, &connect); err != nil {
				res.failed++
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				continue
			}
			res.lat = append(res.lat, time.Since(t))
			res.conn = append(res.conn, connect)
		}
	}
	run := func(total int, results []result) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for w := range o.Parallel {
			wg.Add(1)
			go func() { defer wg.Done(); work(share(total, o.Parallel, w), &results[w]) }()
		}
		wg.Wait()
		return time.Since(start)
	}
	run(o.Warm, make([]result, o.Parallel))
	results := make([]result, o.Parallel)
	cpu0 := processCPU()
	elapsed := run(o.Conns, results)
	cpu := processCPU() - cpu0
	var lat, conn []time.Duration
	failed, firstErr := 0, ""
	for _, r := range results {
		lat, conn = append(lat, r.lat...), append(conn, r.conn...)
		failed += r.failed
		if firstErr == "" {
			firstErr = r.firstErr
		}
	}
	st := withConnect(statsOf(lat, elapsed, failed, firstErr), conn)
	st.Samples, st.ConnectSamples, st.CPU = lat, conn, cpu
	return st
}

// rawConnect connects a blocking socket to target and closes it with a
// reset.
func rawConnect(target netip.AddrPort, timeout time.Duration) error {
	fam := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()}
	if target.Addr().Is6() && !target.Addr().Is4In6() {
		fam = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(target.Port()), Addr: target.Addr().As16()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, sa); errors.Is(err, unix.EINTR) {
		// A signal (Go's preemption) interrupted the wait, not the
		// handshake: wait for it to finish.
		if err := awaitConnect(fd, timeout); err != nil {
			return fmt.Errorf("connect %s: %w", target, err)
		}
	} else if err != nil {
		return fmt.Errorf("connect %s: %w", target, err)
	}
	return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// awaitConnect waits for an interrupted connect of fd to complete.
func awaitConnect(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(time.Until(deadline).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("timed out")
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// processCPU is this process' user + system CPU time.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// share is worker w's part of n split among k.
func share(n, k, w int) int {
	s := n / k
	if w < n%k {
		s++
	}
	return s
}
