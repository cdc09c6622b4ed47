package labtest

// The CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy cases of
// TestPolicyMatrix (see policy_cases_test.go for what the tables assume).

func ciliumMatrixCases() []matrixCase {
	cnp := func(ns, name string) string { return "CiliumNetworkPolicy " + ns + "/" + name }
	var cases []matrixCase
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
