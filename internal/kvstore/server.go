// Package kvstore is Lumen's cluster state store: an embedded single-member
// etcd server reached over a unix socket, and a small client with list/watch
// helpers for the agents and the CLI.
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lumen-net/lumen/internal/unixsock"
)

// ServerConfig configures the embedded etcd.
type ServerConfig struct {
	// DataDir holds etcd's WAL and snapshots; it is created if missing.
	DataDir string
	// ClientURL is where clients connect, normally "unix:///path/etcd.sock"
	// (agents live in other network namespaces but share the filesystem).
	ClientURL string
	// OnReady, if set, is called once the server accepts requests.
	OnReady func()
}

// startTimeout bounds how long a single-member etcd may take to elect itself.
const startTimeout = time.Minute

// Serve runs an embedded etcd until ctx ends (then it returns nil) or the
// server fails. Shutdown waits a few seconds for open watch streams.
//
// The member listens only on ClientURL: it has no peer listener at all, so it
// never binds a host interface. Its advertised peer URL is a unix socket path
// that nothing listens on; a single-member cluster never dials its peers.
func Serve(ctx context.Context, cfg ServerConfig) error {
	if cfg.DataDir == "" {
		return errors.New("kvstore: data dir is required")
	}
	cu, err := parseEndpoint(cfg.ClientURL)
	if err != nil {
		return err
	}
	listen := *cu
	var priv *unixsock.Private
	if cu.Scheme == "unix" {
		// etcd binds the socket itself: bind it in a private directory and
		// move it into place with mode 0600 (see unixsock).
		if priv, err = unixsock.NewPrivate(socketPath(cu)); err != nil {
			return err
		}
		defer priv.Cleanup()
		listen.Path, listen.Host, listen.Opaque = priv.Path, "", ""
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating etcd data dir: %w", err)
	}

	ec := embed.NewConfig()
	ec.Name = "lumen"
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{listen}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{{Scheme: "unix", Path: filepath.Join(cfg.DataDir, "peer.sock")}}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	// Keep an hour of history so watchers can resume; older revisions are
	// compacted (watchers then resync with a fresh list).
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	var stopping atomic.Bool
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger(&stopping))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("starting etcd on %s: %w", cfg.ClientURL, err)
	}
	if priv != nil {
		if err := priv.Publish(0o600); err != nil {
			e.Close()
			return err
		}
	}
	defer func() {
		// Shutting down logs errors about closed listeners: not news.
		stopping.Store(true)
		e.Close()
	}()

	select {
	case <-e.Server.ReadyNotify():
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd on %s: %w", cfg.ClientURL, err)
	case <-time.After(startTimeout):
		return fmt.Errorf("etcd on %s: not ready after %s", cfg.ClientURL, startTimeout)
	}
	if cfg.OnReady != nil {
		cfg.OnReady()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		if err == nil {
			return fmt.Errorf("etcd on %s stopped", cfg.ClientURL)
		}
		return fmt.Errorf("etcd on %s: %w", cfg.ClientURL, err)
	}
}

// quietLogger logs etcd's warnings and errors to stderr as JSON lines,
// except the expected ones: those about how the lab runs etcd, and all of
// them once shutdown has begun.
func quietLogger(stopping *atomic.Bool) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.WarnLevel)
	return zap.New(&filterCore{Core: core, stopping: stopping})
}

// expectedWarnings are etcd start-up warnings about deliberate choices.
var expectedWarnings = []string{
	"Running http and grpc server on single port",  // one unix socket for both
	"simple token is not cryptographically signed", // auth is off
}

type filterCore struct {
	zapcore.Core
	stopping *atomic.Bool
}

func (c *filterCore) With(f []zapcore.Field) zapcore.Core {
	return &filterCore{Core: c.Core.With(f), stopping: c.stopping}
}

func (c *filterCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.stopping.Load() {
		return ce
	}
	for _, w := range expectedWarnings {
		if strings.HasPrefix(e.Message, w) {
			return ce
		}
	}
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}
