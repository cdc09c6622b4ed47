package k8sscale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
)

// agent is a simulated agent: one connection of its own to the API server
// (so its bytes can be counted on the wire, TLS included) and one watch of
// every object of a resource, as a Lumen or Cilium agent keeps. It decodes
// each event's envelope (type, resourceVersion) and counts it.
type agent struct {
	host, path string
	client     *http.Client

	bytes    atomic.Int64 // read from the connection
	events   atomic.Int64 // ADDED, MODIFIED, DELETED
	relists  atomic.Int64
	restarts atomic.Int64

	readyOnce sync.Once
	ready     chan struct{}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func newAgent(base *rest.Config, path string) (*agent, error) {
	a := &agent{path: path, ready: make(chan struct{})}
	cfg := rest.CopyConfig(base)
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	// A Dial of its own also gives the agent a transport (and connection)
	// of its own: client-go shares transports only between equal configs
	// without one.
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: conn, n: &a.bytes}, nil
	}
	cfg.UserAgent = "lumen-bench-agent"
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("agent client: %w", err)
	}
	a.client, a.host = hc, cfg.Host
	return a, nil
}

var errGone = errors.New("resource version too old")

// run watches from resourceVersion rv until ctx is done, resuming after a
// watch ends and listing again after 410 Gone, as a reflector does.
func (a *agent) run(ctx context.Context, rv string) {
	for ctx.Err() == nil {
		if rv == "" {
			var err error
			if rv, err = a.list(ctx); err != nil {
				sleep(ctx, time.Second)
				continue
			}
		}
		err := a.watch(ctx, &rv)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errGone):
			a.relists.Add(1)
			rv = ""
		default:
			a.restarts.Add(1)
			if err != nil {
				sleep(ctx, 200*time.Millisecond)
			}
		}
	}
}

func (a *agent) get(ctx context.Context, q url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.host+a.path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode == http.StatusGone {
			return nil, errGone
		}
		return nil, fmt.Errorf("GET %s: %s: %s", a.path, resp.Status, body)
	}
	return resp, nil
}

// list reads every object (from the watch cache) and returns the list's
// resourceVersion.
func (a *agent) list(ctx context.Context) (string, error) {
	resp, err := a.get(ctx, url.Values{"resourceVersion": {"0"}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []struct{} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return "", fmt.Errorf("decoding list: %w", err)
	}
	return l.Metadata.ResourceVersion, nil
}

// watchEvent is the part of a watch event an agent needs to resume.
type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Code int `json:"code"` // of an ERROR's Status
	} `json:"object"`
}

func (a *agent) watch(ctx context.Context, rv *string) error {
	resp, err := a.get(ctx, url.Values{
		"watch": {"true"}, "resourceVersion": {*rv}, "allowWatchBookmarks": {"true"}, "timeoutSeconds": {"1800"},
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	a.readyOnce.Do(func() { close(a.ready) })
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch ev.Type {
		case "ADDED", "MODIFIED", "DELETED":
			a.events.Add(1)
			*rv = ev.Object.Metadata.ResourceVersion
		case "BOOKMARK":
			*rv = ev.Object.Metadata.ResourceVersion
		case "ERROR":
			if ev.Object.Code == http.StatusGone {
				return errGone
			}
			return fmt.Errorf("watch error %d", ev.Object.Code)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// fleet is the agents of one mode.
type fleet struct {
	agents []*agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startFleet starts n agents watching path from rv and waits until every
// watch is established.
func startFleet(ctx context.Context, cfg *rest.Config, path, rv string, n int) (*fleet, error) {
	f := &fleet{}
	actx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	for range n {
		a, err := newAgent(cfg, path)
		if err != nil {
			f.stop()
			return nil, err
		}
		f.agents = append(f.agents, a)
	}
	// Connect a few at a time: a thousand TLS handshakes at once only
	// measure the handshakes.
	sem := make(chan struct{}, 16)
	for _, a := range f.agents {
		f.wg.Go(func() {
			sem <- struct{}{}
			go func() {
				select {
				case <-a.ready:
				case <-actx.Done():
				}
				<-sem
			}()
			a.run(actx, rv)
		})
	}
	deadline := time.After(10 * time.Minute)
	for i, a := range f.agents {
		select {
		case <-a.ready:
		case <-deadline:
			f.stop()
			return nil, fmt.Errorf("only %d of %d agents are watching after 10 minutes", i, n)
		case <-ctx.Done():
			f.stop()
			return nil, ctx.Err()
		}
	}
	return f, nil
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
	for _, a := range f.agents {
		a.client.CloseIdleConnections()
	}
}

// totals sums the agents' counters.
func (f *fleet) totals() (events, bytes, relists, restarts int64) {
	for _, a := range f.agents {
		events += a.events.Load()
		bytes += a.bytes.Load()
		relists += a.relists.Load()
		restarts += a.restarts.Load()
	}
	return
}
