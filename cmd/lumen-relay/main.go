// Command lumen-relay serves one Hubble API for the whole cluster: it finds
// the agents (static --peer addresses and/or a Peer service), merges their
// flow streams in time order and aggregates their status, nodes and
// namespaces. The hubble CLI and `lumen observe` talk to it like to an agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lumen-net/lumen/internal/hubble"
	"github.com/lumen-net/lumen/internal/hubble/relay"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

const version = "0.1.0-dev"

type config struct {
	peers                     []string
	peerService               string
	socket, listen            string
	certFile, keyFile         string
	clientCAs                 []string
	peerTLS                   bool
	peerCAs                   []string
	peerCert, peerKey, peerSN string
	sortWindow                time.Duration
	level                     slog.Level
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("lumen-relay", flag.ContinueOnError)
	list := func(dst *[]string) func(string) error {
		return func(s string) error {
			for _, v := range strings.Split(s, ",") {
				if v = strings.TrimSpace(v); v != "" {
					*dst = append(*dst, v)
				}
			}
			return nil
		}
	}
	var logLevel string
	fs.Func("peer", "agent Hubble address (unix:///path or host:port); repeatable or comma-separated", list(&c.peers))
	fs.StringVar(&c.peerService, "peer-service", "", "address of an agent whose Peer service lists the others")
	fs.StringVar(&c.socket, "socket", "/run/lumen/hubble-relay.sock", "unix socket to serve on (empty: none)")
	fs.StringVar(&c.listen, "listen-address", "", "TCP address to serve on, e.g. :4245 (empty: none)")
	fs.StringVar(&c.certFile, "tls-cert-file", "", "TLS certificate of the TCP listener")
	fs.StringVar(&c.keyFile, "tls-key-file", "", "TLS key of the TCP listener")
	fs.Func("tls-client-ca-files", "CAs of client certificates (mutual TLS); comma-separated", list(&c.clientCAs))
	fs.BoolVar(&c.peerTLS, "peer-tls", false, "use TLS towards agents' TCP addresses")
	fs.Func("peer-tls-ca-files", "CAs that sign the agents' certificates; comma-separated", list(&c.peerCAs))
	fs.StringVar(&c.peerCert, "peer-tls-cert-file", "", "client certificate towards agents (mutual TLS)")
	fs.StringVar(&c.peerKey, "peer-tls-key-file", "", "client key towards agents (mutual TLS)")
	fs.StringVar(&c.peerSN, "peer-tls-server-name", "", "name expected in agents' certificates (default: the peer's announced name)")
	fs.DurationVar(&c.sortWindow, "sort-window", time.Second, "how long a followed flow may wait for other nodes' flows to be sorted with them")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.level.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, fmt.Errorf("log-level: invalid value %q", logLevel)
	}
	switch {
	case len(c.peers) == 0 && c.peerService == "":
		return nil, errors.New("peer, peer-service: give at least one agent address or a peer service")
	case c.socket == "" && c.listen == "":
		return nil, errors.New("socket, listen-address: nothing to serve on")
	case (c.certFile == "") != (c.keyFile == ""):
		return nil, errors.New("tls-cert-file, tls-key-file: give both or neither")
	case c.certFile != "" && c.listen == "":
		return nil, errors.New("tls-cert-file: TLS applies to listen-address, which is not set")
	case len(c.clientCAs) > 0 && c.certFile == "":
		return nil, errors.New("tls-client-ca-files: mutual TLS needs tls-cert-file and tls-key-file")
	case (c.peerCert == "") != (c.peerKey == ""):
		return nil, errors.New("peer-tls-cert-file, peer-tls-key-file: give both or neither")
	case c.sortWindow <= 0:
		return nil, fmt.Errorf("sort-window: invalid value %s: want a positive duration", c.sortWindow)
	}
	for _, p := range c.peers {
		if _, err := transport.Target(p); err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "lumen-relay:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.level}))
	slog.SetDefault(log)
	hubble.Version = "lumen-relay-" + version
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("relay failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	var ctls *transport.ClientTLS
	if cfg.peerTLS {
		ctls = &transport.ClientTLS{Enabled: true, CAFiles: cfg.peerCAs, CertFile: cfg.peerCert, KeyFile: cfg.peerKey, ServerName: cfg.peerSN}
	}
	r, err := relay.New(relay.Options{Peers: cfg.peers, PeerService: cfg.peerService, TLS: ctls, SortWindow: cfg.sortWindow, Log: log})
	if err != nil {
		return err
	}
	var stls *transport.ServerTLS
	if cfg.certFile != "" {
		stls = &transport.ServerTLS{CertFile: cfg.certFile, KeyFile: cfg.keyFile, ClientCAFiles: cfg.clientCAs}
	}
	srv, err := transport.Start(transport.ServerOptions{UnixSocket: cfg.socket, TCPAddress: cfg.listen, TLS: stls, Log: log}, transport.Services{Observer: r})
	if err != nil {
		return err
	}
	log.Info("relay ready", "listen", srv.Addrs(), "peers", cfg.peers, "peerService", cfg.peerService)
	r.Run(ctx)
	srv.Stop()
	return nil
}
