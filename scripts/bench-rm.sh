#!/usr/bin/env bash
# rm -rf through the mount (issue 13, target 4; issue 10, "rm -rf of a mounted bundle within 2x
# of rm -rf of an extracted one"), on the `many` fixture image (25,000 entries), release build:
#  - deleting the image's content through the mount, against fuse-overlayfs and kernel
#    overlayfs over the same tree extracted;
#  - deleting a whole bundle: a mounted one against an extracted one (`unpack --extract`).
# Page cache dropped before each run; medians of RUNS runs.
#
#   scripts/bench-rm.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup rm

python3 scripts/fixtures/make_image.py "$work/L" many >/dev/null
"$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$work/L:many" "$work/lower" >/dev/null

n=0
ours_content() {
    n=$((n + 1)); local b="$work/b$n"
    "$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:many" "$b" >/dev/null
    cold; seconds rm -rf "$b/rootfs/many"
    "$bin/umoci" umount "$b" >/dev/null 2>&1 || true; rm -rf "$b"
}
overlay_content() {  # fuse-overlayfs | overlay
    n=$((n + 1)); local d="$work/o$n"
    mkdir -p "$d/u" "$d/w" "$d/m"
    if [ "$1" = overlay ]; then
        mount -t overlay overlay -o "lowerdir=$work/lower,upperdir=$d/u,workdir=$d/w" "$d/m"
    else
        fuse-overlayfs -o "lowerdir=$work/lower,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null
    fi
    cold; seconds rm -rf "$d/m/many"
    umount "$d/m"; rm -rf "$d"
}
bundle() {  # mount | extract
    n=$((n + 1)); local b="$work/bundle$n"
    if [ "$1" = extract ]; then
        "$bin/umoci" unpack --extract --cache-dir "$work/cache" --image "$work/L:many" "$b" >/dev/null
    else
        "$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:many" "$b" >/dev/null
    fi
    cold; seconds rm -rf "$b"
}
measure() { local -a t=(); for _ in $(seq "$runs"); do t+=("$("$@")"); done; printf '%s\n' "${t[@]}" | median; }

ours=$(measure ours_content)
fuse=$(measure overlay_content fuse-overlayfs)
kernel=$(measure overlay_content overlay)
mounted=$(measure bundle mount)
extracted=$(measure bundle extract)

printf '%-52s %9s %8s\n' "rm -rf, 25,000 entries (median of $runs, cold)" "seconds" "ratio"
printf '%-52s %8.3fs %7.2fx\n' "image content through this tool's mount" "$ours" 1
printf '%-52s %8.3fs %7.2fx\n' "the same through fuse-overlayfs" "$fuse" "$(echo "$fuse / $ours" | bc -l)"
printf '%-52s %8.3fs %7.2fx\n' "the same through kernel overlayfs (the limit)" "$kernel" "$(echo "$kernel / $ours" | bc -l)"
printf '%-52s %8.2fx\n' "this tool's mount / kernel overlayfs" "$(echo "$ours / $kernel" | bc -l)"
printf '%-52s %8.3fs %7.2fx\n' "a whole mounted bundle" "$mounted" 1
printf '%-52s %8.3fs %7.2fx\n' "a whole extracted bundle" "$extracted" "$(echo "$extracted / $mounted" | bc -l)"
