#!/usr/bin/env bash
# Repack on a busy machine (issue 13, target 6): a one-file repack of a mounted bundle, on an
# idle machine and while another process writes a large file elsewhere on the same disk.
# repack flushes only the mount (syncfs(2)); the peer in the same run is the same repack
# preceded by sync(2), which is what it did before and which waits for every dirty page on
# the machine. Medians of RUNS runs each.
#
#   scripts/bench-repack-busy.sh [RUNS] [WRITE_MB]
set -euo pipefail
runs=${1:-5}
write_mb=${2:-860}
source "$(dirname "$0")/lib/bench.sh"
bench_setup busy
writer=""
bench_before_cleanup() { if [ -n "$writer" ]; then kill "$writer" 2>/dev/null || true; fi; }

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
