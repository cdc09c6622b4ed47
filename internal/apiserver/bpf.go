package apiserver

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
)

// bpfHandlers serve the maps as the kernel holds them.
func bpfHandlers(mux *http.ServeMux, dp *datapath.Datapath, pm *datapath.PolicyMap) {
	mux.HandleFunc("GET /v1/bpf/endpoints", func(w http.ResponseWriter, r *http.Request) {
		eps, err := dp.ListEndpoints()
		if err != nil {
			fail(w, err)
			return
		}
		out := []api.BPFEndpoint{}
		for ip, e := range eps {
			out = append(out, api.BPFEndpoint{IP: ip.String(), IfIndex: e.IfIndex, ID: e.ID, Identity: e.Identity, Flags: e.Flags, MAC: e.MAC.String(), HostMAC: e.HostMAC.String()})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID || out[i].ID == out[j].ID && out[i].IP < out[j].IP })
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/bpf/ipcache", func(w http.ResponseWriter, r *http.Request) {
		entries, err := dp.ListIPCache()
		if err != nil {
			fail(w, err)
			return
		}
		out := []api.BPFIPCache{}
		for _, e := range entries {
			row := api.BPFIPCache{Prefix: e.Prefix.String(), Identity: e.Identity}
			switch {
			case e.Node:
				row.NodeOf = "-"
				if e.Tunnel.IsValid() {
					row.NodeOf = e.Tunnel.String()
				}
			case e.Tunnel.IsValid():
				row.Tunnel = e.Tunnel.String()
			}
			out = append(out, row)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/bpf/ct", func(w http.ResponseWriter, r *http.Request) {
		entries, err := dp.ListCT()
		if err != nil {
			fail(w, err)
			return
		}
		out := []api.BPFCT{}
		for _, e := range entries {
			dir := "egress"
			switch {
			case e.Ingress:
				dir = "ingress"
			case e.Service:
				dir = fmt.Sprintf("service(backend %d)", e.BackendID)
			}
			out = append(out, api.BPFCT{
				Direction: dir, Proto: e.Proto,
				Src: hostPort(e.Src.String(), e.SrcPort), Dst: hostPort(e.Dst.String(), e.DstPort),
				Packets: e.Packets, Bytes: e.Bytes, SrcIdentity: e.SrcIdentity,
				SeenReply: e.SeenReply, Closing: e.Closing, IdleSeconds: uint64(e.Idle.Seconds()),
			})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Src+out[i].Dst < out[j].Src+out[j].Dst })
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("DELETE /v1/bpf/ct", func(w http.ResponseWriter, r *http.Request) {
		n, err := dp.FlushConntrack()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]int{"deleted": n})
	})
	mux.HandleFunc("GET /v1/bpf/lb", func(w http.ResponseWriter, r *http.Request) {
		svcs, err := dp.Services()
		if err != nil {
			fail(w, err)
			return
		}
		backends, err := dp.Backends()
		if err != nil {
			fail(w, err)
			return
		}
		out := []api.BPFService{}
		for _, s := range svcs {
			row := api.BPFService{Frontend: hostPort(s.Addr.String(), s.Port), Proto: s.Proto, Scope: s.Scope, RevNat: s.RevNat, Flags: s.Flags}
			for _, id := range s.Backends {
				b := backends[id]
				row.Backends = append(row.Backends, api.BPFBackend{ID: id, Address: hostPort(b.Addr.String(), b.Port), Terminating: b.Terminating})
			}
			out = append(out, row)
		}
		sort.Slice(out, func(i, j int) bool {
			return out[i].Frontend < out[j].Frontend || out[i].Frontend == out[j].Frontend && out[i].Scope < out[j].Scope
		})
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/bpf/policy/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 16)
		if err != nil {
			fail(w, badRequest(fmt.Errorf("endpoint id %q: want a number between 0 and 65535", r.PathValue("id"))))
			return
		}
		entries, err := pm.Dump(uint16(id))
		if err != nil {
			fail(w, err)
			return
		}
		out := []api.BPFPolicy{}
		for _, e := range entries {
			row := api.BPFPolicy{Direction: "ingress", Identity: e.Identity, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Verdict: "allow"}
			if e.Egress {
				row.Direction = "egress"
			}
			if e.Deny {
				row.Verdict = "deny"
			}
			out = append(out, row)
		}
		reply(w, http.StatusOK, out)
	})
}

func hostPort(ip string, port uint16) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}
