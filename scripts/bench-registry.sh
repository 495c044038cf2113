#!/bin/bash
# Cold unpack straight from a registry against `skopeo copy` alone and `skopeo copy` + Debian's
# umoci unpack (issue 18), side by side in one run: Debian's docker-registry in a network
# namespace this script creates, its veth capped with `tc qdisc tbf` (this kernel has no netem),
# at 400 Mbit/s and uncapped; medians of 3, page cache dropped and caches empty before each run.
# UNRUN DRAFT: written at the end of a session, not run yet.
#   usage: scripts/bench-registry.sh [OCI-LAYOUT:TAG]   (default bench-work/debian:bench)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-/work/main/bench-work/debian:bench}
export PATH=/opt/swift/usr/bin:$PATH
(cd "$here" && swift build -c release --product umoci >/dev/null)
ours=$here/.build/release/umoci
work=$(mktemp -d /tmp/bench-registry.XXXXXX)
ns=umoci-bench-$$
cleanup() {
    for b in "$work"/b-*; do [ -d "$b" ] && "$ours" umount "$b" 2>/dev/null || true; done
    [ -n "${regpid:-}" ] && kill "$regpid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "veth-$$" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "veth-$$" type veth peer name vreg
ip link set vreg netns "$ns"
ip addr add 10.231.0.1/24 dev "veth-$$"; ip link set "veth-$$" up
ip netns exec "$ns" ip addr add 10.231.0.2/24 dev vreg
ip netns exec "$ns" ip link set vreg up; ip netns exec "$ns" ip link set lo up
cat >"$work/config.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 10.231.0.2:5000}
YML
ip netns exec "$ns" /usr/bin/docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
regpid=$!
for _ in $(seq 50); do curl -sf http://10.231.0.2:5000/v2/ >/dev/null && break; sleep 0.2; done
skopeo copy --quiet --dest-tls-verify=false "oci:$image" docker://10.231.0.2:5000/bench/img:v1
ref=docker://10.231.0.2:5000/bench/img:v1

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
run_skopeo() { rm -rf "$work/copy"; cold; t skopeo copy --quiet --src-tls-verify=false "$ref" "oci:$work/copy:v1"; }
run_both() {
    rm -rf "$work/copy" "$work/debian-bundle"; cold
    t bash -c "skopeo copy --quiet --src-tls-verify=false $ref oci:$work/copy:v1 && /usr/bin/umoci unpack --image $work/copy:v1 $work/debian-bundle"
}
run_ours() {
    local b="$work/b-$RANDOM"; rm -rf "$work/cache"; cold
    t "$ours" unpack --tls-verify=false --cache-dir "$work/cache" --image "$ref" "$b"
    "$ours" umount "$b" >/dev/null 2>&1 || true
}
for cap in 400mbit none; do
    tc qdisc del dev "veth-$$" root 2>/dev/null || true
    [ "$cap" != none ] && tc qdisc add dev "veth-$$" root tbf rate "$cap" burst 256kb latency 50ms
    a=(); b=(); c=()
    for _ in 1 2 3; do a+=("$(run_skopeo)"); b+=("$(run_both)"); c+=("$(run_ours)"); done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}"); mc=$(median "${c[@]}")
    printf 'cap %-8s skopeo copy %6.2f s   copy + Debian umoci unpack %6.2f s (%.2fx)   cold unpack --image docker:// %6.2f s (%.2fx)\n' \
        "$cap" "$ma" "$mb" "$(echo "$mb / $ma" | bc -l)" "$mc" "$(echo "$mc / $ma" | bc -l)"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
