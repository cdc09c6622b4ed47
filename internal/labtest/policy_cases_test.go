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
	np := func(ns, name string) string { return "NetworkPolicy " + ns + "/" + name }
	cnp := func(ns, name string) string { return "CiliumNetworkPolicy " + ns + "/" + name }
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
	{
		pol := cnp("z", "match-expressions")
		cases = append(cases, matrixCase{
			name: "cnp fromEndpoints with matchExpressions",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: match-expressions, namespace: z}
spec:
  endpointSelector:
    matchLabels: {pod: c}
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: pod, operator: In, values: [a, b]}
  - fromEndpoints:
    - matchExpressions:
      - {key: k8s:io.kubernetes.pod.namespace, operator: In, values: [x]}
      - {key: pod, operator: NotIn, values: [a]}
    toPorts:
    - ports: [{port: "81", protocol: ANY}]
  - fromEndpoints:
    - matchExpressions:
      - {key: io.kubernetes.pod.namespace, operator: Exists}
      - {key: pod, operator: DoesNotExist}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z", "c")},
			ingress: func(c cell) side {
				if !dstIs("z/zc")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{
					{pol + " spec.ingress[0]", allOf(srcIn("z"), srcLabel("a", "b"))},
					{pol + " spec.ingress[1]", allOf(srcIn("x"), srcLabel("b", "c"), onPort(81, "tcp", "udp"))},
				})
			},
		})
	}
	{
		pol := cnp("y", "deny-wins")
		cases = append(cases, matrixCase{
			name: "cnp ingressDeny and egressDeny override allows",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-wins, namespace: "y"}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [cluster]
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: x}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
  egress:
  - toEntities: [all]
  egressDeny:
  - toEndpoints:
    - matchLabels: {pod: c}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("y")},
			ingress: func(c cell) side {
				if !dstIn("y")(c) {
					return side{}
				}
				return ingress(c, pol,
					[]rule{{pol + " spec.ingressDeny[0]", allOf(srcIn("x"), onPort(80, "tcp"))}},
					[]rule{{pol + " spec.ingress[0]", func(c cell) bool { return c.src.kind != worldPeer }}})
			},
			egress: func(c cell) side {
				if !srcIn("y")(c) {
					return side{}
				}
				return decide(c, pol, []rule{{pol + " spec.egressDeny[0]", dstIs("y/yc")}}, []rule{{pol + " spec.egress[0]", always}})
			},
		})
	}
	{
		pol := cnp("x", "to-world")
		cases = append(cases, matrixCase{
			name: "cnp toEntities world",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-world, namespace: x}
spec:
  endpointSelector:
    matchLabels: {pod: a}
  egress:
  - toEntities: [world]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x", "a")},
			egress: func(c cell) side {
				if !srcIs("x/xa")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", dstWorld}})
			},
			v6: true,
		})
	}
	{
		pol := cnp("x", "to-cluster")
		cases = append(cases, matrixCase{
			name: "cnp toEntities cluster",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-cluster, namespace: x}
spec:
  endpointSelector:
    matchLabels: {pod: a}
  egress:
  - toEntities: [cluster]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x", "a")},
			egress: func(c cell) side {
				if !srcIs("x/xa")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", func(c cell) bool { return c.dst.kind != worldPeer }}})
			},
		})
	}
	{
		pol := cnp("x", "to-host")
		cases = append(cases, matrixCase{
			name: "cnp toEntities host",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-host, namespace: x}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [host]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("x")},
			egress: func(c cell) side {
				if !srcIn("x")(c) {
					return side{}
				}
				return decide(c, pol, nil, []rule{{pol + " spec.egress[0]", func(c cell) bool { return c.dst.kind == hostPeer && c.dst.node == c.src.node }}})
			},
		})
	}
	{
		pol := cnp("z", "all-but-world")
		cases = append(cases, matrixCase{
			name: "cnp fromEntities all with ingressDeny world",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: all-but-world, namespace: z}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEntities: [world]
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z")},
			ingress: func(c cell) side {
				if !dstIn("z")(c) {
					return side{}
				}
				return ingress(c, pol, []rule{{pol + " spec.ingressDeny[0]", srcWorld}}, []rule{{pol + " spec.ingress[0]", always}})
			},
			v6: true,
		})
	}
	{
		pol := cnp("z", "from-cidr")
		cases = append(cases, matrixCase{
			name: "cnp fromCIDRSet with except",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: from-cidr, namespace: z}
spec:
  endpointSelector:
    matchLabels: {pod: b}
  ingress:
  - fromCIDRSet:
    - {cidr: 10.99.0.96/28, except: [10.99.0.101/32]}
    - {cidr: "fd00:10:99::100/120", except: ["fd00:10:99::101/128"]}
`,
			selects: map[string]func(*peer) bool{pol: podsIn("z", "b")},
			ingress: func(c cell) side {
				if !dstIs("z/zb")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", srcIs("world-a")}})
			},
			v6: true,
		})
	}
	{
		pol := "CiliumClusterwideNetworkPolicy b-from-a"
		cases = append(cases, matrixCase{
			name: "ccnp",
			yaml: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: b-from-a}
spec:
  endpointSelector:
    matchLabels: {pod: b}
  ingress:
  - fromEndpoints:
    - matchLabels: {pod: a}
    toPorts:
    - ports: [{port: "81", protocol: TCP}]
`,
			selects: map[string]func(*peer) bool{pol: podsLabelled("b")},
			ingress: func(c cell) side {
				if !dstLabel("b")(c) {
					return side{}
				}
				return ingress(c, pol, nil, []rule{{pol + " spec.ingress[0]", allOf(srcLabel("a"), onPort(81, "tcp"))}})
			},
		})
	}
	return cases
}
