package labtest

// The truth tables of TestPolicyMatrix, written from the Kubernetes
// NetworkPolicy API reference and the Cilium 1.11 policy language
// documentation, never from Lumen's engine. Points where the two leave
// room, and what the tables assume:
//   - ingress from the endpoint's own node is always allowed (Kubernetes:
//     "traffic to and from the node where a Pod is running is always
//     allowed"; Cilium: --allow-localhost=always); egress to it is not;
//   - another node's address is the remote-node entity: part of cluster,
//     not host, not world;
//   - ipBlock and CIDR rules select addresses outside the cluster only: a
//     pod's or a node's address is never matched by a CIDR, whatever the
//     prefix (Cilium: "CIDR rules do not apply to traffic where both sides
//     are managed by Cilium or use a node IP"); Kubernetes leaves pod IPs in
//     ipBlock to the implementation;
//   - a named port in an egress rule is the destination pod's own port of
//     that name (Kubernetes: "a named port on a pod"), so it allows nothing
//     to peers without pods (world, nodes);
//   - Cilium peer selectors of a namespaced policy are limited to its
//     namespace unless they name the namespace; those of a clusterwide
//     policy match pods of any namespace.

func matrixCases() []matrixCase {
	return append(npMatrixCases(), ciliumMatrixCases()...)
}

