// Package policy is Lumen's identity-based L3/L4 network policy engine, in
// pure Go: it decodes Kubernetes NetworkPolicy, CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy objects, resolves their selectors against
// the security identities of the cluster, and computes for one endpoint the
// exact set of policy-map entries the datapath enforces.
//
// The output contract is the datapath's: an endpoint has an enforcement flag
// per direction and a list of entries keyed by (identity, direction,
// protocol, port prefix). Lookup implements, in Go, the algorithm the BPF
// program runs on those entries (two longest-prefix matches, one for the
// peer's identity and one for the wildcard identity 0; a deny from either
// wins). Explain answers "why" from the same entries, so an explanation can
// never disagree with what the datapath does.
//
// Semantics follow the Kubernetes NetworkPolicy API and the Cilium policy
// language documentation (see the comments on Decode and Compute for the
// points where Lumen has to choose).
package policy
