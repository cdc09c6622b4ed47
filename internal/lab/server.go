package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ServeConfig lists the ports a pod's echo server serves.
type ServeConfig struct {
	TCP, UDP, SCTP []uint16
}

// ServeConfigFor returns the echo server ports of a pod.
func ServeConfigFor(ports []Port) ServeConfig {
	var c ServeConfig
	for _, p := range ports {
		switch p.Protocol {
		case ProtoTCP:
			c.TCP = append(c.TCP, p.Port)
		case ProtoUDP:
			c.UDP = append(c.UDP, p.Port)
		case ProtoSCTP:
			c.SCTP = append(c.SCTP, p.Port)
		}
	}
	return c
}

// Args renders the config as `lumen lab serve` flags.
func (c ServeConfig) Args() []string {
	var args []string
	for _, f := range []struct {
		flag  string
		ports []uint16
	}{{"--tcp", c.TCP}, {"--udp", c.UDP}, {"--sctp", c.SCTP}} {
		if len(f.ports) > 0 {
			args = append(args, f.flag, JoinPorts(f.ports))
		}
	}
	return args
}

// JoinPorts renders ports as "80,81".
func JoinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// ParsePortList parses "80,81" (empty means none).
func ParsePortList(s string) ([]uint16, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid port %q: want 1-65535", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// Serve runs echo servers on every configured port, on all addresses of both
// families, until ctx ends. TCP and SCTP echo the byte stream back; UDP
// echoes each datagram to its sender. A WhoAmI request is answered with the
// namespace's addresses instead. SCTP ports on a kernel without SCTP are
// logged and skipped; any other failure to listen is returned.
func Serve(ctx context.Context, cfg ServeConfig, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		closers []func()
		wg      sync.WaitGroup
		errc    = make(chan error, 1)
	)
	fatal := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	defer func() {
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()

	// The namespace's addresses, read here: the serving goroutines may run
	// on threads of another namespace (tests serve from a switched thread).
	iam := whoAmIAnswer()
	var lc net.ListenConfig
	for _, port := range cfg.TCP {
		l, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("tcp port %d: %w", port, err)
		}
		closers = append(closers, func() { l.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveStream(ctx, log, "tcp", port, iam, func() (io.ReadWriteCloser, error) { return l.Accept() }, fatal)
		}()
	}
	for _, port := range cfg.UDP {
		pc, err := lc.ListenPacket(ctx, "udp", fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("udp port %d: %w", port, err)
		}
		closers = append(closers, func() { pc.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveUDP(ctx, log, port, iam, pc, fatal)
		}()
	}
	for _, port := range cfg.SCTP {
		fd, err := sctpListen(port)
		if errors.Is(err, ErrSCTPUnsupported) {
			log.Error("not serving SCTP port", "port", port, "error", err)
			continue
		}
		if err != nil {
			return err
		}
		var once sync.Once
		// shutdown wakes a thread blocked in accept; close alone does not.
		closers = append(closers, func() {
			once.Do(func() { _ = unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveStream(ctx, log, "sctp", port, iam, func() (io.ReadWriteCloser, error) {
				nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
				if err != nil {
					return nil, err
				}
				return os.NewFile(uintptr(nfd), "sctp-conn"), nil
			}, fatal)
		}()
	}
	log.Info("echo server ready", "tcp", JoinPorts(cfg.TCP), "udp", JoinPorts(cfg.UDP), "sctp", JoinPorts(cfg.SCTP))
	<-ctx.Done()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// serveStream accepts connections and echoes each one back.
func serveStream(ctx context.Context, log *slog.Logger, proto string, port uint16, iam []byte, accept func() (io.ReadWriteCloser, error), fatal func(error)) {
	for {
		c, err := accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) || isTemporary(err) {
				continue
			}
			fatal(fmt.Errorf("%s port %d: accept: %w", proto, port, err))
			return
		}
		go func() {
			defer c.Close()
			if err := answerFirstRead(c, iam); err != nil {
				if !errors.Is(err, io.EOF) {
					log.Debug("echo connection ended", "proto", proto, "port", port, "error", err)
				}
				return
			}
			if _, err := io.Copy(c, c); err != nil {
				log.Debug("echo connection ended", "proto", proto, "port", port, "error", err)
			}
		}()
	}
}

func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// serveUDP echoes every datagram to its sender.
func serveUDP(ctx context.Context, log *slog.Logger, port uint16, iam []byte, pc net.PacketConn, fatal func(error)) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isTemporary(err) {
				continue
			}
			fatal(fmt.Errorf("udp port %d: %w", port, err))
			return
		}
		reply := buf[:n]
		if isWhoAmI(reply) {
			reply = iam
		} else if string(reply) == WhoIsPeer {
			reply = peerAnswer(from)
		}
		if _, err := pc.WriteTo(reply, from); err != nil {
			log.Debug("udp echo failed", "port", port, "to", from, "error", err)
		}
	}
}