// npMatrixCases are the NetworkPolicy cases.
func npMatrixCases() []matrixCase {
	np := func(ns, name string) string { return "NetworkPolicy " + ns + "/" + name }
	var cases []matrixCase

	{
		pol := np("x", "deny-all-ingress")
		cases = append(cases, matrixCase{
			name: "netpol deny-all ingress",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all-ingress, namespace: x}
spec:
  podSelector: {}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x")},
			ingress: func(c cell) side {
				if !dstIn("x")(c) {
					return side{}
				}
				return ingress(c, pol, nil, nil)
			},
			v6: true,
		})
	}
	{
		pol := np("x", "deny-all-egress")
		cases = append(cases, matrixCase{
			name: "netpol deny-all egress",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x")},
			egress: func(c cell) side {
				if !srcIn("x")(c) {
					return side{}
				}
				return decide(c, pol, nil, nil)
			},
			v6: true,
		})
	}
	{
		pol := np("y", "allow-same-namespace")
		cases = append(cases, matrixCase{
			name: "netpol allow same namespace",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-same-namespace, namespace: "y"}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("y")},
			ingress: func(c cell) side {
				if !dstIn("y")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", srcIn("y")}})
			},
		})
	}
	{
		pol := np("x", "from-namespace-y")
		cases = append(cases, matrixCase{
			name: "netpol namespaceSelector",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-namespace-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: "y"}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x", "a")},
			ingress: func(c cell) side {
				if !dstIs("x/xa")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", srcIn("y")}})
			},
			v6: true,
		})
	}
	{
		pol := np("x", "one-peer")
		cases = append(cases, matrixCase{
			name: "netpol podSelector and namespaceSelector in one peer",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: one-peer, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: c}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: In, values: ["y", "z"]}
      podSelector:
        matchLabels: {pod: b}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x", "c")},
			ingress: func(c cell) side {
				if !dstIs("x/xc")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", allOf(srcIn("y", "z"), srcLabel("b"))}})
			},
		})
	}
	{
		pol := np("x", "two-peers")
		cases = append(cases, matrixCase{
			name: "netpol podSelector and namespaceSelector as two peers",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: two-peers, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: c}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: In, values: ["y", "z"]}
    - podSelector:
        matchLabels: {pod: b}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x", "c")},
			ingress: func(c cell) side {
				if !dstIs("x/xc")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", anyOf(srcIn("y", "z"), allOf(srcIn("x"), srcLabel("b")))}})
			},
		})
	}
	{
		pol := np("z", "ipblock")
		cases = append(cases, matrixCase{
			name: "netpol ipBlock with except",
			// The blocks cover every address of the lab: pods, nodes and
			// world clients; only world-a is outside the excepts and not
			// part of the cluster.
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ipblock, namespace: z}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/8
        except: ["{x/xa/4}/32", 10.99.0.101/32]
    - ipBlock:
        cidr: fd00::/8
        except: ["fd00:10:99::101/128"]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z", "a")},
			egress: func(c cell) side {
				if !srcIs("z/za")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", dstIs("world-a")}})
			},
			v6: true,
		})
	}
	{
		pol := np("y", "port-ranges")
		cases = append(cases, matrixCase{
			name: "netpol endPort ranges",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: port-ranges, namespace: "y"}
spec:
  podSelector:
    matchLabels: {pod: b}
  ingress:
  - ports:
    - {protocol: TCP, port: 81, endPort: 1000}
    - {protocol: UDP, port: 1, endPort: 80}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("y", "b")},
			ingress: func(c cell) side {
				if !dstIs("y/yb")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", anyOf(onPort(81, "tcp"), onPort(80, "udp"))}})
			},
		})
	}
	{
		in, out := np("x", "named-in"), np("x", "named-out")
		cases = append(cases, matrixCase{
			name: "netpol named ports",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-in, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - port: serve-81-tcp
    - {protocol: UDP, port: serve-80-udp}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-out, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Egress]
  egress:
  - ports:
    - {protocol: UDP, port: serve-81-udp}
`,
			selects: map[string]func(*peer) bool{in: podsIn("x", "a"), out: podsIn("x", "b")},
			ingress: func(c cell) side {
				if !dstIs("x/xa")(c) {
					return side{}
				}
				return ingress(c, in, nil, []rule{{in + " spec.ingress[0]", allOf(srcPod, anyOf(onPort(81, "tcp"), onPort(80, "udp")))}})
			},
			egress: func(c cell) side {
				if !srcIs("x/xb")(c) {
					return side{}
				}
				return decide(c, out, nil, []rule{{out + " spec.egress[0]", allOf(dstPod, onPort(81, "udp"))}})
			},
		})
	}
	{
		pol := np("z", "default-types")
		cases = append(cases, matrixCase{
			name: "netpol policyTypes default to Ingress and Egress",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-types, namespace: z}
spec:
  podSelector:
    matchLabels: {pod: b}
  egress:
  - to:
    - podSelector:
        matchLabels: {pod: c}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z", "b")},
			ingress: func(c cell) side {
				if !dstIs("z/zb")(c) {
					return side{}
				}
				return ingress(c, pol, nil, nil)
			},
			egress: func(c cell) side {
				if !srcIs("z/zb")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", dstIs("z/zc")}})
			},
		})
	}
	{
		pol := np("z", "egress-only")
		cases = append(cases, matrixCase{
			name: "netpol egress only",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: z}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: x}
    ports:
    - port: 80
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z", "a")},
			egress: func(c cell) side {
				if !srcIs("z/za")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", allOf(dstIn("x"), onPort(80, "tcp"))}})
			},
		})
	}
	{
		pol := np("y", "open-in-closed-out")
		cases = append(cases, matrixCase{
			name: "netpol allow-all ingress and empty egress",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-in-closed-out, namespace: "y"}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - {}
  egress: []
`,
			selects: map[string]func(*peer) bool{pol: podsIn("y")},
			ingress: func(c cell) side {
				if !dstIn("y")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", always}})
			},
			egress: func(c cell) side {
				if !srcIn("y")(c) {
					return side{}
				}
				return decide(c, pol, nil, nil)
			},
		})
	}
	{
		deny, allow := np("x", "deny-all"), np("x", "allow-z-81")
		cases = append(cases, matrixCase{
			name: "netpol union of two policies",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-z-81, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: b}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: z}
    ports:
    - {port: 81, protocol: UDP}
`,
			selects: map[string]func(*peer) bool{deny: podsIn("x"), allow: podsIn("x", "b")},
			ingress: func(c cell) side {
				if !dstIn("x")(c) {
					return side{}
				}
				var allows []rule
				if dstIs("x/xb")(c) {
					allows = []rule{{allow + " spec.ingress[0]", allOf(srcIn("z"), onPort(81, "udp"))}}
				}
				return ingress(c, deny, nil, allows)
			},
		})
	}
	return cases
}
