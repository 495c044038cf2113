#!/usr/bin/env bash
# Repack on a busy machine (issue 13, target 6): a one-file repack of a mounted bundle, on an
# idle machine and while another process writes a large file elsewhere on the same disk.
# repack flushes only the mount (syncfs(2)); the peer in the same run is the same repack
# preceded by sync(2), which is what it did before and which waits for every dirty page on
# the machine. Medians of RUNS runs each.
#
#   scripts/bench-repack-busy.sh [RUNS] [WRITE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
write_mb=${2:-860}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /var/tmp/umoci-bench-busy.XXXXXX)
writer=""
cleanup() {
    [ -n "$writer" ] && kill "$writer" 2>/dev/null || true
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

python3 scripts/fixtures/make_image.py "$work/L" busybox >/dev/null
"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:busybox" "$work/bundle" >/dev/null

n=0
repack() {  # the repack of a one-file change, as timed
    n=$((n + 1))
    echo "change $n" > "$work/bundle/rootfs/etc/motd"
    "$bin/umoci" repack --image "$work/L:r$n" "$work/bundle"
}
repack_after_sync() { sync; repack; }

# A writer that keeps the page cache dirty: WRITE_MB at a time, over and over.
start_writer() {
    ( while true; do dd if=/dev/zero of="$work/ballast" bs=1M count="$write_mb" status=none; rm -f "$work/ballast"; done ) &
    writer=$!
    sleep 2
}
stop_writer() { kill "$writer" 2>/dev/null || true; wait "$writer" 2>/dev/null || true; writer=""; rm -f "$work/ballast"; sync; }

measure() {  # label function
    local -a t=()
    for _ in $(seq "$runs"); do t+=("$(seconds "$2")"); done
    printf '%s\n' "${t[@]}" | median
}

idle=$(measure idle repack)
idle_sync=$(measure idle repack_after_sync)
start_writer
busy=$(measure busy repack)
busy_sync=$(measure busy repack_after_sync)
stop_writer

printf '%-44s %10s %14s %8s\n' "one-file repack of a mounted bundle" "syncfs" "sync (before)" "ratio"
printf '%-44s %9.3fs %13.3fs %7.1fx\n' "idle machine" "$idle" "$idle_sync" "$(echo "$idle_sync / $idle" | bc -l)"
printf '%-44s %9.3fs %13.3fs %7.1fx\n' "another process writing ${write_mb} MB at a time" "$busy" "$busy_sync" "$(echo "$busy_sync / $busy" | bc -l)"
printf '%-44s %9.2fx %13.2fx\n' "busy / idle" "$(echo "$busy / $idle" | bc -l)" "$(echo "$busy_sync / $idle_sync" | bc -l)"
