package policy

// The truth tables of CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
// (see truthTable).

var ciliumTruthTables = []truthTable{
	// ---- CiliumNetworkPolicy ----
	{
		name: "cnp fromEndpoints is limited to the policy namespace", rows: []string{"shop/api: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: from-api, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: api}
`},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, true, []string{"CiliumNetworkPolicy shop/from-api spec.ingress[0] fromEndpoints[0] {k8s:app=api, k8s:io.kubernetes.pod.namespace=shop} ports any"}},
			{"dev/api", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by CiliumNetworkPolicy shop/from-api"}},
		},
	},
	{
		name: "cnp endpointSelector is limited to the policy namespace", subject: "dev/web", rows: []string{"*: AAAAAA"},
		policies: []string{cnpHeader + `metadata: {name: from-api, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web, k8s:io.kubernetes.pod.namespace: dev}}
  ingress: [{}]
`},
	},
	{
		name: "cnp fromEndpoints naming another namespace", rows: []string{"dev/api: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: from-dev-api, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: dev, app: api}
`},
	},
	{
		name: "cnp fromEndpoints on namespace labels", rows: []string{"ops/*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: from-team-b, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: b}
`},
	},
	{
		name: "cnp selector sources and expressions", rows: []string{"shop/api: AAAAAA", "host: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: exprs, namespace: shop}
spec:
  endpointSelector:
    matchExpressions:
    - {key: tier, operator: In, values: [front]}
    - {key: k8s:role, operator: DoesNotExist}
  ingress:
  - fromEndpoints:
    - matchLabels: {any:tier: back}
      matchExpressions:
      - {key: app, operator: NotIn, values: [db]}
      - {key: app, operator: Exists}
    - matchLabels: {reserved:host: ""}
`},
		explain: []explainCell{{"host", ProtoTCP, 80, true, []string{"fromEndpoints[1] {reserved:host}"}}},
	},
	{
		name: "cnp endpointSelector NotIn does not select", rows: []string{"*: AAAAAA"},
		policies: []string{cnpHeader + `metadata: {name: not-web, namespace: shop}
spec:
  endpointSelector:
    matchExpressions: [{key: app, operator: NotIn, values: [web]}]
  ingress: [{}]
`},
	},
	{
		name: "cnp endpointSelector NotIn selects", subject: "shop/db", rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: not-web, namespace: shop}
spec:
  endpointSelector:
    matchExpressions: [{key: app, operator: NotIn, values: [web]}]
  ingress: [{}]
