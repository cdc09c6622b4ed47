// Package apiserver serves the agent's local API (see internal/api) over a
// unix socket: status, endpoints, IPAM and metrics.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/ipam"
	"github.com/lumen-net/lumen/internal/unixsock"
)

// Backend is what the API serves.
type Backend struct {
	Status    func() api.Status
	Endpoints *endpoint.Manager
	IPAM      *ipam.IPAM
	MTU       int
	Metrics   http.Handler
	Log       *slog.Logger
	// Explain answers POST /v1/policy/explain; optional.
	Explain func(ctx context.Context, req *api.ExplainRequest) (*api.Explanation, error)
	// Services answers GET /v1/services; optional.
	Services func() []api.Service
	// BGPPeers and BGPRoutes answer GET /v1/bgp/peers and /v1/bgp/routes; optional.
	BGPPeers  func(ctx context.Context) []api.BGPPeer
	BGPRoutes func(ctx context.Context) []api.BGPRoute
	// Datapath and Policy serve /v1/bpf/*; optional.
	Datapath *datapath.Datapath
	Policy   *datapath.PolicyMap
}

// Handler returns the API's HTTP handler.
func Handler(b *Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, b.Endpoints.List())
	})
	mux.HandleFunc("GET /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		ep, err := b.Endpoints.Get(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, ep)
	})
	mux.HandleFunc("PUT /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req api.EndpointRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		if req.ContainerID != r.PathValue("id") {
			fail(w, badRequest(fmt.Errorf("containerID %q: does not match the URL's %q", req.ContainerID, r.PathValue("id"))))
			return
		}
		ep, err := b.Endpoints.Create(r.Context(), &req)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusCreated, ep)
	})
	mux.HandleFunc("DELETE /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Endpoints.Delete(r.Context(), r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/ipam", func(w http.ResponseWriter, r *http.Request) {
		var req api.IPAMRequest
		if err := decode(r, &req); err != nil {
			fail(w, err)
			return
		}
		a, err := b.IPAM.Allocate(req.Owner)
		if err != nil {
			fail(w, badRequest(err))
			return
		}
		gw4, gw6 := b.IPAM.Gateways()
		resp := api.IPAMResponse{MTU: b.MTU}
		if a.IPv4.IsValid() {
			resp.IPv4 = &api.IPConfig{Address: netip.PrefixFrom(a.IPv4, 32).String(), Gateway: gw4.String()}
		}
		if a.IPv6.IsValid() {
			resp.IPv6 = &api.IPConfig{Address: netip.PrefixFrom(a.IPv6, 128).String(), Gateway: gw6.String()}
		}
		reply(w, http.StatusOK, resp)
	})
	mux.HandleFunc("DELETE /v1/ipam/{owner}", func(w http.ResponseWriter, r *http.Request) {
		ok, err := b.IPAM.Release(r.PathValue("owner"))
		if err != nil {
			fail(w, err)
			return
		}
		if !ok {
			fail(w, fmt.Errorf("owner %q has no addresses: %w", r.PathValue("owner"), endpoint.ErrNotFound))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	if b.Services != nil {
		mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
			reply(w, http.StatusOK, b.Services())
		})
	}
	if b.BGPPeers != nil {
		mux.HandleFunc("GET /v1/bgp/peers", func(w http.ResponseWriter, r *http.Request) {
			reply(w, http.StatusOK, b.BGPPeers(r.Context()))
		})
	}
	if b.BGPRoutes != nil {
		mux.HandleFunc("GET /v1/bgp/routes", func(w http.ResponseWriter, r *http.Request) {
			reply(w, http.StatusOK, b.BGPRoutes(r.Context()))
		})
	}
	if b.Explain != nil {
		mux.HandleFunc("POST /v1/policy/explain", func(w http.ResponseWriter, r *http.Request) {
			var req api.ExplainRequest
			if err := decode(r, &req); err != nil {
				fail(w, err)
				return
			}
			x, err := b.Explain(r.Context(), &req)
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, http.StatusOK, x)
		})
	}
	if b.Datapath != nil && b.Policy != nil {
		bpfHandlers(mux, b.Datapath, b.Policy)
	}
	if b.Metrics != nil {
		mux.Handle("GET /metrics", b.Metrics)
	}
	return recoverer(b.Log, mux)
}

// Serve listens on the unix socket path (mode 0600 from the start, see
// unixsock) until ctx ends.
func Serve(ctx context.Context, path string, h http.Handler) error {
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type badRequestError struct{ error }

func (e badRequestError) Unwrap() error { return e.error }

func badRequest(err error) error { return badRequestError{err} }

// decode reads a JSON body strictly: unknown fields are an error naming them.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(fmt.Errorf("request body: %w", err))
	}
	return nil
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var br badRequestError
	switch {
	case errors.Is(err, endpoint.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, endpoint.ErrExists):
		code = http.StatusConflict
	case errors.As(err, &br), errors.Is(err, endpoint.ErrInvalid), isBadRequest(err):
		code = http.StatusBadRequest
	}
	reply(w, code, api.Error{Error: err.Error()})
}

// isBadRequest recognises errors that say so themselves.
func isBadRequest(err error) bool {
	var b interface{ BadRequest() bool }
	return errors.As(err, &b) && b.BadRequest()
}

// recoverer turns a handler panic into a 500 so that one bad request never
// takes the agent down.
func recoverer(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("API handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
				reply(w, http.StatusInternalServerError, api.Error{Error: fmt.Sprint("internal error: ", p)})
			}
		}()
		h.ServeHTTP(w, r)
	})
}
