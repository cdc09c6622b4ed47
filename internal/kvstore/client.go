package kvstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultTimeout bounds every single request, so that a store that went away
// turns into an UnreachableError instead of a hang.
const DefaultTimeout = 10 * time.Second

// UnreachableError reports that the store at Endpoint could not be reached.
type UnreachableError struct {
	Endpoint string
	Err      error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("kvstore %s not reachable: %v", e.Endpoint, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// IsUnreachable reports whether err says the store could not be reached.
func IsUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

// KV is one stored key.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
}

// Client talks to an etcd endpoint ("unix:///path" or "http://host:port").
type Client struct {
	endpoint string
	addr     *url.URL
	cli      *clientv3.Client
	// Timeout bounds each request (DefaultTimeout unless changed).
	Timeout time.Duration
}

// New returns a client for endpoint without contacting it.
func New(endpoint string) (*Client, error) {
	u, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		// The store is local (a unix socket): reconnect quickly once it is back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
		// Errors reach callers as return values; clientv3's retry logging is noise.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("kvstore client for %s: %w", endpoint, err)
	}
	return &Client{endpoint: endpoint, addr: u, cli: cli, Timeout: DefaultTimeout}, nil
}

// Dial returns a client for endpoint after checking that the store answers.
func Dial(ctx context.Context, endpoint string) (*Client, error) {
	c, err := New(endpoint)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoint is the URL this client talks to.
func (c *Client) Endpoint() string { return c.endpoint }

// Close releases the connection.
func (c *Client) Close() error { return c.cli.Close() }

// Ping checks that the store answers requests.
func (c *Client) Ping(ctx context.Context) error {
	// A plain dial first gives a fast, precise error (e.g. missing socket).
	if err := c.probe(); err != nil {
		return &UnreachableError{Endpoint: c.endpoint, Err: err}
	}
	_, _, err := c.Get(ctx, "/lumen/ping")
	return err
}

// Get returns the value of key; ok is false when the key does not exist.
func (c *Client) Get(ctx context.Context, key string) (kv KV, ok bool, err error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return KV{}, false, c.wrap(ctx, "get", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, false, nil
	}
	return toKV(resp.Kvs[0].Key, resp.Kvs[0].Value, resp.Kvs[0].CreateRevision, resp.Kvs[0].ModRevision), true, nil
}

// Put stores value at key and returns the new store revision.
func (c *Client) Put(ctx context.Context, key string, value []byte) (int64, error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Put(ctx, key, string(value))
	if err != nil {
		return 0, c.wrap(ctx, "put", key, err)
	}
	return resp.Header.Revision, nil
}

// Delete removes key; deleted is false when it did not exist.
func (c *Client) Delete(ctx context.Context, key string) (deleted bool, err error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Delete(ctx, key)
	if err != nil {
		return false, c.wrap(ctx, "delete", key, err)
	}
	return resp.Deleted > 0, nil
}

// DeletePrefix removes every key under prefix and returns how many there were.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (int64, error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Delete(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, c.wrap(ctx, "delete prefix", prefix, err)
	}
	return resp.Deleted, nil
}

// List returns every key under prefix, sorted by key, and the store revision
// the listing was taken at (watch from revision+1 to continue from it).
func (c *Client) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, c.wrap(ctx, "list", prefix, err)
	}
	kvs := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs = append(kvs, toKV(kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision))
	}
	return kvs, resp.Header.Revision, nil
}

// Create stores value at key only if the key does not exist yet.
func (c *Client) Create(ctx context.Context, key string, value []byte) (created bool, err error) {
	return c.CompareAndPut(ctx, key, value, 0)
}

// CompareAndPut stores value at key only if the key's ModRevision is still
// modRevision (0: only if the key does not exist). ok is false otherwise.
func (c *Client) CompareAndPut(ctx context.Context, key string, value []byte, modRevision int64) (ok bool, err error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRevision)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return false, c.wrap(ctx, "compare-and-put", key, err)
	}
	return resp.Succeeded, nil
}

// CreateAll stores every kv only if none of the keys exists yet, atomically.
// When it does not, it returns the current values of those keys that exist.
func (c *Client) CreateAll(ctx context.Context, kvs ...KV) (created bool, existing []KV, err error) {
	ctx, cancel := c.reqCtx(ctx)
	defer cancel()
	var conds []clientv3.Cmp
	var puts, gets []clientv3.Op
	for _, kv := range kvs {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(kv.Key), "=", 0))
		puts = append(puts, clientv3.OpPut(kv.Key, string(kv.Value)))
		gets = append(gets, clientv3.OpGet(kv.Key))
	}
	resp, err := c.cli.Txn(ctx).If(conds...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		return false, nil, c.wrap(ctx, "create", kvs[0].Key, err)
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			existing = append(existing, toKV(kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision))
		}
	}
	return false, existing, nil
}

func (c *Client) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := c.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return context.WithTimeout(ctx, t)
}

// wrap classifies err. ctx is the request context: when it timed out or the
// server answered Unavailable, the store is called unreachable, with the
// reason found by dialing it directly when that fails.
func (c *Client) wrap(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return fmt.Errorf("kvstore %s %q: %w", op, key, context.Canceled)
	}
	if isUnavailable(err) || ctx.Err() != nil {
		cause := err
		if perr := c.probe(); perr != nil {
			cause = perr
		}
		return &UnreachableError{Endpoint: c.endpoint, Err: cause}
	}
	return fmt.Errorf("kvstore %s %q: %w", op, key, err)
}

func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// probe dials the endpoint's socket or address once.
func (c *Client) probe() error {
	network, addr := "tcp", c.addr.Host
	if c.addr.Scheme == "unix" {
		network, addr = "unix", socketPath(c.addr)
	}
	conn, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

func toKV(k, v []byte, create, mod int64) KV {
	return KV{Key: string(k), Value: v, CreateRevision: create, ModRevision: mod}
}

// parseEndpoint accepts "unix:///abs/path.sock" and "http://host:port".
func parseEndpoint(endpoint string) (*url.URL, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("invalid kvstore endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		if p := socketPath(u); p == "" || !path.IsAbs(p) {
			return nil, fmt.Errorf("invalid kvstore endpoint %q: want unix:///absolute/path.sock", endpoint)
		}
	case "http":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return nil, fmt.Errorf("invalid kvstore endpoint %q: want http://host:port", endpoint)
		}
	default:
		return nil, fmt.Errorf("invalid kvstore endpoint %q: scheme must be unix or http", endpoint)
	}
	return u, nil
}

// socketPath is the file of a unix:// URL ("unix:///run/x.sock" has an empty
// host and the path in Path).
func socketPath(u *url.URL) string { return strings.TrimSuffix(u.Host+u.Path, "/") }
