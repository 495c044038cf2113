#!/usr/bin/env bash
# Copying an image's tree out of the mount (issue 13, target 3; what LXC's template does after
# unpack): `cp -a rootfs DEST` from this tool's mount, page cache dropped, against Debian's
# umoci `raw unpack` of the same image and `cp -a` of the tree already extracted. The image: the
# `many` fixture (25,000 small files) plus a gzip layer of eight 48 MB text-like files.
# Medians of RUNS runs, the peers taking turns; `uptime` load at the start and the end, and the
# requests this tool's server served per entry copied (UMOCI_FUSE_COUNTS).
#
# With BASELINE_BIN set (the release directory of another build of this tool, e.g. of an earlier
# commit), that build's mount of the same image takes its turn in the same runs as well.
#
#   [BASELINE_BIN=DIR] scripts/bench-copyout.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup copy

mixed_image
UMOCI_FUSE_COUNTS="$work/counts" "$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/b" >/dev/null
"$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/extracted"
if [ -n "${BASELINE_BIN:-}" ]; then
    "$BASELINE_BIN/umoci" unpack --cache-dir "$work/cache0" --image "$work/L:mixed" "$work/b0" >/dev/null
fi
entries=$(find "$work/extracted" -mindepth 1 | wc -l)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

n=0
# The mount server's CPU time (user + system, clock ticks) so far.
server_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$1/umoci-mount.pid")/stat"; }
# copy_out BUNDLE: seconds of a cold cp -a of its rootfs; its server's CPU seconds go to BUNDLE.cpu.
copy_out() {
    local c0 t
    cold; c0=$(server_ticks "$1")
    t=$(seconds cp -a "$1/rootfs" "$work/out")
    printf '%.2f\n' "$(echo "($(server_ticks "$1") - $c0) / $(getconf CLK_TCK)" | bc -l)" >> "$1.cpu"
    rm -rf "$work/out"
    echo "$t"
}
ours() { copy_out "$work/b"; }
theirs() { n=$((n + 1)); cold; seconds /usr/bin/umoci raw unpack --image "$work/L:mixed" "$work/out$n"; rm -rf "$work/out$n"; }
base() { copy_out "$work/b0"; }
plain() { n=$((n + 1)); cold; seconds cp -a "$work/extracted" "$work/out$n"; rm -rf "$work/out$n"; }
declare -a ta=() tb=() tc=() t0=()
for _ in $(seq "$runs"); do
    [ -n "${BASELINE_BIN:-}" ] && t0+=("$(base)")
    ta+=("$(ours)")
    tb+=("$(theirs)")
    tc+=("$(plain)")
done
a=$(printf '%s\n' "${ta[@]}" | median)
b=$(printf '%s\n' "${tb[@]}" | median)
c=$(printf '%s\n' "${tc[@]}" | median)
printf 'copying the tree out (%s entries), median of %s, cold; load %s -> %s\n' "$entries" "$runs" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-52s %9s %8s   %s\n' "" "seconds" "ours /" "runs"
printf '%-52s %8.3fs %8s   %s\n' "cp -a out of this tool's mount" "$a" "" "${ta[*]}"
printf '%-52s %8.3fs %7.2fx   %s\n' "Debian umoci raw unpack of the image" "$b" "$(echo "$a / $b" | bc -l)" "${tb[*]}"
printf '%-52s %8.3fs %7.2fx   %s\n' "cp -a of the extracted tree" "$c" "$(echo "$a / $c" | bc -l)" "${tc[*]}"
printf '%-52s %8.3fs %8s   %s\n' "  its server's CPU time per copy" "$(median < "$work/b.cpu")" "" "$(tr '\n' ' ' < "$work/b.cpu")"
if [ -n "${BASELINE_BIN:-}" ]; then
    z=$(printf '%s\n' "${t0[@]}" | median)
    printf '%-52s %8.3fs %7.2fx   %s\n' "cp -a out of the mount of BASELINE_BIN" "$z" "$(echo "$a / $z" | bc -l)" "${t0[*]}"
    printf '%-52s %8.3fs %8s   %s\n' "  its server's CPU time per copy" "$(median < "$work/b0.cpu")" "" "$(tr '\n' ' ' < "$work/b0.cpu")"
    "$BASELINE_BIN/umoci" umount "$work/b0" >/dev/null
fi
"$bin/umoci" umount "$work/b" >/dev/null
for _ in $(seq 50); do [ -s "$work/counts" ] && break; sleep 0.1; done
if [ -s "$work/counts" ]; then
    echo "requests this tool's server served per entry copied (all $runs copies):"
    cut -d' ' -f2- "$work/counts" | tr ' ' '\n' | awk -F= -v e="$entries" -v r="$runs" '$2 >= e * r / 20 {printf "  %-12s %8d  %5.2f\n", $1, $2, $2 / e / r}'
fi
