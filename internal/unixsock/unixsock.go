// Package unixsock creates unix sockets with their final mode from the
// first moment they can be reached.
//
// bind(2) creates the socket file with 0777 minus the umask: with umask 000
// a socket is world-writable (anyone may connect) until a chmod. The umask
// is process-wide, so changing it around bind races with every other thread
// of a Go process. Instead the socket is bound inside a fresh directory only
// its owner can enter (0700), given its mode there, and renamed into place:
// the path never names a socket with a wider mode.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Private is a path in a fresh 0700 directory next to path (same file
// system, so the socket can be renamed onto path).
type Private struct {
	Path  string // where to bind
	dir   string
	final string
}

// NewPrivate makes the private directory for a socket that will live at
// path, creating path's directory (0755) if needed.
func NewPrivate(path string) (*Private, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(dir, ".sock-") // 0700
	if err != nil {
		return nil, fmt.Errorf("creating private dir for %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	return &Private{Path: filepath.Join(tmp, filepath.Base(path)), dir: tmp, final: path}, nil
}

// Publish gives the bound socket its mode and renames it onto the final
// path (replacing a stale socket there), then removes the private dir.
func (p *Private) Publish(mode os.FileMode) error {
	defer p.Cleanup()
	if err := os.Chmod(p.Path, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p.Path, err)
	}
	if err := os.Rename(p.Path, p.final); err != nil {
		return fmt.Errorf("moving socket to %s: %w", p.final, err)
	}
	return nil
}

// Cleanup removes the private directory and whatever is left in it.
func (p *Private) Cleanup() { _ = os.RemoveAll(p.dir) }

// Listen listens on a unix socket at path whose mode is mode from the
// moment path names it. Closing the listener removes path if it is still
// this socket.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	p, err := NewPrivate(path)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", p.Path)
	if err != nil {
		p.Cleanup()
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the bound path will not exist: path is removed below
	if err := p.Publish(mode); err != nil {
		ln.Close()
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &listener{UnixListener: ul, path: path, fi: fi}, nil
}

type listener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

// Close closes the listener and removes its socket file, unless another
// one replaced it meanwhile.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.fi) {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}