`},
		explain: []explainCell{{"shop/web", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by CiliumNetworkPolicy shop/not-web"}}},
	},
	{
		name: "cnp L4-only rule applies to every peer", rows: []string{"*: ADDDDD"},
		policies: []string{cnpHeader + `metadata: {name: l4, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
`},
		explain: []explainCell{{"world", ProtoTCP, 80, true, []string{"spec.ingress[0] any peer (toPorts only) ports TCP/80"}}},
	},
	{
		name: "cnp protocol ANY with a port", rows: []string{"*: DADADA"},
		policies: []string{cnpHeader + `metadata: {name: any81, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports: [{port: "81"}]
`},
		explain: []explainCell{
			{"world", ProtoSCTP, 81, true, []string{"ports ANY/81"}},
			{"world", 1, 0, false, []string{"default deny"}}, // ICMP
		},
	},
	{
		name: "cnp entity host", rows: []string{"host: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpEntities("host")},
		explain:  []explainCell{{"host", ProtoTCP, 80, true, []string{"fromEntities[0] host"}}},
	},
	{
		name: "cnp entity world", rows: []string{"world: AAAAAA", "cidr:*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpEntities("world")},
	},
	{
		name: "cnp entity cluster", rows: []string{"world: DDDDDD", "cidr:*: DDDDDD", "*: AAAAAA"},
		policies: []string{cnpEntities("cluster")},
		explain:  []explainCell{{"remote-node", ProtoUDP, 80, true, []string{"fromEntities[0] cluster"}}},
	},
	{
		name: "cnp entity all", rows: []string{"*: AAAAAA"},
		policies: []string{cnpEntities("all")},
		explain:  []explainCell{{"cidr:8.8.8.0/24", ProtoTCP, 80, true, []string{"fromEntities[0] all"}}},
	},
	{
		name: "cnp entities remote-node and kube-apiserver", rows: []string{"remote-node: AAAAAA", "kube-apiserver: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpEntities("remote-node", "kube-apiserver")},
	},
	{
		name: "cnp entities health, init, unmanaged", rows: []string{"health: AAAAAA", "init: AAAAAA", "unmanaged: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpEntities("health", "init", "unmanaged")},
	},
	{
		name: "cnp CIDR rules with ports",
		rows: []string{"cidr:10.0.0.0/8: ADDDDD", "cidr:10.2.0.0/16: ADDDDD", "cidr:192.0.2.0/24: ADDDDD", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: cidrs, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16]
    fromCIDR: [192.0.2.0/24]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
`},
		explain: []explainCell{
			{"cidr:192.0.2.0/24", ProtoTCP, 80, true, []string{"fromCIDR[0] 192.0.2.0/24 ports TCP/80"}},
			{"cidr:10.2.0.0/16", ProtoTCP, 80, true, []string{"fromCIDRSet[0] 10.0.0.0/8 except 10.1.0.0/16 ports TCP/80"}},
			{"cidr:10.1.2.0/24", ProtoTCP, 80, false, []string{"default deny"}},
		},
	},
	{
		name: "cnp deny overrides allow at L3", rows: []string{"shop/db: DDDDDD", "*: AAAAAA"},
		policies: []string{cnpHeader + `metadata: {name: not-db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {app: db}
`},
		explain: []explainCell{
			{"shop/db", ProtoTCP, 80, false, []string{"denied by 1 deny rule(s)", "spec.ingressDeny[0] fromEndpoints[0] {k8s:app=db, k8s:io.kubernetes.pod.namespace=shop}", "overridden allows:", "spec.ingress[0] fromEntities[0] all"}},
			{"dev/db", ProtoTCP, 80, true, []string{"spec.ingress[0] fromEntities[0] all"}},
		},
	},
	{
		name: "cnp deny at L4 for every peer", rows: []string{"shop/*: DAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: no-80, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
  ingressDeny:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
`},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, false, []string{"spec.ingressDeny[0] any peer (toPorts only) ports TCP/80", "spec.ingress[0] fromEndpoints[0]"}},
			{"shop/api", ProtoTCP, 81, true, []string{"spec.ingress[0] fromEndpoints[0] {k8s:io.kubernetes.pod.namespace=shop}"}},
			{"world", ProtoTCP, 80, false, []string{"denied by", "ingressDeny[0]"}},
			{"world", ProtoTCP, 81, false, []string{"default deny"}},
		},
	},
	{
		name: "cnp deny of one port inside an allowed range", rows: []string{"shop/api: ADDDDD", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: range-deny, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "80", endPort: 81, protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
`},
		explain: []explainCell{{"shop/api", ProtoTCP, 81, false, []string{"spec.ingressDeny[0]", "ports TCP/81", "overridden allows:", "ports TCP/80-81"}}},
	},
	{
		name: "cnp L3 deny beats a narrower L4 allow", rows: []string{"world: AAAAAA", "cidr:*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: l3-deny, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromEntities: [world]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: api}}]
`},
		explain: []explainCell{{"shop/api", ProtoTCP, 80, false, []string{"spec.ingressDeny[0] fromEndpoints[0]", "overridden allows:", "spec.ingress[0] fromEndpoints[0]"}}},
	},
	{
		name: "cnp ingress [{}] enforces and allows nothing", rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + "metadata: {name: lockdown, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n"},
		explain:  []explainCell{{"shop/api", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by CiliumNetworkPolicy shop/lockdown"}}},
	},
	{
		name: "cnp empty ingress list does not enforce", rows: []string{"*: AAAAAA"},
		policies: []string{cnpHeader + "metadata: {name: nothing, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress: []\n"},
		explain:  []explainCell{{"world", ProtoTCP, 80, true, []string{"ingress not enforced", "selected by CiliumNetworkPolicy shop/nothing"}}},
	},
	{
		name: "cnp egress", egress: true,
		rows:     []string{"shop/db: DADDDD", "world: AAAAAA", "cidr:*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpEgress},
		explain: []explainCell{
			{"shop/db", ProtoTCP, 81, true, []string{"spec.egress[0] toEndpoints[0] {k8s:app=db, k8s:io.kubernetes.pod.namespace=shop} ports TCP/81"}},
			{"cidr:10.2.0.0/16", ProtoUDP, 81, true, []string{"spec.egress[1] toEntities[0] world"}},
		},
	},
	{
		name: "cnp egress only: ingress open", rows: []string{"*: AAAAAA"}, policies: []string{cnpEgress},
	},
	{
		name: "cnp specs", rows: []string{"shop/api: AAAAAA", "shop/db: DDDADD", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: multi, namespace: shop}
specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: api}}]}]
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "81", protocol: UDP}]}]
`},
		explain: []explainCell{{"shop/db", ProtoUDP, 81, true, []string{"CiliumNetworkPolicy shop/multi specs[1].ingress[0] fromEndpoints[0]"}}},
	},
	// ---- CiliumClusterwideNetworkPolicy ----
	{
		name: "deny in a CCNP overrides an allow in a NetworkPolicy", rows: []string{"world: DDDDDD", "cidr:*: DDDDDD", "*: AAAAAA"},
		policies: []string{npAllowAllShop, ccnpNoWorld},
		explain: []explainCell{
			{"world", ProtoTCP, 80, false, []string{"CiliumClusterwideNetworkPolicy no-world spec.ingressDeny[0] fromEntities[0] world", "overridden allows:", "NetworkPolicy shop/allow-all spec.ingress[0]"}},
			{"ops/db", ProtoTCP, 80, true, []string{"NetworkPolicy shop/allow-all"}},
		},
	},
	{
		name: "a deny-only policy puts the endpoint in default deny", subject: "dev/web", rows: []string{"*: DDDDDD"},
		policies: []string{npAllowAllShop, ccnpNoWorld},
		explain: []explainCell{
			{"shop/web", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by CiliumClusterwideNetworkPolicy no-world"}},
			{"world", ProtoTCP, 80, false, []string{"denied by"}},
		},
	},
	{
		name: "ccnp nodeSelector selects the host endpoint", subject: "host",
		rows:     []string{"remote-node: ADDADD", "world: DDDDDD", "cidr:*: DDDDDD", "*: DDDADD"},
		policies: []string{ccnpHostFW},
		explain: []explainCell{
			{"remote-node", ProtoTCP, 80, true, []string{"CiliumClusterwideNetworkPolicy host-fw spec.ingress[0] fromEntities[0] remote-node ports TCP/80"}},
			{"shop/web", ProtoUDP, 81, true, []string{"spec.ingress[1] fromEntities[0] cluster ports UDP/81"}},
		},
	},
	{
		name: "ccnp nodeSelector does not select pods", rows: []string{"*: AAAAAA"}, policies: []string{ccnpHostFW},
		explain: []explainCell{{"world", ProtoTCP, 80, true, []string{"no policy selects the endpoint"}}},
	},
	{
		name: "ccnp endpointSelector does not select the host", subject: "host", rows: []string{"*: AAAAAA"},
		policies: []string{ccnpNoWorld, ccnpPodsOnly},
	},
	{
		name: "ccnp fromEndpoints {} means pods of every namespace", rows: []string{"shop/*: AAAAAA", "dev/*: AAAAAA", "ops/*: AAAAAA", "*: DDDDDD"},
		policies: []string{ccnpPodsOnly},
	},
	{
		name: "enableDefaultDeny false: only the deny applies", rows: []string{"world: DDDDDD", "cidr:*: DDDDDD", "*: AAAAAA"},
		policies: []string{ccnpBlockWorldNoDefaultDeny},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, true, []string{"CiliumClusterwideNetworkPolicy block-world spec.enableDefaultDeny.ingress any peer (default allow)"}},
			{"world", ProtoTCP, 80, false, []string{"spec.ingressDeny[0] fromEntities[0] world"}},
		},
	},
	{
		name: "enableDefaultDeny false with another default-deny policy", rows: []string{"shop/*: AAAAAA", "*: DDDDDD"},
		policies: []string{ccnpBlockWorldNoDefaultDeny, npHeader + `metadata: {name: same-ns, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
`},
	},
	{
		name: "deny range inside an allowed range", rows: []string{"*: DDDDDD"},
		policies: []string{ccnpHeader + `metadata: {name: ranges}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "1", endPort: 1000, protocol: TCP}]}]
  ingressDeny:
  - toPorts: [{ports: [{port: "80", endPort: 90, protocol: TCP}]}]
`},
		explain: []explainCell{
			{"world", ProtoTCP, 0, false, []string{"default deny"}},
			{"world", ProtoTCP, 1, true, []string{"ports TCP/1-1000"}},
			{"world", ProtoTCP, 79, true, []string{"ports TCP/1-1000"}},
			{"shop/api", ProtoTCP, 80, false, []string{"ports TCP/80-90", "overridden allows:", "ports TCP/1-1000"}},
			{"world", ProtoTCP, 85, false, []string{"ports TCP/80-90"}},
			{"world", ProtoTCP, 90, false, []string{"ports TCP/80-90"}},
			{"world", ProtoTCP, 91, true, []string{"ports TCP/1-1000"}},
			{"world", ProtoTCP, 1000, true, []string{"ports TCP/1-1000"}},
			{"world", ProtoTCP, 1001, false, []string{"default deny"}},
		},
	},
}
