#!/usr/bin/env bash
# Lumen's real-node lab: a Kubernetes control plane plus, per node, a real
# containerd (+runc) and kubelet inside the node's network namespace, and
# Lumen installed by its Helm chart from locally built images (no registry).
# Nothing on the host changes: namespaces lrn-<lab>-*, state under
# /tmp/lumen-rn-<lab>, child cgroups lumen-rn-<lab>-<node> only (v1, and v2
# through a cgroup2 mounted under the state dir), no host
# sysctls (kubelet's are masked in its own mount namespace).
#
#   hack/realnode.sh up     [LAB=name NODES=2]   control plane, nodes, Lumen
#   hack/realnode.sh down   [LAB=name]           removes all of it
#   hack/realnode.sh kubectl ARGS...             kubectl against the lab
#   hack/realnode.sh helm ARGS...                helm against the lab
#
# Needs: hack/build-k8s.sh (control plane, kubelet, kube-scheduler, agnhost),
# hack/build-helm.sh, make image, apt containerd/runc/containernetworking-plugins.
# Labs serialize on /tmp/lumen-realnode.lock: containerd 1.6 uses fixed paths
# (/run/containerd/{s,fifo,runc}, /var/lib/cni/results) whatever its root is.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
lab=${LAB:-rn}
[[ $lab =~ ^[a-z0-9]{1,8}$ ]] || { echo "realnode: LAB: invalid value \"$lab\": want 1-8 of [a-z0-9]" >&2; exit 2; }
nnodes=${NODES:-2}
[[ $nnodes =~ ^[1-9]$ ]] || { echo "realnode: NODES: invalid value \"$nnodes\": want 1-9" >&2; exit 2; }
D=/tmp/lumen-rn-$lab
P=lrn-$lab            # netns prefix
api=10.77.0.1
KBIN=${KBIN:-$(./hack/build-k8s.sh --bin-dir)}
HELM=${HELM:-$(./hack/build-helm.sh 2>/dev/null || true)}
IMAGES=${IMAGES:-$src/bin/images}
lock=/tmp/lumen-realnode.lock
nodes=()
for i in $(seq "$nnodes"); do nodes+=("n$i"); done

log() { echo "realnode[$lab]: $*" >&2; }
kubectl() { nsenter --net=/run/netns/$P-ul "$KBIN/kubectl" --kubeconfig=$D/cp/admin.kubeconfig "$@"; }
helm() { nsenter --net=/run/netns/$P-ul "$HELM" --kubeconfig=$D/cp/admin.kubeconfig "$@"; }

# run NAME NETNS CMD...: a daemon with its log and pid under $D; with CG
# set, in that cgroup2 directory (it and all it starts).
run() {
	local name=$1 ns=$2; shift 2
	if [[ -n ${CG:-} ]]; then
		set -- sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@"
	fi
	setsid nsenter --net=/run/netns/$ns "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$D/pids/$name"
}

stop() { # pidfile [seconds]
	[[ -f $1 ]] || return 0
	local p; p=$(cat "$1")
	if kill -0 "$p" 2>/dev/null; then
		kill "$p" 2>/dev/null
		for _ in $(seq $((${2:-15} * 5))); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
		kill -0 "$p" 2>/dev/null && kill -9 "$p"
	fi
	rm -f "$1"
}

wait_for() { # seconds what cmd...
	local n=$1 what=$2; shift 2
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
	log "timed out after ${n}s waiting for $what"; return 1
}

take_lock() {
	mkdir -p "$D"
	# held by a sleeper until down; fails after LOCK_WAIT seconds
	rm -f "$D/lock.pid"
	setsid flock "$lock" -c "echo \$\$ > $D/lock.pid; exec sleep 86400" </dev/null >/dev/null 2>&1 &
	local w=$!
	for _ in $(seq "${LOCK_WAIT:-1800}"); do
		[[ -s $D/lock.pid ]] && return 0
		kill -0 $w 2>/dev/null || break
		sleep 1
	done
	kill $w 2>/dev/null; log "$lock not acquired (another real-node lab runs)"; return 1
}

