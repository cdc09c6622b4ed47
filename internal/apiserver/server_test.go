package apiserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/ipam"
)

// noDatapath stands in for the kernel datapath in tests of request
// validation, which must reject bad input before touching the datapath.
type noDatapath struct{ t *testing.T }

func (d noDatapath) fail() error {
	d.t.Error("datapath touched by a request that should have been rejected")
	return errors.New("unexpected")
}
func (d noDatapath) UpsertEndpoint(netip.Addr, datapath.EndpointInfo) error { return d.fail() }
func (d noDatapath) DeleteEndpoint(netip.Addr) error                        { return d.fail() }
func (d noDatapath) Attach(datapath.Hook, int) error                        { return d.fail() }
func (d noDatapath) Detach(datapath.Hook, int) error                        { return d.fail() }

func newTestServer(t *testing.T) (*api.Client, *ipam.IPAM) {
	dir := t.TempDir()
	pods, err := ipam.New(netip.MustParsePrefix("10.200.1.0/24"), netip.MustParsePrefix("fd00:10:200:1::/64"), filepath.Join(dir, "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	eps, err := endpoint.New(noDatapath{t}, dir, endpoint.Hooks{}, log)
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(&Backend{Status: func() api.Status { return api.Status{Node: "n1"} }, Endpoints: eps, IPAM: pods, MTU: 1500, Log: log})
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, h) }()
	t.Cleanup(func() { cancel(); <-done })
	c := api.NewClient(sock)
	for i := 0; i < 500; i++ {
		if _, err := c.Status(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, pods
}

func TestBadRequestsNameTheField(t *testing.T) {
	c, _ := newTestServer(t)
	ctx := context.Background()
	good := api.EndpointRequest{ContainerID: "c1", HostIfName: api.HostIfName("c1"), MAC: "02:00:00:00:00:01", IPv4: "10.200.1.2"}
	cases := []struct {
		name string
		mod  func(r *api.EndpointRequest)
		want string
	}{
		{"empty container", func(r *api.EndpointRequest) { r.ContainerID = "" }, "containerID"},
		{"path in container", func(r *api.EndpointRequest) { r.ContainerID = "../x" }, `containerID "../x"`},
		{"bad ipv4", func(r *api.EndpointRequest) { r.IPv4 = "10.200.1.999" }, `ipv4 "10.200.1.999"`},
		{"v6 as v4", func(r *api.EndpointRequest) { r.IPv4 = "fd00::1" }, `ipv4 "fd00::1"`},
		{"bad mac", func(r *api.EndpointRequest) { r.MAC = "zz" }, `mac "zz"`},
		{"no address", func(r *api.EndpointRequest) { r.IPv4 = "" }, "at least one address"},
		{"no host if", func(r *api.EndpointRequest) { r.HostIfName = "" }, "hostIfName"},
		// The node's uplink (or any device but the container's own veth),
		// refused before anything is attached to it, as the CNI plugin does.
		{"node uplink", func(r *api.EndpointRequest) { r.HostIfName = "eth0" }, `hostIfName "eth0": not the host side of container "c1"'s veth`},
		{"lo", func(r *api.EndpointRequest) { r.HostIfName = "lo" }, `hostIfName "lo"`},
		{"another container's veth", func(r *api.EndpointRequest) { r.HostIfName = api.HostIfName("c2") }, "hostIfName"},
	}
	for _, tc := range cases {
		req := good
		tc.mod(&req)
		if req.ContainerID == "" || strings.Contains(req.ContainerID, "/") {
			// The URL cannot carry these: send to a fixed path.
			err := c.Do(ctx, http.MethodPut, "/v1/endpoints/x", &req, nil)
			if err == nil || !strings.Contains(err.Error(), "containerID") {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		_, err := c.CreateEndpoint(ctx, &req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	// Addresses the node's IPAM did not hand out are refused.
	req := good
	_, err := c.CreateEndpoint(ctx, &req)
	if err == nil {
		t.Error("endpoint with unallocated addresses accepted")
	}
}

func TestUnknownFieldsAndNotFound(t *testing.T) {
	c, _ := newTestServer(t)
	ctx := context.Background()
	err := c.Do(ctx, http.MethodPost, "/v1/ipam", map[string]string{"ownr": "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), `unknown field "ownr"`) {
		t.Errorf("unknown field: %v", err)
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/ipam", &api.IPAMRequest{}, nil); err == nil || !strings.Contains(err.Error(), "owner") {
		t.Errorf("empty owner: %v", err)
	}
	if err := c.DeleteEndpoint(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("DELETE unknown endpoint: %v, want not found", err)
	}
	if err := c.ReleaseIPs(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("release unknown owner: %v, want not found", err)
	}
	r, err := c.AllocateIPs(ctx, "c9")
	if err != nil || r.IPv4 == nil || r.IPv6 == nil || r.MTU != 1500 || r.IPv4.Gateway != "10.200.1.1" {
		t.Fatalf("allocate: %+v %v", r, err)
	}
}

func TestPanicBecomes500(t *testing.T) {
	var buf strings.Builder
	h := recoverer(slog.New(slog.NewTextHandler(&buf, nil)), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/status", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 500 || !strings.Contains(string(body), "boom") || !strings.Contains(buf.String(), "panic") {
		t.Errorf("code %d body %s log %s", rec.Code, body, buf.String())
	}
}

// TestSocketModeWithUmask000: with umask 000 bind alone would make the API
// socket world-writable (any user could register endpoints); it is 0600.
func TestSocketModeWithUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, http.NotFoundHandler()) }()
	defer func() { cancel(); <-done }()
	var fi os.FileInfo
	for i := 0; i < 1000; i++ {
		var err error
		if fi, err = os.Lstat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fi == nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent socket: %v, want a 0600 socket", fi)
	}
}
