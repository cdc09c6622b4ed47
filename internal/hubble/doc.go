// Package hubble holds what Lumen's Hubble-compatible flow observability
// shares between the agent, the relay and the CLI: the gRPC service names
// and the version reported to clients. The pieces live in subpackages:
//
//   - parser: datapath events -> flow.Flow, with an enricher for names
//   - filters: FlowFilter allow/deny lists -> predicates
//   - observer: the flow ring, lost-event accounting and the Observer API
//   - fieldmask: GetFlowsRequest.field_mask support
//   - peer: the Peer service (which agents exist, where to reach them)
//   - relay: merges the agents' flow streams (lumen-relay)
//   - metrics: Prometheus metrics derived from flows
//   - transport: unix/TCP listeners, TLS and mTLS, client dialing
//   - printer: flow output for `lumen observe`
//   - server: the agent's flow pipeline (reader -> observer -> gRPC), with
//     enricher (names of flow endpoints), announce (peer announcements in
//     the store), reader and ringloss (lost-event reports)
package hubble

// ObserverServiceName is the gRPC health service the hubble CLI checks.
const ObserverServiceName = "hubble.server.Observer"

// Version is reported by ServerStatus and GetNodes.
var Version = "lumen-0.1.0-dev"
