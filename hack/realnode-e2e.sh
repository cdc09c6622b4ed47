#!/usr/bin/env bash
# Runs Kubernetes' own e2e tests (e2e.test from hack/build-k8s.sh --e2e)
# against a real-node lab (hack/realnode.sh up) from the control plane's
# namespace, and prints pass/fail per test and per suite.
#   LAB=name hack/realnode-e2e.sh 'FOCUS REGEXP' ['SKIP REGEXP'] [-- extra e2e.test flags]
# e.g. hack/realnode-e2e.sh '\[sig-network\] Netpol.*default-deny'   (NetworkPolicy tests: "Netpol")
# The images e2e.test asks for (registry.k8s.io/e2e-test-images/agnhost and
# glibc-dns-testing) are loaded on the nodes by the lab, with the programs the
# tests exec there (make image adds the host's sh, nc, dig, curl, wget, ...);
# CoreDNS serves cluster.local. The default skip leaves out slow, serial and
# disruptive tests, IPv6 (the lab is IPv4), SCTP and cloud load balancers.
# Results: docs/conformance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
lab=${LAB:-rn}
D=/tmp/lumen-rn-$lab
KBIN=${KBIN:-$(./hack/build-k8s.sh --bin-dir)}
focus=${1:?focus regexp}
skip=${2:-'\[Slow\]|\[Serial\]|\[Disruptive\]|\[Flaky\]|IPv6|SCTP|LoadBalancer|ESIPP|\[Provider:|GCE|\[Feature:(SCTP|IPv6|Dual|Windows|ServiceCIDRs|ProxyTerminatingEndpoints)'}
shift $(($# >= 2 ? 2 : 1))
[[ ${1:-} == -- ]] && shift
[[ -x $KBIN/e2e.test ]] || { echo "realnode-e2e: $KBIN/e2e.test missing: hack/build-k8s.sh --e2e" >&2; exit 1; }
[[ -f $D/cp/admin.kubeconfig ]] || { echo "realnode-e2e: no lab $lab: LAB=$lab hack/realnode.sh up" >&2; exit 1; }
out=${E2E_OUT:-$D/e2e-$(date +%s)}
mkdir -p "$out"
set +e
nsenter --net=/run/netns/lrn-$lab-ul "$KBIN/e2e.test" --kubeconfig=$D/cp/admin.kubeconfig --provider=skeleton \
	--ginkgo.focus="$focus" --ginkgo.skip="$skip" --ginkgo.no-color --ginkgo.timeout=${E2E_TIMEOUT:-40m} \
	--ginkgo.junit-report="$out/junit.xml" --report-dir="$out" --e2e-verify-service-account=false \
	--allowed-not-ready-nodes=0 --node-os-distro=debian "$@" >"$out/e2e.log" 2>&1
rc=$?
set -e
# per test: passed / FAILED / skipped
python3 - "$out/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print("no junit report:", e); sys.exit(0)
n = {"passed": 0, "failed": 0, "skipped": 0}
for tc in root.iter("testcase"):
    if not (tc.get("name") or "").startswith("[It]"):
        continue  # suite setup and reports
    st = "skipped" if tc.find("skipped") is not None else "failed" if tc.find("failure") is not None or tc.find("error") is not None else "passed"
    n[st] += 1
    if st != "skipped":
        f = tc.find("failure")
        why = "" if f is None else "  (" + (f.get("message") or "").splitlines()[0][:160] + ")"
        print(f"{st.upper():7} {tc.get('name')[5:]}{why}")
print(f"total: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
PY
echo "log: $out/e2e.log"
exit $rc
