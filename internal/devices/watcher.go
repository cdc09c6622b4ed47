package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Defaults of WatchConfig.
const (
	DefaultDebounce = 100 * time.Millisecond
	restartDelay    = time.Second
)

// WatchConfig configures Watch.
type WatchConfig struct {
	// NS is the network namespace to watch. The zero value and netns.None()
	// mean the namespace of the calling thread at the time Watch is called.
	NS netns.NsHandle
	// Filter is the --devices override; empty means detection.
	Filter Filter
	// Debounce is how long changes are collected before the devices are
	// detected again (default DefaultDebounce).
	Debounce time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Watch detects the devices, sends the result on the returned channel and
// then follows link, address and route changes, sending the new device list
// (debounced) whenever it differs from the last one sent. The channel holds
// only the latest list: a slow reader skips intermediate states. It is closed
// after ctx is done and everything is released.
//
// Netlink may drop notifications when its socket buffer overflows; the
// watcher then resubscribes and detects from scratch, so it never misses a
// change for long.
func Watch(ctx context.Context, cfg WatchConfig) (<-chan []Device, error) {
	if cfg.Debounce < 0 {
		return nil, fmt.Errorf("devices: debounce %s is negative", cfg.Debounce)
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Keep our own reference to the namespace: resubscriptions happen later
	// from arbitrary threads.
	var ns netns.NsHandle
	var err error
	if cfg.NS > 0 {
		ns, err = dupNS(cfg.NS)
	} else {
		ns, err = netns.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("devices: referencing network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("devices: netlink handle in namespace %s: %w", ns, err)
	}
	w := &watcher{cfg: cfg, ns: ns, h: h, out: make(chan []Device, 1), log: cfg.Logger.With("subsys", "devices")}
	// Subscribe before the first detection so no change falls in between.
	subs, err := w.subscribe(ctx)
	if err != nil {
		w.close()
		return nil, err
	}
	devs, _, err := detect(h, cfg.Filter, w.log)
	if err != nil {
		subs.cancel()
		subs.drain()
		w.close()
		return nil, fmt.Errorf("devices: initial detection: %w", err)
	}
	w.emit(devs)
	go w.run(ctx, subs)
	return w.out, nil
}

type watcher struct {
	cfg  WatchConfig
	ns   netns.NsHandle
	h    *netlink.Handle
	out  chan []Device
	log  *slog.Logger
	last []Device
	sent bool
}

func (w *watcher) close() {
	w.h.Close()
	w.ns.Close()
}

// subscriptions are the three netlink subscriptions of one round.
type subscriptions struct {
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	failed chan error // first subscription error
	ctx    context.Context
	cancel context.CancelFunc
}

func (w *watcher) subscribe(parent context.Context) (*subscriptions, error) {
	ctx, cancel := context.WithCancel(parent)
	s := &subscriptions{failed: make(chan error, 1), ctx: ctx, cancel: cancel}
	onErr := func(err error) {
		if ctx.Err() != nil {
			return // closing the sockets makes Receive fail
		}
		select {
		case s.failed <- err:
		default:
		}
	}
	ns := w.ns
	s.links = make(chan netlink.LinkUpdate)
	if err := netlink.LinkSubscribeWithOptions(s.links, ctx.Done(), netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		s.links = nil
		cancel()
		return nil, fmt.Errorf("devices: subscribing to links: %w", err)
	}
	s.addrs = make(chan netlink.AddrUpdate)
	if err := netlink.AddrSubscribeWithOptions(s.addrs, ctx.Done(), netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		s.addrs = nil
		cancel()
		s.drain()
		return nil, fmt.Errorf("devices: subscribing to addresses: %w", err)
	}
	s.routes = make(chan netlink.RouteUpdate)
	if err := netlink.RouteSubscribeWithOptions(s.routes, ctx.Done(), netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		s.routes = nil
		cancel()
		s.drain()
		return nil, fmt.Errorf("devices: subscribing to routes: %w", err)
	}
	return s, nil
}

// drain reads the update channels until the library closes them, which it
// does once the sockets are closed; its goroutines block on sends otherwise.
func (s *subscriptions) drain() {
	for s.links != nil || s.addrs != nil || s.routes != nil {
		select {
		case _, ok := <-s.links:
			if !ok {
				s.links = nil
			}
		case _, ok := <-s.addrs:
			if !ok {
				s.addrs = nil
			}
		case _, ok := <-s.routes:
			if !ok {
				s.routes = nil
			}
		}
	}
}

func (w *watcher) run(ctx context.Context, subs *subscriptions) {
	defer close(w.out)
	defer w.close()
	for {
		err := w.follow(subs)
		subs.cancel()
		subs.drain()
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("Device watch interrupted, resubscribing", "error", err)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(restartDelay):
			}
			subs, err = w.subscribe(ctx)
			if err == nil {
				break
			}
			w.log.Warn("Resubscribing to netlink failed", "error", err)
		}
		// Changes may have been missed: detect from scratch.
		w.redetect()
	}
}

// follow handles updates until the context ends or a subscription fails.
func (w *watcher) follow(subs *subscriptions) error {
	var timer <-chan time.Time // armed while changes are pending
	changed := func() {
		if timer == nil {
			timer = time.After(w.cfg.Debounce)
		}
	}
	for {
		select {
		case <-subs.ctx.Done():
			return subs.ctx.Err()
		case err := <-subs.failed:
			return err
		case _, ok := <-subs.links:
			if !ok {
				return errors.New("link subscription closed")
			}
			changed()
		case _, ok := <-subs.addrs:
			if !ok {
				return errors.New("address subscription closed")
			}
			changed()
		case _, ok := <-subs.routes:
			if !ok {
				return errors.New("route subscription closed")
			}
			changed()
		case <-timer:
			timer = nil
			if !w.redetect() {
				// Retry later; a failed dump is usually a transient race.
				timer = time.After(restartDelay)
			}
		}
	}
}

// redetect detects the devices and emits them if they changed.
func (w *watcher) redetect() bool {
	devs, _, err := detect(w.h, w.cfg.Filter, w.log)
	if err != nil {
		w.log.Warn("Device detection failed", "error", err)
		return false
	}
	w.emit(devs)
	return true
}

func (w *watcher) emit(devs []Device) {
	if w.sent && slices.EqualFunc(devs, w.last, Device.equal) {
		return
	}
	if !w.sent || !slices.Equal(Names(devs), Names(w.last)) {
		w.log.Info("Devices changed", "devices", Names(devs))
	}
	w.last, w.sent = devs, true
	// Replace a list the reader has not taken yet: only the latest matters.
	select {
	case <-w.out:
	default:
	}
	w.out <- cloneDevices(devs)
}

// cloneDevices copies devs deeply so the reader may keep or modify them.
func cloneDevices(devs []Device) []Device {
	out := make([]Device, len(devs))
	for i, d := range devs {
		d.MAC = slices.Clone(d.MAC)
		d.Addrs = slices.Clone(d.Addrs)
		out[i] = d
	}
	return out
}

// dupNS returns an independent handle to the same namespace as ns.
func dupNS(ns netns.NsHandle) (netns.NsHandle, error) {
	return netns.GetFromPath(fmt.Sprintf("/proc/self/fd/%d", int(ns)))
}
