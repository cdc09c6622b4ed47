// Package transport serves and dials Hubble's gRPC API: a unix socket
// (plaintext, protected by its file mode) and an optional TCP listener with
// TLS or mutual TLS, the grpc.health.v1 service reporting the observer
// SERVING, and client connections to agents and relays.
package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/lumen-net/lumen/internal/hubble"
	"github.com/lumen-net/lumen/internal/unixsock"
)

// ServerTLS names the files of a TLS listener. With ClientCAFiles, clients
// must present a certificate signed by one of them (mTLS).
type ServerTLS struct {
	CertFile, KeyFile string
	ClientCAFiles     []string
}

// Config loads the certificates.
func (t *ServerTLS) Config() (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("tls: both a certificate and a key file are required")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s and %s: %w", t.CertFile, t.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if len(t.ClientCAFiles) > 0 {
		pool, err := loadPool(t.ClientCAFiles)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tls: reading CA %s: %w", f, err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tls: no PEM certificate in CA file %s", f)
		}
	}
	return pool, nil
}

// Services are what a server offers; Peer is optional.
type Services struct {
	Observer observerpb.ObserverServer
	Peer     peerpb.PeerServer
}

// ServerOptions configure Serve.
type ServerOptions struct {
	// UnixSocket is a socket path ("" for none); a stale file is replaced.
	UnixSocket string
	// TCPAddress is a host:port to listen on ("" for none).
	TCPAddress string
	// TLS secures the TCP listener; nil serves it in plaintext.
	TLS *ServerTLS
	Log *slog.Logger
}

// Server is a running set of listeners.
type Server struct {
	servers []*grpc.Server
	addrs   []string
	health  *health.Server
	wg      sync.WaitGroup
	log     *slog.Logger
	once    sync.Once
}

// Addrs returns the listening addresses ("unix:///path", "host:port").
func (s *Server) Addrs() []string { return s.addrs }

// Start opens the listeners and serves in the background.
func Start(o ServerOptions, svc Services) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.UnixSocket == "" && o.TCPAddress == "" {
		return nil, errors.New("no listener: set a unix socket or a TCP address")
	}
	s := &Server{health: health.NewServer(), log: o.Log}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(hubble.ObserverServiceName, healthpb.HealthCheckResponse_SERVING)
	newServer := func(creds credentials.TransportCredentials) *grpc.Server {
		g := grpc.NewServer(
			grpc.Creds(creds),
			// Dead peers are noticed; live but stuck ones only block their own streams.
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		)
		observerpb.RegisterObserverServer(g, svc.Observer)
		if svc.Peer != nil {
			peerpb.RegisterPeerServer(g, svc.Peer)
		}
		healthpb.RegisterHealthServer(g, s.health)
		return g
	}
	if o.UnixSocket != "" {
		ln, err := listenUnix(o.UnixSocket)
		if err != nil {
			return nil, err
		}
		s.serve(newServer(insecure.NewCredentials()), ln, "unix://"+o.UnixSocket)
	}
	if o.TCPAddress != "" {
		creds := insecure.NewCredentials()
		if o.TLS != nil {
			cfg, err := o.TLS.Config()
			if err != nil {
				s.Stop()
				return nil, err
			}
			creds = credentials.NewTLS(cfg)
		} else {
			o.Log.Warn("hubble TCP listener without TLS", "addr", o.TCPAddress)
		}
		ln, err := net.Listen("tcp", o.TCPAddress)
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("listening on %s: %w", o.TCPAddress, err)
		}
		s.serve(newServer(creds), ln, ln.Addr().String())
	}
	return s, nil
}

func (s *Server) serve(g *grpc.Server, ln net.Listener, addr string) {
	s.servers = append(s.servers, g)
	s.addrs = append(s.addrs, addr)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("hubble gRPC server", "addr", addr, "err", err)
		}
	}()
}

// Stop closes the listeners and every stream.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.health.Shutdown()
		for _, g := range s.servers {
			g.Stop()
		}
		s.wg.Wait()
	})
}

// Serve runs the servers until ctx ends.
func Serve(ctx context.Context, o ServerOptions, svc Services) error {
	s, err := Start(o, svc)
	if err != nil {
		return err
	}
	<-ctx.Done()
	s.Stop()
	return nil
}

func listenUnix(path string) (net.Listener, error) {
	return unixsock.Listen(path, 0o600)
}

// ClientTLS configures TLS towards a server; nil or !Enabled is plaintext.
type ClientTLS struct {
	Enabled bool
	// CAFiles verify the server; empty: the system roots.
	CAFiles []string
	// CertFile and KeyFile are the client certificate for mTLS.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

// Config builds the client TLS configuration.
func (t *ClientTLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS13}
	if len(t.CAFiles) > 0 {
		pool, err := loadPool(t.CAFiles)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: loading client certificate %s and %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Target normalizes an address: "unix:///path", "unix:path" and "/path" are
// unix sockets, anything else is host:port.
func Target(addr string) (string, error) {
	switch {
	case addr == "":
		return "", errors.New("empty server address")
	case strings.HasPrefix(addr, "unix://"):
		if len(addr) == len("unix://") {
			return "", fmt.Errorf("server address %q: no socket path", addr)
		}
		return addr, nil
	case strings.HasPrefix(addr, "unix:"):
		return "unix://" + strings.TrimPrefix(addr, "unix:"), nil
	case strings.HasPrefix(addr, "/"):
		return "unix://" + addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("server address %q: want unix:///path or host:port", addr)
	}
	return "passthrough:///" + net.JoinHostPort(host, port), nil
}

// Dial opens a (lazy) client connection.
func Dial(addr string, t *ClientTLS) (*grpc.ClientConn, error) {
	target, err := Target(addr)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if t != nil && t.Enabled && !strings.HasPrefix(target, "unix://") {
		cfg, err := t.Config()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return conn, nil
}
