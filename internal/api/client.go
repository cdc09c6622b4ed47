package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// ErrNotFound is returned when the agent answers 404.
var ErrNotFound = errors.New("not found")

// UnreachableError says the agent's socket could not be reached.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("agent unreachable at %s: %v (is lumen-agent running?)", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client talks to one agent over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Socket returns the socket path the client uses.
func (c *Client) Socket() string { return c.socket }

// Do sends a request with an optional JSON body and decodes a JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &UnreachableError{Socket: c.socket, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s %s: %w", method, path, ErrNotFound)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Raw fetches path and returns the body as is (used for /metrics).
func (c *Client) Raw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &UnreachableError{Socket: c.socket, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// Status returns the agent's health.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Endpoints lists the node's endpoints.
func (c *Client) Endpoints(ctx context.Context) ([]Endpoint, error) {
	var eps []Endpoint
	return eps, c.Do(ctx, http.MethodGet, "/v1/endpoints", nil, &eps)
}

// Endpoint returns the endpoint of one container.
func (c *Client) Endpoint(ctx context.Context, containerID string) (*Endpoint, error) {
	var ep Endpoint
	return &ep, c.Do(ctx, http.MethodGet, "/v1/endpoints/"+url.PathEscape(containerID), nil, &ep)
}

// CreateEndpoint registers a pod whose interface is plugged in.
func (c *Client) CreateEndpoint(ctx context.Context, req *EndpointRequest) (*Endpoint, error) {
	var ep Endpoint
	return &ep, c.Do(ctx, http.MethodPut, "/v1/endpoints/"+url.PathEscape(req.ContainerID), req, &ep)
}

// DeleteEndpoint removes a container's endpoint; ErrNotFound if none.
func (c *Client) DeleteEndpoint(ctx context.Context, containerID string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(containerID), nil, nil)
}

// AllocateIPs reserves pod addresses for owner.
func (c *Client) AllocateIPs(ctx context.Context, owner string) (*IPAMResponse, error) {
	var r IPAMResponse
	return &r, c.Do(ctx, http.MethodPost, "/v1/ipam", &IPAMRequest{Owner: owner}, &r)
}

// ReleaseIPs frees owner's addresses; ErrNotFound if it had none.
func (c *Client) ReleaseIPs(ctx context.Context, owner string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/ipam/"+url.PathEscape(owner), nil, nil)
}

// Explain asks why a packet is allowed or denied.
func (c *Client) Explain(ctx context.Context, req *ExplainRequest) (*Explanation, error) {
	var x Explanation
	return &x, c.Do(ctx, http.MethodPost, "/v1/policy/explain", req, &x)
}