netns_up() {
	ip netns add $P-ul
	ip -n $P-ul link set lo up
	ip -n $P-ul link add br0 type bridge
	ip -n $P-ul addr add $api/24 dev br0
	ip -n $P-ul link set br0 up
	for n in "${nodes[@]}"; do
		local i=${n#n} ns=$P-$n
		ip netns add $ns
		ip -n $ns link set lo up
		ip -n $P-ul link add v-$n type veth peer name eth0 netns $ns
		ip -n $P-ul link set v-$n master br0 up
		ip -n $ns addr add 10.77.0.1$i/24 dev eth0
		ip -n $ns link set eth0 up
		ip -n $ns route add default via $api
		# the node routes its pods (its own namespace's sysctl, not the host's)
		nsenter --net=/run/netns/$ns sysctl -qw net.ipv4.ip_forward=1
	done
}

pki() {
	local p=$D/cp/pki; mkdir -p $p; cd $p
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 7 -subj /CN=lumen-rn-ca 2>/dev/null
	openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	cert() { # name subject eku [san]
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $1.key -out $1.csr -subj "$2" 2>/dev/null
		{ echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"; echo "extendedKeyUsage=$3"; [[ -n ${4:-} ]] && echo "subjectAltName=$4"; } >$1.ext
		openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $1.crt -days 7 -extfile $1.ext 2>/dev/null
	}
	cert apiserver /CN=kube-apiserver serverAuth "IP:$api,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert admin "/O=system:masters/CN=lumen-rn-admin" clientAuth
	cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
	cert kcm /CN=system:kube-controller-manager clientAuth
	cert sched /CN=system:kube-scheduler clientAuth
	for n in "${nodes[@]}"; do cert node-$n "/O=system:nodes/CN=system:node:$n" clientAuth; done
	kc() {
		cat >$D/cp/$1.kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://$api:6443", certificate-authority-data: $(base64 -w0 ca.crt)}}]
users: [{name: u, user: {client-certificate-data: $(base64 -w0 $1.crt), client-key-data: $(base64 -w0 $1.key)}}]
contexts: [{name: lab, context: {cluster: lab, user: u}}]
current-context: lab
KC
	}
	for c in admin kcm sched; do kc $c; done
	for n in "${nodes[@]}"; do kc node-$n; done
	cd "$src"
}

controlplane_up() {
	local p=$D/cp/pki
	run etcd $P-ul "$KBIN/etcd" --name=lab --data-dir=$D/cp/etcd --listen-client-urls=http://127.0.0.1:2379 \
		--advertise-client-urls=http://127.0.0.1:2379 --listen-peer-urls=http://127.0.0.1:2380 \
		--initial-advertise-peer-urls=http://127.0.0.1:2380 --initial-cluster=lab=http://127.0.0.1:2380 \
		--unsafe-no-fsync=true --log-level=warn
	run kube-apiserver $P-ul "$KBIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=$api --secure-port=6443 \
		--advertise-address=$api --cert-dir=$D/cp/apiserver --tls-cert-file=$p/apiserver.crt --tls-private-key-file=$p/apiserver.key \
		--client-ca-file=$p/ca.crt --authorization-mode=Node,RBAC --allow-privileged=true \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-key-file=$p/sa.pub \
		--service-account-signing-key-file=$p/sa.key --service-cluster-ip-range=10.96.0.0/16 \
		--kubelet-client-certificate=$p/apiserver-kubelet.crt --kubelet-client-key=$p/apiserver-kubelet.key \
		--kubelet-preferred-address-types=InternalIP --profiling=false
	wait_for 180 "kube-apiserver /readyz" kubectl get --raw /readyz
	run kube-controller-manager $P-ul "$KBIN/kube-controller-manager" --kubeconfig=$D/cp/kcm.kubeconfig \
		--authentication-kubeconfig=$D/cp/kcm.kubeconfig --authorization-kubeconfig=$D/cp/kcm.kubeconfig \
		--bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false --use-service-account-credentials=true \
		--root-ca-file=$p/ca.crt --service-account-private-key-file=$p/sa.key \
		--cluster-signing-cert-file=$p/ca.crt --cluster-signing-key-file=$p/ca.key --service-cluster-ip-range=10.96.0.0/16
	run kube-scheduler $P-ul "$KBIN/kube-scheduler" --kubeconfig=$D/cp/sched.kubeconfig --authentication-kubeconfig=$D/cp/sched.kubeconfig \
		--authorization-kubeconfig=$D/cp/sched.kubeconfig --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
	wait_for 180 "the default ServiceAccount" kubectl -n default get sa default
}

containerd_up() { # node
	local n=$1 d=$D/nodes/$1
	mkdir -p $d/containerd $d/runc $d/opt/cni/bin $d/etc/cni/net.d $d/var/run/lumen
	# containerd needs the loopback plugin next to lumen-cni
	ln -sf /usr/lib/cni/loopback $d/opt/cni/bin/loopback
	cat >$d/containerd/config.toml <<TOML
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.1"
  # root here lacks CAP_SYS_RESOURCE: kubelet's oom_score_adj -998 fails in runc
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$d/opt/cni/bin"
    conf_dir = "$d/etc/cni/net.d"
TOML
	CG=$D/cgroup2/lumen-rn-$lab-$n run containerd-$n $P-$n containerd --config $d/containerd/config.toml
	wait_for 30 "containerd on $n" test -S $d/containerd.sock
	for t in "$IMAGES"/*.tar; do
		ctr -a $d/containerd.sock -n k8s.io images import "$t" >/dev/null
	done
}

kubelet_up() { # node
	local n=$1 i=${1#n} d=$D/nodes/$1
	mkdir -p $d/kubelet $d/pod-logs $d/varlog/containers $d/varlib $d/sysctl
	# cgroup v1 (hybrid host): kubelet needs its cgroup root in every hierarchy; children only
	for h in /sys/fs/cgroup/*/; do mkdir -p $h/lumen-rn-$lab-$n; done
	if [[ -d /sys/fs/cgroup/cpuset/lumen-rn-$lab-$n ]]; then
		cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/lumen-rn-$lab-$n/cpuset.cpus
		cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/lumen-rn-$lab-$n/cpuset.mems
	fi
	# kubelet's root dir: its own shared mount, so volume mounts reach containerd
	mount --bind $d/kubelet $d/kubelet
	mount --make-rshared $d/kubelet
	echo 1 >$d/sysctl/vm.overcommit_memory; echo 10 >$d/sysctl/kernel.panic; echo 1 >$d/sysctl/kernel.panic_on_oops
	echo "nameserver 10.96.0.10" >$d/resolv.conf
	cat >$d/kubelet.yaml <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /lumen-rn-$lab-$n
containerRuntimeEndpoint: unix://$d/containerd.sock
address: 10.77.0.1$i
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/cp/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
resolvConf: $d/resolv.conf
makeIPTablesUtilChains: false
protectKernelDefaults: true
failSwapOn: false
podLogsDir: $d/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
Y
	# own mount namespace: the sysctls kubelet insists on are masked (host
	# values untouched), /var/log and /var/lib are per node
	CG=$D/cgroup2/lumen-rn-$lab-$n run kubelet-$n $P-$n unshare -m --propagation unchanged sh -c "
		mount --bind $d/sysctl/vm.overcommit_memory /proc/sys/vm/overcommit_memory &&
		mount --bind $d/sysctl/kernel.panic /proc/sys/kernel/panic &&
		mount --bind $d/sysctl/kernel.panic_on_oops /proc/sys/kernel/panic_on_oops &&
		mount --bind $d/varlog /var/log &&
		mount --bind $d/varlib /var/lib &&
		exec $KBIN/kubelet --config=$d/kubelet.yaml --kubeconfig=$D/cp/node-$n.kubeconfig \
			--root-dir=$d/kubelet --cert-dir=$d/kubelet/pki --hostname-override=$n --node-ip=10.77.0.1$i --v=${V:-1}"
}

lumen_up() {
	helm upgrade --install lumen "$src/deploy/helm/lumen" -n kube-system --wait --timeout 10m \
		--set k8sServiceHost=$api,k8sServicePort=6443,devices=eth0,image.pullPolicy=Never \
		--set image.tag=${LUMEN_TAG:-dev},perNodeHostPaths.hostPathBase=$D/nodes \
		--set "ipam.operator.clusterPoolIPv4PodCIDRList={10.244.0.0/16}" \
		--set socketLB.enabled=true,socketLB.hostNamespaceOnly=true,cgroup.hostRoot=$D/cgroup-nodes ${HELM_ARGS:-}
}

# Native routing: the underlay routes each node's pod CIDR to the node (Lumen
# does not masquerade pods), so pods reach the control plane (the API server
# through the kubernetes Service, as CoreDNS does) and back.
underlay_routes() {
	local n cidr
	for n in "${nodes[@]}"; do
		wait_for 120 "$n's pod CIDR" sh -c "nsenter --net=/run/netns/$P-ul $KBIN/kubectl --kubeconfig=$D/cp/admin.kubeconfig get ciliumnode $n -o jsonpath='{.spec.ipam.podCIDRs[0]}' | grep -q /"
		cidr=$(kubectl get ciliumnode $n -o jsonpath='{.spec.ipam.podCIDRs[0]}')
		ip -n $P-ul route replace "$cidr" via 10.77.0.1${n#n}
	done
}

# cluster DNS: CoreDNS as kube-dns at the kubelets' clusterDNS, when make
# image made its image (hack/build-coredns.sh)
dns_up() {
	[[ -f $IMAGES/coredns.tar ]] || { log "no $IMAGES/coredns.tar: no cluster DNS (hack/build-coredns.sh; make image)"; return 0; }
	log "CoreDNS as kube-dns (10.96.0.10)"
	kubectl apply -f "$src/deploy/addons/coredns.yaml" >/dev/null
	kubectl -n kube-system rollout status deploy/coredns --timeout=300s
}

up() {
	for b in etcd kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler; do
		[[ -x $KBIN/$b ]] || { log "$KBIN/$b missing: run hack/build-k8s.sh"; exit 1; }
	done
	[[ -x $HELM ]] || { log "helm missing: run hack/build-helm.sh"; exit 1; }
	[[ -f $IMAGES/lumen.tar && -f $IMAGES/pause.tar ]] || { log "$IMAGES/lumen.tar missing: run make image"; exit 1; }
	command -v containerd >/dev/null && [[ -x /usr/lib/cni/loopback ]] || { log "containerd or the CNI plugins missing: run hack/install-deps.sh"; exit 1; }
	[[ -e $D/pids ]] && { log "$D exists: hack/realnode.sh down first"; exit 1; }
	take_lock
	mkdir -p $D/logs $D/pids $D/nodes
	# the agents' host paths (state with bpffs, CNI dirs) and kubelets' root
	# dirs live under $D/nodes/<node>: one shared mount, made before the
	# kubelets' own, for the Bidirectional propagation
	mount --bind $D/nodes $D/nodes
	mount --make-rshared $D/nodes
	# Socket load balancing for each node's host namespace (kubelet probes,
	# hostNetwork pods to ClusterIPs, as Cilium's socketLB): a node's
	# containerd and kubelet live in its v2 cgroup lumen-rn-<lab>-<node>
	# (runc puts the pods under it too, the kubelet's cgroupRoot), where its
	# agent attaches (the chart mounts cgroup-nodes/<node>); the root is not touched
	mkdir -p $D/cgroup2
	mount -t cgroup2 lumen-rn-$lab $D/cgroup2
	for n in "${nodes[@]}"; do
		mkdir -p $D/cgroup2/lumen-rn-$lab-$n $D/cgroup-nodes/$n
		mount --bind $D/cgroup2/lumen-rn-$lab-$n $D/cgroup-nodes/$n
	done
	# containerd 1.6 puts pod namespaces in /run/netns/cni-*: those that
	# appear while this lab holds the lock are its own (removed by down)
	ls /run/netns 2>/dev/null | grep '^cni-' >$D/netns-before || true
	ls /run/containerd/s 2>/dev/null >$D/shim-sockets-before || true
	trap 'log "up failed: logs in $D/logs; hack/realnode.sh down removes it"' ERR
	log "network namespaces"; netns_up
	log "control plane on https://$api:6443"; pki; controlplane_up
	for n in "${nodes[@]}"; do log "containerd and kubelet on $n"; containerd_up $n; kubelet_up $n; done
	wait_for 120 "nodes registered" sh -c "[ \$(nsenter --net=/run/netns/$P-ul $KBIN/kubectl --kubeconfig=$D/cp/admin.kubeconfig get nodes --no-headers | wc -l) = ${#nodes[@]} ]"
	log "Lumen by its Helm chart"; lumen_up
	wait_for 180 "nodes Ready" kubectl wait --for=condition=Ready nodes --all --timeout=5s
	underlay_routes
	dns_up
	kubectl get nodes -o wide
	kubectl -n kube-system get pods -o wide
}

down() {
	[[ -d $D ]] || { log "nothing to remove"; return 0; }
	# workloads first, while the agents still answer CNI DEL (the agent and
	# operator pods use the host network: no CNI)
	if [[ -f $D/pids/kube-apiserver ]] && kill -0 "$(cat $D/pids/kube-apiserver)" 2>/dev/null; then
		local k="nsenter --net=/run/netns/$P-ul $KBIN/kubectl --kubeconfig=$D/cp/admin.kubeconfig"
		for ns in $($k get ns -o name 2>/dev/null | sed 's|namespace/||'); do
			case $ns in kube-system|kube-public|kube-node-lease) continue ;; esac
			timeout 60 $k -n $ns delete deploy,sts,ds,rs,job --all --wait=true >/dev/null 2>&1 || true
		done
		timeout 120 $k delete pods -A --field-selector=spec.hostNetwork=false --wait=true >/dev/null 2>&1 || true
	fi
	for f in $D/pids/kubelet-*; do stop $f; done
	for f in $D/pids/containerd-*; do stop $f; done
	# our containerds' shims (found by their socket address, never by name alone)
	for d in $D/nodes/*/; do
		for p in $(pgrep -f -- "-address ${d%/}/containerd.sock" || true); do kill -9 $p 2>/dev/null || true; done
	done
	for c in kube-scheduler kube-controller-manager; do stop $D/pids/$c; done
	stop $D/pids/kube-apiserver 60; stop $D/pids/etcd
	# processes left in our node namespaces (agents, operator, pods): by netns, never by name
	for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
		for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
	done
	# containers left by the killed shims: whatever runs in the nodes' cgroups is ours
	for _ in 1 2 3; do
		for f in $(find /sys/fs/cgroup/*/lumen-rn-$lab-* -name cgroup.procs 2>/dev/null); do
			for p in $(cat $f 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
		done
		sleep 0.5
	done
	# the nodes' cgroup2 children: whatever is left there is ours (before
	# the mounts go: the cgroup2 mount is how they are reached)
	for c in $D/cgroup2/lumen-rn-$lab-*; do
		[[ -d $c ]] || continue
		for _ in 1 2 3; do
			for f in $(find $c -name cgroup.procs); do
				for p in $(cat $f 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
			done
			sleep 0.5
		done
		umount $D/cgroup-nodes/${c##*-} 2>/dev/null || true
		find $c -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
	# mounts under $D (kubelet dirs, volumes, bpffs, shared state), deepest first
	for _ in 1 2 3 4 5; do
		ms=$(awk -v d="$D" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
		[[ -z $ms ]] && break
		for m in $ms; do umount $m 2>/dev/null || umount -l $m 2>/dev/null || true; done
	done
	for h in /sys/fs/cgroup/*/; do
		for c in $h/lumen-rn-$lab-*; do [[ -d $c ]] && find $c -depth -type d -exec rmdir {} \; 2>/dev/null; done
	done
	for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del $ns; done
	# containerd 1.6's fixed paths: our pods' namespaces, then the dirs when empty
	for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
		grep -qx "$ns" $D/netns-before 2>/dev/null && continue
		umount /run/netns/$ns 2>/dev/null; rm -f /run/netns/$ns
	done
	# and the sockets of our killed shims
	for f in $(ls /run/containerd/s 2>/dev/null); do
		grep -qx "$f" $D/shim-sockets-before 2>/dev/null || rm -f /run/containerd/s/$f
	done
	rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd/fifo /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true
	stop $D/lock.pid 1
	rm -rf $D
	log "removed"
}

case ${1:-} in
up) up ;;
down) down ;;
kubectl) shift; kubectl "$@" ;;
helm) shift; helm "$@" ;;
*) echo "usage: hack/realnode.sh up|down|kubectl ARGS|helm ARGS" >&2; exit 2 ;;
esac
