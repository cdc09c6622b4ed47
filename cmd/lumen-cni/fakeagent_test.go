package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
)

// fakeAgent is a stand-in for lumen-agent that implements only the IPAM and
// endpoint calls of the API, in memory, over a unix socket. It has no
// datapath: it serves the bad-input and error-path tests (duplicate ADD,
// unknown DEL, rollback, CHECK failures), where what matters is what the
// plugin asks and leaves behind, not packets.
type fakeAgent struct {
	socket string

	mu        sync.Mutex
	endpoints map[string]*api.Endpoint
	ipam      map[string]*api.IPAMResponse
	nextIP    int
	nextID    uint16
	calls     []string

	// Injected misbehaviour.
	ipamAnswer *api.IPAMResponse // returned instead of a real allocation
	createErr  string            // PUT /v1/endpoints fails with this message
}

func startFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	a := &fakeAgent{
		socket:    filepath.Join(shortTempDir(t), "agent.sock"),
		endpoints: map[string]*api.Endpoint{},
		ipam:      map[string]*api.IPAMResponse{},
		nextIP:    2,
	}
	l, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatalf("fake agent: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("GET /v1/endpoints", a.listEndpoints)
	mux.HandleFunc("GET /v1/endpoints/{id}", a.getEndpoint)
	mux.HandleFunc("PUT /v1/endpoints/{id}", a.putEndpoint)
	mux.HandleFunc("DELETE /v1/endpoints/{id}", a.deleteEndpoint)
	mux.HandleFunc("POST /v1/ipam", a.allocate)
	mux.HandleFunc("DELETE /v1/ipam/{owner}", a.release)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return a
}

func (a *fakeAgent) record(r *http.Request) {
	a.calls = append(a.calls, r.Method+" "+r.URL.Path)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *fakeAgent) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, &api.Status{Node: "fake", Routing: "native"})
}

func (a *fakeAgent) listEndpoints(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	eps := []api.Endpoint{}
	for _, ep := range a.endpoints {
		eps = append(eps, *ep)
	}
	writeJSON(w, 200, eps)
}

func (a *fakeAgent) getEndpoint(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record(r)
	ep, ok := a.endpoints[r.PathValue("id")]
	if !ok {
		writeJSON(w, 404, api.Error{Error: "endpoint not found"})
		return
	}
	writeJSON(w, 200, ep)
}

func (a *fakeAgent) putEndpoint(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record(r)
	var req api.EndpointRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, 400, api.Error{Error: err.Error()})
		return
	}
	if a.createErr != "" {
		writeJSON(w, 500, api.Error{Error: a.createErr})
		return
	}
	if req.ContainerID != r.PathValue("id") {
		writeJSON(w, 400, api.Error{Error: "containerID does not match the path"})
		return
	}
	a.nextID++
	ep := &api.Endpoint{
		ID: a.nextID, ContainerID: req.ContainerID, PodName: req.PodName, Namespace: req.Namespace,
		NetNS: req.NetNS, IfName: req.IfName, HostIfName: req.HostIfName,
		IPv4: req.IPv4, IPv6: req.IPv6, MAC: req.MAC, State: api.EndpointReady, Created: time.Now(),
	}
	a.endpoints[req.ContainerID] = ep
	writeJSON(w, 200, ep)
}

func (a *fakeAgent) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record(r)
	id := r.PathValue("id")
	if _, ok := a.endpoints[id]; !ok {
		writeJSON(w, 404, api.Error{Error: "endpoint not found"})
		return
	}
	delete(a.endpoints, id)
	w.WriteHeader(204)
}

func (a *fakeAgent) allocate(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record(r)
	var req api.IPAMRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Owner == "" {
		writeJSON(w, 400, api.Error{Error: "bad IPAM request"})
		return
	}
	if res, ok := a.ipam[req.Owner]; ok {
		writeJSON(w, 200, res)
		return
	}
	res := a.ipamAnswer
	if res == nil {
		n := a.nextIP
		a.nextIP++
		res = &api.IPAMResponse{
			IPv4: &api.IPConfig{Address: fmt.Sprintf("10.99.0.%d/32", n), Gateway: "10.99.0.1"},
			IPv6: &api.IPConfig{Address: fmt.Sprintf("fd00:99::%x/128", n), Gateway: "fd00:99::1"},
			MTU:  1400,
		}
	}
	a.ipam[req.Owner] = res
	writeJSON(w, 200, res)
}

func (a *fakeAgent) release(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record(r)
	owner := r.PathValue("owner")
	if _, ok := a.ipam[owner]; !ok {
		writeJSON(w, 404, api.Error{Error: "no addresses for owner"})
		return
	}
	delete(a.ipam, owner)
	w.WriteHeader(204)
}

// state returns copies of what the fake holds for a container.
func (a *fakeAgent) state(id string) (ep *api.Endpoint, ips *api.IPAMResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.endpoints[id]; ok {
		c := *e
		ep = &c
	}
	if r, ok := a.ipam[id]; ok {
		c := *r
		ips = &c
	}
	return ep, ips
}

// callList returns the API calls made so far, as "METHOD /path".
func (a *fakeAgent) callList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *fakeAgent) set(fn func(a *fakeAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn(a)
}
