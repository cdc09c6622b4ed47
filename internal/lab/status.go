package lab

// lumen lab status: the report of a lab's store, nodes, agents and pods.

import (
	"context"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// Report is what `lumen lab status` shows.
type Report struct {
	Name    string       `json:"name"`
	Routing string       `json:"routing"`
	Store   StoreReport  `json:"store"`
	Relay   *RelayReport `json:"relay,omitempty"` // the Hubble relay of all nodes
	Nodes   []NodeReport `json:"nodes"`
	Pods    []PodReport  `json:"pods"`

	Clients []ClientState `json:"clients,omitempty"` // external clients
}

// StoreReport describes the lab's store process.
type StoreReport struct {
	URL     string `json:"url"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
}

// NodeReport describes one node and its agent.
type NodeReport struct {
	Name     string      `json:"name"`
	Zone     string      `json:"zone,omitempty"`
	NetNS    string      `json:"netns"`
	NodeIPs  []string    `json:"nodeIPs"`
	PodCIDRs []string    `json:"podCIDRs"`
	Agent    AgentReport `json:"agent"`
}

// Agent health values in a report besides the api.State* ones.
const (
	HealthNotRunning  = "not-running"
	HealthUnreachable = "unreachable"
)

// AgentReport is an agent's process and health.
type AgentReport struct {
	PID       int    `json:"pid"`
	Running   bool   `json:"running"`
	Health    string `json:"health"` // ok, degraded, unreachable, not-running
	Message   string `json:"message,omitempty"`
	Endpoints int    `json:"endpoints"`
}

// PodReport describes one pod.
type PodReport struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Node        string            `json:"node"`
	Labels      map[string]string `json:"labels,omitempty"`
	IPv4        string            `json:"ipv4"`
	IPv6        string            `json:"ipv6"`
	Ports       []Port            `json:"ports"`
	NetNS       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	ServerPID   int               `json:"serverPID"`
	Serving     bool              `json:"serving"`
}

// Status reports a lab's nodes, agents' health and pods.
func Status(ctx context.Context, lab string) (*Report, error) {
	if err := labpath.ValidateName(lab); err != nil {
		return nil, err
	}
	st, err := LoadState(lab)
	if err != nil {
		return nil, err
	}
	r := &Report{Name: st.Name, Routing: st.Routing, Store: StoreReport{URL: st.StoreURL}, Clients: st.Clients}
	if st.Store != nil {
		r.Store.PID, r.Store.Running = st.Store.PID, st.Store.Alive()
	}
	r.Relay = relayReport(st)
	r.Nodes = make([]NodeReport, len(st.Nodes))
	var wg sync.WaitGroup
	for i := range st.Nodes {
		n := &st.Nodes[i]
		r.Nodes[i] = NodeReport{Name: n.Name, Zone: n.Zone, NetNS: n.NetNS, NodeIPs: n.NodeIPs, PodCIDRs: n.PodCIDRs}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Nodes[i].Agent = agentReport(ctx, n)
		}()
	}
	wg.Wait()
	for _, p := range st.Pods {
		pr := PodReport{
			Name: p.Name, Namespace: p.Namespace, Node: p.Node, Labels: p.Labels,
			IPv4: p.IPv4, IPv6: p.IPv6, Ports: p.Ports, NetNS: p.NetNS, ContainerID: p.ContainerID,
		}
		if pr.Ports == nil {
			pr.Ports = []Port{}
		}
		if p.Server != nil {
			pr.ServerPID, pr.Serving = p.Server.PID, p.Server.Alive()
		}
		r.Pods = append(r.Pods, pr)
	}
	return r, nil
}

func agentReport(ctx context.Context, n *NodeState) AgentReport {
	var a AgentReport
	if n.Agent == nil || !n.Agent.Alive() {
		if n.Agent != nil {
			a.PID = n.Agent.PID
		}
		a.Health = HealthNotRunning
		return a
	}
	a.PID, a.Running = n.Agent.PID, true
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := api.NewClient(n.Socket).Status(ctx)
	if err != nil {
		a.Health, a.Message = HealthUnreachable, err.Error()
		return a
	}
	a.Endpoints = s.Endpoints
	if s.Healthy() {
		a.Health = api.StateOK
	} else {
		a.Health, a.Message = api.StateDegraded, unhealthy(s)
	}
	return a
}
